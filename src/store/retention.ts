/**
 * Retention, for a local store and a remote one alike: which checkpoints have expired (one
 * policy), then their manifests go and the packs no remaining checkpoint needs are collected.
 *
 * Locally both steps need the store's readers lock exclusively, so nothing a running restore,
 * verify or export is reading is ever deleted: if a reader holds it, retention waits for the
 * next checkpoint. The collection runs in a worker (gc.ts). On a remote store, the packs no
 * manifest names are deleted, unless a reader holds a lease there (the same rule: retention
 * deletes nothing while a live reader is registered; store/lease.ts).
 */
import { dirname, join } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FileLock } from "../util/file-lock.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { rmSync } from "node:fs";
import type { Backend, RandomReads, Writes } from "./backend.ts";
import { CHAIN_FILE, indexLog, LOG_DIR, neededLogFiles } from "./log.ts";
import { STORE_READERS_LOCK_FILE } from "./dir/backend.ts";
import { LocalStore } from "./dir/writer.ts";
import { manifestPath, type Manifest } from "./format.ts";
import { type GcResult, removeUnreferencedPacks } from "./gc.ts";
import { describeLeases, readLeases } from "./lease.ts";
import { retireGenerations } from "./keys.ts";
import type { KeyFile, StoreKeys } from "./crypto.ts";
import type { StoreJob } from "./jobs.ts";
import { StoreReader } from "./reader.ts";

/** The checkpoints (ascending ids) that expire when the newest `keep` are kept; 0 keeps all. */
export function expiredCheckpoints(ids: number[], keep: number): number[] {
  return keep > 0 ? ids.slice(0, Math.max(0, ids.length - keep)) : [];
}

export interface RetentionResult {
  removed: number[];
  gc?: GcResult;
  skipped?: string;
}

/**
 * Retention of the node's local store in `dir`, then garbage collection in a worker: always of
 * the packs no checkpoint names; with `lookForDeadBlocks`, also of the packs mostly holding
 * blocks no remaining checkpoint needs (which reads every checkpoint's segments and every
 * index: the caller decides how often that pays).
 */
export async function applyLocalRetention(
  dir: string,
  nodeId: string,
  keep: number,
  sync: boolean,
  logger: Logger,
  lookForDeadBlocks = true,
  /** Workers of the caller's to run the collection on (a node keeps its own); else one is started and ended. */
  workers?: WorkerPool,
  /** The log chain the node is writing (WAL shipping): kept whole. */
  currentChain?: string,
  /** An encrypted store's key file. */
  keyFile?: KeyFile,
): Promise<RetentionResult> {
  const store = LocalStore.openForWrite(dir, nodeId, logger, keyFile);
  let readers: FileLock | undefined;
  try {
    try {
      readers = FileLock.exclusive(join(dir, STORE_READERS_LOCK_FILE), () => new CairnError("E_BUSY", "busy"));
    } catch {
      return { removed: [], skipped: "a restore, verify, export or copy to the remote is reading the store" };
    }
    const ids = await store.reader.manifestIds();
    const removed = expiredCheckpoints(ids, keep);
    for (const id of removed) await store.removeManifest(id);
    if (removed.length > 0 && store.info.encryption) {
      try {
        const retired = await retireUnusedGenerations(store, ids.filter((id) => !removed.includes(id)));
        if (retired > 0) logger.info(`retention dropped ${retired} wrapped key(s) of key generations no remaining checkpoint uses`);
      } catch (e) {
        logger.warn(`could not drop the keys of retired key generations in ${dir}: ${errorMessage(e)}`);
      }
    }
    try {
      const logFiles = await pruneLog(store.reader.source as RandomReads, {
        delete: async (p) => {
          rmSync(join(dir, p), { force: true });
          if (p.endsWith(`/${CHAIN_FILE}`)) rmSync(join(dir, dirname(p)), { recursive: true, force: true });
        },
      }, store.reader, ids.filter((id) => !removed.includes(id)), currentChain, dir);
      if (logFiles > 0) logger.info(`retention removed ${logFiles} log file(s) no remaining checkpoint needs`);
    } catch (e) {
      logger.warn(`log retention in ${dir} failed: ${errorMessage(e)}`);
    }
    const pool = workers?.alive ? workers : new WorkerPool(1);
    try {
      const job: StoreJob = { job: "store", op: "gc", storeDir: dir, minLiveFraction: 0.5, sync, checkpointsRemoved: removed.length > 0 && lookForDeadBlocks, keys: store.keys?.spec };
      return { removed, gc: await pool.call<GcResult>(0, job) };
    } catch (e) {
      logger.warn(`garbage collection in ${dir} failed: ${errorMessage(e)}`);
      return { removed };
    } finally {
      if (pool !== workers) pool.terminate(new CairnError("E_CANCELLED", "garbage collection ended"));
    }
  } finally {
    readers?.release();
    store.release();
  }
}

/** Drop the wrapped keys of generations older than every remaining checkpoint's (after a rotation); returns how many went. */
async function retireUnusedGenerations(store: LocalStore, keptIds: number[]): Promise<number> {
  const enc = store.info.encryption!;
  // nothing older than the current generation holds keys (no rotation pending): no manifest need be read
  if (enc.slots.every((s) => s.generation === enc.generation)) return 0;
  let oldest = enc.generation;
  for (const id of keptIds) oldest = Math.min(oldest, (await store.reader.manifest(id)).key_generation ?? 1);
  const n = retireGenerations(enc, oldest);
  if (n > 0) store.rewriteInfo();
  return n;
}

/**
 * Retention of a remote store: the expired manifests go first, then every pack no remaining
 * manifest needs. A pack uploaded by a push that failed before its manifest is needed by none
 * and goes too (the next push uploads it again if needed). Nothing is deleted while a reader
 * holds a live lease on the prefix (store/lease.ts): they are looked for before the manifests
 * go and again before any pack or log file does; leases that expired are removed at the end.
 */
export async function applyRemoteRetention(
  remote: Backend & { random: RandomReads; writes: Writes },
  keep: number,
  logger: Logger,
  keys?: StoreKeys,
): Promise<{ removed: number[]; kept: number[]; skipped?: string }> {
  const store = new StoreReader(remote, keys);
  const ids = await store.manifestIds();
  const expired = expiredCheckpoints(ids, keep);
  if (expired.length === 0) return { removed: [], kept: ids };
  const before = await readLeases(remote.random);
  if (before.live.length > 0) {
    const skipped = `${describeLeases(before.live)} on ${remote.location}`;
    logger.info(`remote retention postponed: ${skipped}`);
    return { removed: [], kept: ids, skipped };
  }
  for (const id of expired) await remote.writes.delete(manifestPath(id));
  const kept = ids.filter((id) => !expired.includes(id));
  const manifests: Manifest[] = [];
  for (const id of kept) {
    try {
      manifests.push(await store.manifest(id));
    } catch (e) {
      // without knowing what a checkpoint needs, nothing may be collected
      logger.warn(`remote retention: cannot read checkpoint ${id} (${errorMessage(e)}); not collecting packs`);
      return { removed: expired, kept };
    }
  }
  const after = await readLeases(remote.random);
  if (after.live.length > 0) {
    const skipped = `${describeLeases(after.live)} on ${remote.location}; the packs of checkpoint(s) ${expired.join(", ")} are collected next time`;
    logger.info(`remote retention: ${skipped}`);
    return { removed: expired, kept, skipped };
  }
  await removeUnreferencedPacks(remote, store, manifests);
  await pruneLog(remote.random, remote.writes, store, kept, undefined, remote.location);
  for (const p of after.dead) await remote.writes.delete(p);
  return { removed: expired, kept };
}

/**
 * Remove the log files (store/log.ts) none of the checkpoints `keptIds` needs: the log from the
 * oldest retained checkpoint on stays, nothing older. A checkpoint that cannot be read keeps
 * everything. Returns how many files went.
 */
export async function pruneLog(random: RandomReads, writes: Pick<Writes, "delete">, reader: StoreReader, keptIds: number[], currentChain: string | undefined, location: string): Promise<number> {
  const paths = await random.list(`${LOG_DIR}/`);
  if (paths.length === 0) return 0;
  const kept: Manifest[] = [];
  for (const id of keptIds) {
    try {
      kept.push(await reader.manifest(id));
    } catch {
      return 0;
    }
  }
  const index = await indexLog(paths, random, location);
  const need = neededLogFiles(index, kept, currentChain);
  let n = 0;
  for (const p of paths) {
    if (need.has(p)) continue;
    // chain records go last, once nothing of the chain is left
    if (p.endsWith(`/${CHAIN_FILE}`)) continue;
    await writes.delete(p);
    n++;
  }
  for (const p of paths) {
    if (!p.endsWith(`/${CHAIN_FILE}`) || need.has(p)) continue;
    await writes.delete(p);
    n++;
  }
  return n;
}
