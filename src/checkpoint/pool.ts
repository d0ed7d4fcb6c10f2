/** A fixed set of checkpoint workers with request/reply calls. */
import { CairnError } from "../errors.ts";
import { workerUrl } from "../util/worker-url.ts";
import type { WorkerReply, WorkerRequest } from "./protocol.ts";

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

// distributes Omit over the union, so each request keeps its own fields
type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, "id"> : never) : never;

export class WorkerPool {
  private readonly workers: { worker: Worker; pending: Map<number, Pending> }[] = [];
  private nextId = 1;
  private dead?: CairnError;

  constructor(readonly size: number) {
    for (let i = 0; i < size; i++) {
      const worker = new Worker(workerUrl("checkpoint/checkpoint-worker"));
      const pending = new Map<number, Pending>();
      worker.onmessage = (e: MessageEvent<WorkerReply>) => {
        const p = pending.get(e.data.id);
        if (!p) return;
        pending.delete(e.data.id);
        if (e.data.ok) p.resolve(e.data.result);
        else p.reject(new CairnError(e.data.code?.startsWith("E_") ? e.data.code : "E_CHECKPOINT", e.data.error));
      };
      worker.onerror = (e) => this.fail(new CairnError("E_WORKER", `checkpoint worker failed: ${e.message}`));
      this.workers.push({ worker, pending });
    }
  }

  /** False once terminated or a worker failed. */
  get alive(): boolean {
    return this.dead === undefined;
  }

  call<T>(i: number, msg: Request, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const w = this.workers[i]!;
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      w.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      w.worker.postMessage({ ...msg, id }, transfer);
    });
  }

  all<T>(msg: Request): Promise<T[]> {
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
  terminate(reason = new CairnError("E_CANCELLED", "checkpoint cancelled")): void {
    this.fail(reason);
    for (const w of this.workers) w.worker.terminate();
  }
}
