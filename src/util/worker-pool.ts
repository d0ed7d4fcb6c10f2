/**
 * A fixed set of worker threads running the one worker entry point (src/worker.ts), with
 * request/reply calls. A request names its job ("checkpoint", "restore", "check", "store", "seal",
 * "wal") and what to do; the entry point hands it to that job, which lives in the folder it
 * belongs to. A failed call comes back as the CairnError the job threw, code and hint kept.
 */
import { CairnError, deserializeError, type SerializedError } from "../errors.ts";
import { workerUrl } from "./worker-url.ts";

export interface JobRequest {
  job: string;
  op: string;
}

export type WorkerReply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: SerializedError };

/** A job's result with buffers to move to the caller instead of copying them. */
export class Transfer<T> {
  constructor(
    readonly value: T,
    readonly buffers: ArrayBuffer[],
  ) {}
}

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

export class WorkerPool {
  private readonly workers: { worker: Worker; pending: Map<number, Pending> }[] = [];
  private nextId = 1;
  private dead?: CairnError;

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(workerUrl("worker"));
      const pending = new Map<number, Pending>();
      worker.onmessage = (e: MessageEvent<WorkerReply>) => {
        const p = pending.get(e.data.id);
        if (!p) return;
        pending.delete(e.data.id);
        if (e.data.ok) p.resolve(e.data.result);
        else p.reject(deserializeError(e.data.error));
      };
      worker.onerror = (e) => this.fail(new CairnError("E_WORKER", `a worker thread failed: ${e.message}`));
      this.workers.push({ worker, pending });
    }
  }

  /** False once terminated or a worker failed. */
  get alive(): boolean {
    return this.dead === undefined;
  }

  call<T, M extends JobRequest = JobRequest>(i: number, msg: M, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const w = this.workers[i]!;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      w.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  all<T, M extends JobRequest = JobRequest>(msg: M): Promise<T[]> {
    return Promise.all(this.workers.map((_, i) => this.call<T>(i, msg)));
  }

  private fail(err: CairnError): void {
    this.dead ??= err;
    for (const w of this.workers) {
      for (const p of w.pending.values()) p.reject(err);
      w.pending.clear();
    }
  }

  /** Stop every worker at once; pending calls fail with `reason`. */
  terminate(reason: CairnError): void {
    this.fail(reason);
    for (const w of this.workers) w.worker.terminate();
  }
}
