/**
 * The one worker entry point: every worker thread (util/worker-pool.ts) runs this file, and it
 * hands each request to its job, which lives in the folder it belongs to: a checkpoint's range
 * job (checkpoint/), a restore's range job and SQLite's check of a restored image (restore/),
 * a store's own work (store/: digest tables, block lists, garbage collection, sealing a
 * checkpoint's blocks beside the worker that found them), and the node's
 * WAL fold (engine/). A job's module is loaded the first time the thread is asked for it, so a
 * thread that only folds the WAL never loads the checkpoint code. Replies carry the result, or
 * the error with its code and hint.
 */
import type { CheckpointJob } from "./checkpoint/jobs.ts";
import type { WalJob } from "./engine/wal-job.ts";
import { serializeError } from "./errors.ts";
import type { CheckJob } from "./restore/check-job.ts";
import type { RestoreJob } from "./restore/jobs.ts";
import type { StoreJob } from "./store/jobs.ts";
import type { SealJob } from "./store/sealer.ts";
import { Transfer, type WorkerReply } from "./util/worker-pool.ts";

declare const self: Worker;

type Request = (CheckpointJob | RestoreJob | CheckJob | StoreJob | SealJob | WalJob) & { id: number };

async function run(msg: Request): Promise<unknown> {
  switch (msg.job) {
    case "checkpoint":
      return (await import("./checkpoint/range-job.ts")).checkpointJob(msg);
    case "restore":
      return (await import("./restore/range-job.ts")).restoreJob(msg);
    case "check":
      return (await import("./restore/check-job.ts")).checkJob(msg);
    case "store":
      return (await import("./store/jobs.ts")).storeJob(msg);
    case "seal":
      return (await import("./store/sealer.ts")).sealJob(msg);
    case "wal":
      return (await import("./engine/wal-job.ts")).walJob(msg);
  }
}

self.onmessage = async (event: MessageEvent<Request>) => {
  const msg = event.data;
  try {
    const result = await run(msg);
    if (result instanceof Transfer) self.postMessage({ id: msg.id, ok: true, result: result.value } satisfies WorkerReply, result.buffers);
    else self.postMessage({ id: msg.id, ok: true, result } satisfies WorkerReply);
  } catch (e) {
    self.postMessage({ id: msg.id, ok: false, error: serializeError(e) } satisfies WorkerReply);
  }
};
