/**
 * Taking a checkpoint: the coordinator. It runs on the node's main thread but does no heavy
 * work there; reading, hashing, compressing and writing happen in workers (pool.ts,
 * checkpoint-worker.ts). The order of events is what makes a crash at any moment leave either
 * a complete checkpoint or none:
 *
 *  1. lock the store and load what it holds (pack indexes → digest table; the previous
 *     checkpoint's block list, for the quick unchanged-block test);
 *  2. pause the node's WAL checkpoints and pin the snapshot (snapshot.ts);
 *  3. workers scan the WAL, then read the image block by block and append new blocks to
 *     packs in tmp/; the pin is released and WAL checkpoints resume as soon as reading ends;
 *  4. the workers also cut their ranges' block lists into segments and store the new ones like
 *     blocks; the coordinator joins the lists and the segment digests;
 *  5. workers close their packs (fsynced when `sync`), the packs are renamed into packs/ and
 *     their folders fsynced;
 *  6. the manifest is written last, atomically. Only now does the checkpoint exist.
 *
 * Cancelling (an AbortSignal) terminates the workers at once; what they wrote stays in tmp/
 * and is removed, so nothing of the checkpoint is listed.
 */
import { emptyDirNoFollow } from "../util/fsx.ts";
import { CairnError, isDiskFull } from "../errors.ts";
import type { Logger } from "../log.ts";
import { crashPoint, pausePoint } from "../util/crash-point.ts";
import { VERSION } from "../version.ts";
import { DigestTable } from "./digest-table.ts";
import { INDEX_ENTRY_BYTES, PACK_TARGET_BYTES, SEGMENT_BLOCKS, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { toHex } from "./hash.ts";
import { LocalStore, packIdsIn } from "./local-store.ts";
import { WorkerPool } from "./pool.ts";
import type { PackWritten, RangeResult, SnapshotSpec } from "./protocol.ts";
import { DirSource } from "./objects.ts";
import { StoreReader } from "./reader.ts";
import { pinSnapshot } from "./snapshot.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import type { WalOverlay } from "./wal-format.ts";

/**
 * Blocks per unit of work handed to a worker (8 MiB of database at 8 KiB blocks): whole
 * segments, since each worker hashes and stores the segments of its ranges.
 */
const RANGE_BLOCKS = 4 * SEGMENT_BLOCKS;

export interface WalPauser {
  pause(): Promise<() => void>;
}

/**
 * What a node remembers of a store between its checkpoints, so the next one need not reload
 * it: the digest table (indices into `packIds`) and the last checkpoint's block list. It is
 * checked against the store's pack list each time; if any remembered pack is gone (garbage
 * collection, or a change from outside) everything is loaded again.
 */
export interface StoreCache {
  dir: string;
  packIds: string[];
  table: DigestTable;
  prev?: { id: number; entries: SharedArrayBuffer; count: number };
}

export interface CheckpointOptions {
  storeDir: string;
  nodeId: string;
  /** The node's descriptors of its database files: every read of them goes through these. */
  live: LiveFiles;
  wal: WalPauser;
  workers: number;
  sync: boolean;
  compression: "none" | "zstd";
  /** Total write rate limit across workers; 0 = none. */
  writeBytesPerSec: number;
  logger: Logger;
  signal?: AbortSignal;
  /**
   * Workers kept by the caller between checkpoints (a node keeps its own): warm workers take
   * an incremental checkpoint in ~60% of the time fresh ones do, which spend it compiling their
   * hot loop again. Used if alive; terminated if the checkpoint fails or is cancelled (the
   * caller then makes new ones). Without it the checkpoint makes its own and ends them.
   */
  pool?: WorkerPool;
  /** Kept by the caller between checkpoints; takeCheckpoint reads and updates it. */
  cache?: { current?: StoreCache };
  /** Called as blocks are read: bytes done of total. */
  onProgress?: (done: number, total: number) => void;
}

export interface CheckpointResult {
  id: number;
  dir: string;
  created: string;
  durationMs: number;
  logicalBytes: number;
  newBlocks: number;
  newBytes: number;
  rehashed: number;
  files: number;
  blobCount: number;
  /** Milliseconds spent in each phase, in order (for logs and the bench). */
  phases: Record<string, number>;
}

export async function takeCheckpoint(o: CheckpointOptions): Promise<CheckpointResult> {
  const t0 = performance.now();
  const started = new Date();
  const phases: Record<string, number> = {};
  let lastMark = t0;
  const mark = (name: string) => {
    const now = performance.now();
    phases[name] = Math.round((now - lastMark) * 10) / 10;
    lastMark = now;
  };
  const store = LocalStore.openForWrite(o.storeDir, o.nodeId, o.logger);
  const pool = o.pool?.alive ? o.pool : new WorkerPool(Math.max(1, o.workers));
  let keepPool = false;
  const cancelled = () => new CairnError("E_CANCELLED", "checkpoint cancelled");
  const onAbort = () => pool.terminate(o.signal?.reason instanceof CairnError ? o.signal.reason : cancelled());
  o.signal?.addEventListener("abort", onAbort);
  let published = false;
  try {
    if (o.signal?.aborted) throw o.signal.reason instanceof CairnError ? o.signal.reason : cancelled();
    const id = await store.nextId();
    const prevId = id > 1 && (await store.reader.manifestIds()).includes(id - 1) ? id - 1 : undefined;
    const present = await store.packIds();
    const cached = o.cache?.current;
    const usable = cached && cached.dir === o.storeDir && cached.packIds.every((p) => present.includes(p)) ? cached : undefined;

    // 1. what the store holds: from the cache (plus packs added since), or loaded by workers
    let packIds = present;
    let table: DigestTable | undefined;
    if (usable) {
      const known = new Set(usable.packIds);
      const added = present.filter((p) => !known.has(p));
      if (await addPacksToTable(store.reader, usable.table, usable.packIds.length, added)) {
        packIds = [...usable.packIds, ...added];
        table = usable.table;
      }
      // else regrow by reloading: rare, and keeps the table sized for what it holds
    }
    table ??= await loadTable(pool, o.storeDir, packIds);
    const prevList =
      prevId === undefined
        ? undefined
        : usable?.prev?.id === prevId
          ? usable.prev
          : await loadBlockList(pool, o.storeDir, prevId).catch((e) => {
              o.logger.warn(`could not read checkpoint ${prevId}'s block list (${e.message}); every block will be hashed`);
              return undefined;
            });
    mark("load_store");
    await pool.all({
      type: "init",
      storeDir: o.storeDir,
      tmpDir: store.tmpDir,
      blockSize: store.info.block_size,
      seed: store.info.quick_hash_seed!,
      compression: o.compression,
      sync: o.sync,
      packTargetBytes: PACK_TARGET_BYTES,
      writeBytesPerSec: o.writeBytesPerSec > 0 ? Math.max(1, Math.floor(o.writeBytesPerSec / pool.size)) : 0,
    });
    await pool.all({ type: "table", table: table.buffer, prev: prevList?.entries ?? null, prevBlockCount: prevList?.count ?? 0 });
    mark("start_workers");

    // 2-3. pin, read, release
    const resume = await o.wal.pause();
    let pinned: ReturnType<typeof pinSnapshot> | undefined;
    let spec: SnapshotSpec;
    let results: RangeResult[];
    let rangeWorker: number[];
    let totals: { blob_count: number; blob_bytes: number };
    try {
      pinned = pinSnapshot(o.live);
      totals = pinned.totals;
      crashPoint("checkpoint:snapshot-pinned");
      const overlay = pinned.walIndex
        ? await pool.call<WalOverlay>(0, { type: "scanWal", walFd: o.live.walFd, shmFd: o.live.shmFd, walIndex: pinned.walIndex })
        : undefined;
      spec = {
        dbFd: o.live.dbFd,
        walFd: o.live.walFd,
        pageSize: pinned.pageSize,
        pageCount: overlay ? overlay.pageCount : pinned.dbFilePages,
        overlayPages: overlay?.pages ?? new Uint32Array(0),
        overlayOffsets: overlay?.offsets ?? new Float64Array(0),
      };
      await pool.all({ type: "snapshot", spec });
      mark("pin_and_scan_wal");
      await pausePoint("checkpoint:pinned");
      ({ results, rangeWorker } = await readAllBlocks(pool, spec, store.info.block_size, o.onProgress));
      pinned.checkGuard();
    } finally {
      pinned?.release();
      resume();
    }
    crashPoint("checkpoint:blocks-read");
    mark("read_blocks");

    // 4. the block list, and its segments
    const imageBytes = spec.pageCount * spec.pageSize;
    const blockCount = Math.ceil(imageBytes / store.info.block_size);
    // shared from the start: it is the next checkpoint's "previous" block list (the cache)
    const entriesBuf = new SharedArrayBuffer(blockCount * SEGMENT_ENTRY_BYTES);
    const entries = new Uint8Array(entriesBuf);
    // which packs the checkpoint needs: table packs by index, and each worker's own packs
    const tablePacks = new Uint8Array(packIds.length);
    const ownPacks: Set<number>[] = Array.from({ length: pool.size }, () => new Set());
    const need = (worker: number, ref: number) => {
      if (ref >= 0) tablePacks[ref] = 1;
      else ownPacks[worker]!.add(-ref - 1);
    };
    let newBlocks = 0;
    let rehashed = 0;
    results.forEach((r, i) => {
      entries.set(r.entries, i * RANGE_BLOCKS * SEGMENT_ENTRY_BYTES);
      for (const ref of r.packRefs) need(rangeWorker[i]!, ref);
      newBlocks += r.newBlocks;
      rehashed += r.rehashed;
    });
    const segments: string[] = [];
    for (const r of results) for (let k = 0; k < r.segments.length; k += 32) segments.push(toHex(r.segments.subarray(k, k + 32)));
    mark("block_list");
    // 5. close, publish and sync the packs
    const finished = await pool.all<{ packs: PackWritten[]; myPacks: string[] }>({ type: "finish" });
    mark("close_packs");
    crashPoint("checkpoint:packs-written");
    const needed = new Set<string>();
    tablePacks.forEach((n, i) => n && needed.add(packIds[i]!));
    ownPacks.forEach((own, w) => own.forEach((k) => needed.add(finished[w]!.myPacks[k]!)));
    const written = finished.flatMap((f) => f.packs);
    for (const p of written) store.publishPack(p.packId);
    crashPoint("checkpoint:packs-published");
    if (o.sync && written.length > 0) store.syncPackDirs(written.map((p) => p.packId));
    mark("publish_packs");
    if (o.signal?.aborted) throw cancelled();

    // 6. the manifest, last
    const created = new Date().toISOString();
    const packs = [...needed].sort();
    const newBytes = written.reduce((s, p) => s + p.packBytes + p.indexBytes, 0);
    crashPoint("checkpoint:before-manifest");
    const manifestBytes = store.writeManifest({
      format: 1,
      id,
      node_id: o.nodeId,
      created,
      cairn_version: VERSION,
      page_size: spec.pageSize,
      page_count: spec.pageCount,
      db_size_bytes: imageBytes,
      block_size: store.info.block_size,
      block_count: blockCount,
      segment_blocks: SEGMENT_BLOCKS,
      segments,
      packs,
      db_totals: totals,
      stats: {
        started: started.toISOString(),
        duration_ms: Math.round(performance.now() - t0),
        logical_bytes: imageBytes,
        new_blocks: newBlocks,
        new_bytes: newBytes,
        blocks_rehashed: rehashed,
      },
    });
    published = true;
    crashPoint("checkpoint:after-manifest");
    mark("manifest");
    if (o.cache) {
      // remember the store as it now is: the new packs join the table, this block list is next's "previous"
      const fresh = written.map((p) => p.packId);
      const allPacks = [...packIds, ...fresh];
      let next: DigestTable | undefined = table;
      if (!(await addPacksToTable(store.reader, table, packIds.length, fresh))) {
        // the table has no room for what the store now holds (always so after the first
        // checkpoint of a store): a worker builds a bigger one now, while the pool is up, so
        // that the next checkpoint does not start by reloading every index
        next = await loadTable(pool, o.storeDir, allPacks).catch(() => undefined);
      }
      if (next) {
        o.cache.current = { dir: o.storeDir, packIds: allPacks, table: next, prev: { id, entries: entriesBuf, count: blockCount } };
      } else {
        o.cache.current = undefined;
      }
    }
    mark("prepare_next");
    keepPool = true;
    o.logger.debug(`checkpoint ${id} phases (ms): ${Object.entries(phases).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    return {
      id,
      dir: o.storeDir,
      created,
      durationMs: performance.now() - t0,
      logicalBytes: imageBytes,
      newBlocks,
      newBytes: newBytes + manifestBytes,
      rehashed,
      files: packs.length * 2 + 1,
      blobCount: totals.blob_count,
      phases,
    };
  } catch (e) {
    if (!published) discardTmp(store.tmpDir);
    if (isDiskFull(e)) {
      throw new CairnError("E_DISK_FULL", `no space left on the device holding ${o.storeDir}; the checkpoint was discarded and nothing of it is listed`, {
        hint: "free space there, or take checkpoints into another directory (checkpoint create --path, db_checkpoint_dir)",
        cause: e,
      });
    }
    throw e;
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
    // a failed or cancelled checkpoint never leaves its workers behind: their state is suspect
    if (!(keepPool && pool === o.pool)) pool.terminate();
    store.release();
  }
}

/**
 * Load what the store in `storeDir` holds into `cache` ahead of its next checkpoint: a node
 * does this in the background when it starts, so that the first checkpoint after a restart
 * does not begin by reading every pack index. Read-only; nothing for a store with no
 * checkpoint; a cache already set (a checkpoint got there first) is left alone.
 */
export async function warmStoreCache(storeDir: string, pool: WorkerPool, cache: { current?: StoreCache }): Promise<void> {
  const reader = new StoreReader(new DirSource(storeDir));
  const ids = await reader.manifestIds();
  if (ids.length === 0) return;
  const latest = Math.max(...ids);
  const packIds = await packIdsIn(reader);
  const [table, prev] = await Promise.all([loadTable(pool, storeDir, packIds), loadBlockList(pool, storeDir, latest)]);
  cache.current ??= { dir: storeDir, packIds, table, prev: { id: latest, ...prev } };
}

/** A worker reads every index of `packIds` into a new digest table (with room to grow). */
function loadTable(pool: WorkerPool, storeDir: string, packIds: string[]): Promise<DigestTable> {
  return pool.call<SharedArrayBuffer>(0, { type: "loadIndex", storeDir, packIds }).then(DigestTable.attach);
}

/** Another worker (the last) reads checkpoint `manifestId`'s block list. */
function loadBlockList(pool: WorkerPool, storeDir: string, manifestId: number): Promise<{ entries: SharedArrayBuffer; count: number }> {
  return pool.call(pool.size - 1, { type: "loadBlockList", storeDir, manifestId });
}

/**
 * Add every entry of `packIds` to `table`, numbering them from `firstIndex`. Returns false,
 * adding nothing, if the table has no room for them all (the caller reloads instead).
 */
async function addPacksToTable(reader: StoreReader, table: DigestTable, firstIndex: number, packIds: string[]): Promise<boolean> {
  const { indexes, entries } = await reader.indexesOf(packIds);
  if (table.size + entries > table.capacity / 2) return false;
  indexes.forEach((idx, k) => {
    for (let i = 0; i < idx.count; i++) table.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, firstIndex + k);
  });
  return true;
}

/** Hand out ranges of blocks to the workers until all are read. */
async function readAllBlocks(
  pool: WorkerPool,
  spec: SnapshotSpec,
  blockSize: number,
  onProgress?: (done: number, total: number) => void,
): Promise<{ results: RangeResult[]; rangeWorker: number[] }> {
  const imageBytes = spec.pageCount * spec.pageSize;
  const blockCount = Math.ceil(imageBytes / blockSize);
  const ranges = Math.ceil(blockCount / RANGE_BLOCKS);
  const results: RangeResult[] = new Array(ranges);
  const rangeWorker: number[] = new Array(ranges);
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: pool.size }, async (_, w) => {
      while (next < ranges) {
        const r = next++;
        const first = r * RANGE_BLOCKS;
        results[r] = await pool.call<RangeResult>(w, { type: "range", first, count: Math.min(RANGE_BLOCKS, blockCount - first) });
        rangeWorker[r] = w;
        done += results[r]!.bytesRead;
        onProgress?.(done, imageBytes);
      }
    }),
  );
  return { results, rangeWorker };
}

function discardTmp(tmpDir: string): void {
  try {
    emptyDirNoFollow(tmpDir);
  } catch {
    // the next writer cleans up too
  }
}
