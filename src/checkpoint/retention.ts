/**
 * After a successful checkpoint: keep the newest `keep` checkpoints (0 keeps all), then collect
 * garbage in a worker. Both need the store's readers lock exclusively, so nothing a running
 * restore, verify or export is reading is ever deleted: if a reader holds it, retention waits
 * for the next checkpoint.
 */
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FileLock } from "../engine/lock.ts";
import type { GcResult } from "./gc.ts";
import { LocalStore, STORE_READERS_LOCK_FILE } from "./local-store.ts";
import { WorkerPool } from "./pool.ts";

export interface RetentionResult {
  removed: number[];
  gc?: GcResult;
  skipped?: string;
}

export async function applyRetention(dir: string, nodeId: string, keep: number, sync: boolean, logger: Logger): Promise<RetentionResult> {
  const store = LocalStore.openForWrite(dir, nodeId, logger);
  let readers: FileLock | undefined;
  try {
    try {
      readers = FileLock.exclusive(join(dir, STORE_READERS_LOCK_FILE), () => new CairnError("E_STORE_READING", "busy"));
    } catch {
      return { removed: [], skipped: "a restore, verify, export or copy to the remote is reading the store" };
    }
    const ids = await store.reader.manifestIds();
    const removed = keep > 0 ? ids.slice(0, Math.max(0, ids.length - keep)) : [];
    for (const id of removed) store.removeManifest(id);
    const pool = new WorkerPool(1);
    try {
      const gc = await pool.call<GcResult>(0, { type: "gc", storeDir: dir, minLiveFraction: 0.5, sync, checkpointsRemoved: removed.length > 0 });
      return { removed, gc };
    } catch (e) {
      logger.warn(`garbage collection in ${dir} failed: ${(e as Error).message}`);
      return { removed };
    } finally {
      pool.terminate();
    }
  } finally {
    readers?.release();
    store.release();
  }
}
