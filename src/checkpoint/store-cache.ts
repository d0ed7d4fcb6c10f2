/**
 * What a node remembers of its store between checkpoints, so the next one need not reload it:
 * the digest table (indices into `packIds`) and the last checkpoint's block list. It is checked
 * against the store's pack list each time; if any remembered pack is gone (garbage collection,
 * or a change from outside) everything is loaded again. The loading itself runs in workers
 * (store/jobs.ts).
 */
import { DigestTable } from "../store/digest-table.ts";
import { DirBackend } from "../store/dir/backend.ts";
import type { StoreJob } from "../store/jobs.ts";
import { INDEX_ENTRY_BYTES } from "../store/pack.ts";
import { StoreReader } from "../store/reader.ts";
import type { WorkerPool } from "../util/worker-pool.ts";

export interface BlockList {
  id: number;
  entries: SharedArrayBuffer;
  count: number;
}

export interface StoreCache {
  dir: string;
  packIds: string[];
  table: DigestTable;
  prev?: BlockList;
}

/** A worker reads every index of `packIds` into a new digest table (with room to grow). */
export function loadTable(pool: WorkerPool, storeDir: string, packIds: string[]): Promise<DigestTable> {
  const job: StoreJob = { job: "store", op: "loadTable", storeDir, packIds };
  return pool.call<SharedArrayBuffer>(0, job).then(DigestTable.attach);
}

/** Another worker (the last) reads checkpoint `manifestId`'s block list. */
export async function loadBlockList(pool: WorkerPool, storeDir: string, manifestId: number): Promise<BlockList> {
  const job: StoreJob = { job: "store", op: "loadBlockList", storeDir, manifestId };
  const r = await pool.call<{ entries: SharedArrayBuffer; count: number }>(pool.size - 1, job);
  return { id: manifestId, ...r };
}

/**
 * Add every entry of `packIds` to `table`, numbering them from `firstIndex`. Returns false,
 * adding nothing, if the table has no room for them all (the caller reloads instead).
 */
export async function addPacksToTable(reader: StoreReader, table: DigestTable, firstIndex: number, packIds: string[]): Promise<boolean> {
  const { indexes, entries } = await reader.indexesOf(packIds);
  if (table.size + entries > table.capacity / 2) return false;
  indexes.forEach((idx, k) => {
    for (let i = 0; i < idx.count; i++) table.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, firstIndex + k);
  });
  return true;
}

/**
 * Load what the store in `storeDir` holds into `cache` ahead of its next checkpoint: a node
 * does this in the background when it starts and after each checkpoint, so that a checkpoint
 * does not begin by reading every pack index. Read-only; nothing for a store with no
 * checkpoint; a cache already set (a checkpoint got there first) is left alone.
 */
export async function warmStoreCache(storeDir: string, pool: WorkerPool, cache: { current?: StoreCache }): Promise<void> {
  const reader = new StoreReader(new DirBackend(storeDir));
  const ids = await reader.manifestIds();
  if (ids.length === 0) return;
  const latest = Math.max(...ids);
  const packIds = await reader.packIds();
  const [table, prev] = await Promise.all([loadTable(pool, storeDir, packIds), loadBlockList(pool, storeDir, latest)]);
  cache.current ??= { dir: storeDir, packIds, table, prev };
}
