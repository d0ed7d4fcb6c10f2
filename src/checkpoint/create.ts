/**
 * Taking a checkpoint: the coordinator. It runs on the node's main thread but does no heavy
 * work there; reading, hashing, compressing and writing happen in workers (range-job.ts). The
 * order of events is what makes a crash at any moment leave either a complete checkpoint or
 * none:
 *
 *  1. lock the store and load what it holds (pack indexes → digest table; the previous
 *     checkpoint's block list, for the quick unchanged-block test), from the node's cache;
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
import { CairnError, isDiskFull } from "../errors.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import type { WalOverlay } from "../engine/sqlite-files.ts";
import type { Logger } from "../log.ts";
import type { DigestTable } from "../store/digest-table.ts";
import { LocalStore } from "../store/dir/writer.ts";
import { SEGMENT_BLOCKS, SEGMENT_ENTRY_BYTES } from "../store/format.ts";
import { toHex } from "../store/hash.ts";
import { PACK_TARGET_BYTES } from "../store/pack.ts";
import type { PackWritten } from "../store/pack-writer.ts";
import { crashPoint, pausePoint } from "../util/crash-point.ts";
import { emptyDirNoFollow } from "../util/fsx.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { VERSION } from "../version.ts";
import type { CheckpointJob, FinishResult, RangeResult, SnapshotSpec } from "./jobs.ts";
import { pinSnapshot } from "./snapshot.ts";
import { addPacksToTable, type BlockList, loadBlockList, loadTable, type StoreCache } from "./store-cache.ts";

/**
 * Blocks per unit of work handed to a worker (8 MiB of database at 8 KiB blocks): whole
 * segments, since each worker hashes and stores the segments of its ranges.
 */
const RANGE_BLOCKS = 4 * SEGMENT_BLOCKS;

export interface WalPauser {
  pause(): Promise<() => void>;
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

/** Milliseconds of each phase, in order. */
class Phases {
  readonly ms: Record<string, number> = {};
  readonly t0 = performance.now();
  private last = this.t0;
  mark(name: string): void {
    const now = performance.now();
    this.ms[name] = Math.round((now - this.last) * 10) / 10;
    this.last = now;
  }
}

/** What the store holds (1): the digest table over `packIds`, and the previous checkpoint's block list. */
interface StoreState {
  id: number;
  packIds: string[];
  table: DigestTable;
  prev?: BlockList;
}

/** What reading the image gave (2-3). */
interface ImageRead {
  spec: SnapshotSpec;
  results: RangeResult[];
  /** Which worker read each range (a range's own-pack refs are that worker's). */
  rangeWorker: number[];
  totals: { blob_count: number; blob_bytes: number };
}

export async function takeCheckpoint(o: CheckpointOptions): Promise<CheckpointResult> {
  const phases = new Phases();
  const started = new Date();
  const store = LocalStore.openForWrite(o.storeDir, o.nodeId, o.logger);
  const pool = o.pool?.alive ? o.pool : new WorkerPool(Math.max(1, o.workers));
  let keepPool = false;
  const cancelled = () => (o.signal?.reason instanceof CairnError ? o.signal.reason : new CairnError("E_CANCELLED", "checkpoint cancelled"));
  const onAbort = () => pool.terminate(cancelled());
  o.signal?.addEventListener("abort", onAbort);
  let published = false;
  try {
    if (o.signal?.aborted) throw cancelled();
    const state = await loadStoreState(o, store, pool);
    phases.mark("load_store");
    await startWorkers(o, store, pool, state);
    phases.mark("start_workers");
    const image = await readImage(o, store, pool, phases);
    crashPoint("checkpoint:blocks-read");
    phases.mark("read_blocks");

    // 4. the block list, and its segments
    const imageBytes = image.spec.pageCount * image.spec.pageSize;
    const blockCount = Math.ceil(imageBytes / store.info.block_size);
    // shared from the start: it is the next checkpoint's "previous" block list (the cache)
    const entriesBuf = new SharedArrayBuffer(blockCount * SEGMENT_ENTRY_BYTES);
    const entries = new Uint8Array(entriesBuf);
    let newBlocks = 0;
    let rehashed = 0;
    image.results.forEach((r, i) => {
      entries.set(r.entries, i * RANGE_BLOCKS * SEGMENT_ENTRY_BYTES);
      newBlocks += r.newBlocks;
      rehashed += r.rehashed;
    });
    const segments: string[] = [];
    for (const r of image.results) for (let k = 0; k < r.segments.length; k += 32) segments.push(toHex(r.segments.subarray(k, k + 32)));
    phases.mark("block_list");

    // 5. close, publish and sync the packs
    const { packs, written } = await publishPacks(o, store, pool, state, image);
    phases.mark("publish_packs");
    if (o.signal?.aborted) throw cancelled();

    // 6. the manifest, last
    const created = new Date().toISOString();
    const newBytes = written.reduce((s, p) => s + p.packBytes + p.indexBytes, 0);
    crashPoint("checkpoint:before-manifest");
    const manifestBytes = store.writeManifest({
      format: 1,
      id: state.id,
      node_id: o.nodeId,
      created,
      cairn_version: VERSION,
      page_size: image.spec.pageSize,
      page_count: image.spec.pageCount,
      db_size_bytes: imageBytes,
      block_size: store.info.block_size,
      block_count: blockCount,
      segment_blocks: SEGMENT_BLOCKS,
      segments,
      packs,
      db_totals: image.totals,
      stats: {
        started: started.toISOString(),
        duration_ms: Math.round(performance.now() - phases.t0),
        logical_bytes: imageBytes,
        new_blocks: newBlocks,
        new_bytes: newBytes,
        blocks_rehashed: rehashed,
      },
    });
    published = true;
    crashPoint("checkpoint:after-manifest");
    phases.mark("manifest");
    if (o.cache) await rememberStore(o, store, pool, state, written, { id: state.id, entries: entriesBuf, count: blockCount });
    phases.mark("prepare_next");
    keepPool = true;
    o.logger.debug(`checkpoint ${state.id} phases (ms): ${Object.entries(phases.ms).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    return {
      id: state.id,
      dir: o.storeDir,
      created,
      durationMs: performance.now() - phases.t0,
      logicalBytes: imageBytes,
      newBlocks,
      newBytes: newBytes + manifestBytes,
      rehashed,
      files: packs.length * 2 + 1,
      blobCount: image.totals.blob_count,
      phases: phases.ms,
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
    if (!(keepPool && pool === o.pool)) pool.terminate(new CairnError("E_CANCELLED", "checkpoint ended"));
    store.release();
  }
}

/** 1. What the store holds: from the node's cache (plus packs added since), or loaded by workers. */
async function loadStoreState(o: CheckpointOptions, store: LocalStore, pool: WorkerPool): Promise<StoreState> {
  const id = await store.nextId();
  const prevId = id > 1 && (await store.reader.manifestIds()).includes(id - 1) ? id - 1 : undefined;
  const present = await store.reader.packIds();
  const cached = o.cache?.current;
  const usable = cached && cached.dir === o.storeDir && cached.packIds.every((p) => present.includes(p)) ? cached : undefined;
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
  const prev =
    prevId === undefined
      ? undefined
      : usable?.prev?.id === prevId
        ? usable.prev
        : await loadBlockList(pool, o.storeDir, prevId).catch((e) => {
            o.logger.warn(`could not read checkpoint ${prevId}'s block list (${e.message}); every block will be hashed`);
            return undefined;
          });
  return { id, packIds, table, prev };
}

async function startWorkers(o: CheckpointOptions, store: LocalStore, pool: WorkerPool, state: StoreState): Promise<void> {
  const init: CheckpointJob = {
    job: "checkpoint",
    op: "init",
    tmpDir: store.tmpDir,
    blockSize: store.info.block_size,
    seed: store.info.quick_hash_seed!,
    compression: o.compression,
    sync: o.sync,
    packTargetBytes: PACK_TARGET_BYTES,
    writeBytesPerSec: o.writeBytesPerSec > 0 ? Math.max(1, Math.floor(o.writeBytesPerSec / pool.size)) : 0,
  };
  await pool.all(init);
  const table: CheckpointJob = { job: "checkpoint", op: "table", table: state.table.buffer, prev: state.prev?.entries ?? null, prevBlockCount: state.prev?.count ?? 0 };
  await pool.all(table);
}

/** 2-3. Pin the snapshot, have the workers read it, release it. */
async function readImage(o: CheckpointOptions, store: LocalStore, pool: WorkerPool, phases: Phases): Promise<ImageRead> {
  const resume = await o.wal.pause();
  let pinned: ReturnType<typeof pinSnapshot> | undefined;
  try {
    pinned = pinSnapshot(o.live);
    crashPoint("checkpoint:snapshot-pinned");
    const overlay = pinned.walIndex
      ? await pool.call<WalOverlay, CheckpointJob>(0, { job: "checkpoint", op: "scanWal", walFd: o.live.walFd, shmFd: o.live.shmFd, walIndex: pinned.walIndex })
      : undefined;
    const spec: SnapshotSpec = {
      dbFd: o.live.dbFd,
      walFd: o.live.walFd,
      pageSize: pinned.pageSize,
      pageCount: overlay ? overlay.pageCount : pinned.dbFilePages,
      overlayPages: overlay?.pages ?? new Uint32Array(0),
      overlayOffsets: overlay?.offsets ?? new Float64Array(0),
    };
    const snapshot: CheckpointJob = { job: "checkpoint", op: "snapshot", spec };
    await pool.all(snapshot);
    phases.mark("pin_and_scan_wal");
    await pausePoint("checkpoint:pinned");
    const { results, rangeWorker } = await readAllRanges(pool, spec, store.info.block_size, o.onProgress);
    pinned.checkGuard();
    return { spec, results, rangeWorker, totals: pinned.totals };
  } finally {
    pinned?.release();
    resume();
  }
}

/** Hand out ranges of blocks to the workers until all are read. */
async function readAllRanges(
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
        const job: CheckpointJob = { job: "checkpoint", op: "range", first, count: Math.min(RANGE_BLOCKS, blockCount - first) };
        results[r] = await pool.call<RangeResult>(w, job);
        rangeWorker[r] = w;
        done += results[r]!.bytesRead;
        onProgress?.(done, imageBytes);
      }
    }),
  );
  return { results, rangeWorker };
}

/** 5. Workers close their packs; they are renamed into place and synced. Returns the packs the checkpoint needs. */
async function publishPacks(
  o: CheckpointOptions,
  store: LocalStore,
  pool: WorkerPool,
  state: StoreState,
  image: ImageRead,
): Promise<{ packs: string[]; written: PackWritten[] }> {
  const finish: CheckpointJob = { job: "checkpoint", op: "finish" };
  const finished = await pool.all<FinishResult>(finish);
  crashPoint("checkpoint:packs-written");
  // which packs the checkpoint needs: table packs by index, and each worker's own packs
  const needed = new Set<string>();
  image.results.forEach((r, i) => {
    for (const ref of r.packRefs) needed.add(ref >= 0 ? state.packIds[ref]! : finished[image.rangeWorker[i]!]!.myPacks[-ref - 1]!);
  });
  const written = finished.flatMap((f) => f.packs);
  for (const p of written) store.publishPack(p.packId);
  crashPoint("checkpoint:packs-published");
  if (o.sync && written.length > 0) store.syncPackDirs(written.map((p) => p.packId));
  return { packs: [...needed].sort(), written };
}

/** Remember the store as it now is: the new packs join the table, this block list is the next one's "previous". */
async function rememberStore(o: CheckpointOptions, store: LocalStore, pool: WorkerPool, state: StoreState, written: PackWritten[], list: BlockList): Promise<void> {
  const fresh = written.map((p) => p.packId);
  const allPacks = [...state.packIds, ...fresh];
  let next: DigestTable | undefined = state.table;
  if (!(await addPacksToTable(store.reader, state.table, state.packIds.length, fresh))) {
    // the table has no room for what the store now holds (always so after the first
    // checkpoint of a store): a worker builds a bigger one now, while the pool is up, so
    // that the next checkpoint does not start by reloading every index
    next = await loadTable(pool, o.storeDir, allPacks).catch(() => undefined);
  }
  o.cache!.current = next ? { dir: o.storeDir, packIds: allPacks, table: next, prev: list } : undefined;
}

function discardTmp(tmpDir: string): void {
  try {
    emptyDirNoFollow(tmpDir);
  } catch {
    // the next writer cleans up too
  }
}
