/**
 * Taking a checkpoint: the coordinator. It runs on the node's main thread but does no heavy
 * work there; reading, hashing, compressing and writing happen in workers (range-job.ts). The
 * order of events is what makes a crash at any moment leave either a complete checkpoint or
 * none:
 *
 *  1. lock the store and find its newest checkpoint's segments (from the node's cache, or one
 *     scan of its indexes in a worker);
 *  2. pause the node's WAL folds, pin the snapshot (snapshot.ts) and, in the same step, take
 *     the pages changed since that checkpoint (engine/change-tracker.ts), if that is proven;
 *  3. workers build the ranges that hold a changed block (all of them when nothing is proven:
 *     a full scan, which still keeps the digest of every block whose quick hash did not
 *     change), appending new blocks and segments to packs in tmp/; every other segment is the
 *     previous checkpoint's, taken by digest without reading it; the pin is released and folds
 *     resume as soon as reading ends;
 *  4. workers close their packs (fsynced when `sync`); the packs are renamed into packs/ and
 *     their folders fsynced;
 *  5. the manifest is written last, atomically. Only now does the checkpoint exist.
 *
 * Memory is that of the segments (a digest, a location and the packs of its blocks each, for
 * every 2 MiB of database) and of the changed pages (a bit each), not of the blocks: nothing
 * here holds a block list or a table of the store's digests. A block is deduplicated against
 * the previous checkpoint's block at the same place (its quick hash) and against the blocks
 * this checkpoint stored (a bounded table per worker), not against the whole store.
 *
 * Cancelling (an AbortSignal) terminates the workers at once; what they wrote stays in tmp/
 * and is removed, so nothing of the checkpoint is listed.
 */
import { CairnError, errorMessage, isDiskFull } from "../errors.ts";
import type { ChangeTracker, TakenChanges } from "../engine/change-tracker.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import type { PausedFolds } from "../engine/wal.ts";
import type { WalOverlay } from "../engine/sqlite-files.ts";
import type { Logger } from "../log.ts";
import type { KeyFile } from "../store/crypto.ts";
import { LocalStore } from "../store/dir/writer.ts";
import { type Manifest, seedDigest, SEGMENT_BLOCKS } from "../store/format.ts";
import { PACK_TARGET_BYTES } from "../store/pack.ts";
import type { PackWritten } from "../store/pack-writer.ts";
import { includedObject, readIncludeFiles } from "../store/included.ts";
import { crashPoint, PACK_TARGET_ENV, pausePoint } from "../util/crash-point.ts";
import { emptyDirNoFollow } from "../util/fsx.ts";
import { formatBytes } from "../util/display.ts";
import { resetWalLimitReached, walLimitReached } from "../util/io-pressure.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { VERSION } from "../version.ts";
import type { CheckpointJob, FinishResult, RangeJob, RangeResult, SampleJob, SnapshotSpec } from "./jobs.ts";
import { locateSegments, locationAt, packsOf, patchedTable, type PreviousCheckpoint, type SegmentLocation, type SegmentPlace, segmentPacksOf, segmentRef, type SegmentTable } from "./segments.ts";
import { pinSnapshot } from "./snapshot.ts";
import type { LogPosition } from "../store/log.ts";

/**
 * Blocks per unit of work handed to a worker (8 MiB of database at 8 KiB blocks): whole
 * segments, since each worker hashes and stores the segments of its ranges.
 */
const RANGE_SEGMENTS = 4;
const RANGE_BLOCKS = RANGE_SEGMENTS * SEGMENT_BLOCKS;
/** Blocks the change tracking calls unchanged that are read anyway, to prove it right. */
const SAMPLE_BLOCKS = 64;

export interface WalPauser {
  pause(): Promise<PausedFolds>;
}

export interface CheckpointOptions {
  storeDir: string;
  nodeId: string;
  /** The node's descriptors of its database files: every read of them goes through these. */
  live: LiveFiles;
  wal: WalPauser;
  /** The pages changed since the store's last checkpoint, for the node's own store (else everything is read). */
  tracker?: ChangeTracker;
  /** WAL shipping into this store: the checkpoint records where its image stands in the log. */
  shipper?: { beforePin(): LogPosition };
  workers: number;
  sync: boolean;
  compression: "none" | "zstd";
  /** Total write rate limit across workers; 0 = none. */
  writeBytesPerSec: number;
  /** Past this many bytes of WAL (commitPressure), stop giving way to commits; 0 or absent = never stop. */
  maxPacedWalBytes?: number;
  /** The node's commit times (util/io-pressure.ts): reading and writing slow down while commits do. */
  commitPressure?: SharedArrayBuffer;
  /** Encrypt the store with this key (a new one is made encrypted; an existing one must be). */
  keyFile?: KeyFile;
  logger: Logger;
  signal?: AbortSignal;
  /**
   * Workers kept by the caller between checkpoints (a node keeps its own): warm workers take
   * an incremental checkpoint in ~60% of the time fresh ones do, which spend it compiling their
   * hot loop again. Used if alive; terminated if the checkpoint fails or is cancelled (the
   * caller then makes new ones). Without it the checkpoint makes its own and ends them.
   */
  pool?: WorkerPool;
  /** Kept by the caller between checkpoints: the newest checkpoint of the store, read and updated here. */
  cache?: { current?: PreviousCheckpoint };
  /** Called as blocks are read: bytes done of total. */
  onProgress?: (done: number, total: number) => void;
  /** Files carried with the checkpoint (checkpoint_config.include_files): read at its start. */
  includeFiles?: readonly string[];
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
  /** How the changes were found: only the changed pages read ("changes"), or every block ("full"). */
  scan: "changes" | "full";
  /** Why every block was read, when it was. */
  scanReason?: string;
  /** Bytes of the database read for it. */
  bytesRead: number;
  files: number;
  blobCount: number;
  /** Milliseconds spent in each phase, in order (for logs and the bench). */
  phases: Record<string, number>;
  /** Whether a WAL fold of the node's was still running beside the pin (its writes and fsync share the disk with the checkpoint's). */
  walFoldAtPin: boolean;
  /** The ranges built, and the workers' milliseconds in each part of them, summed (range-job.ts). */
  rangeMs: Record<string, number>;
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

/** What reading the image gave (2-3). */
interface ImageRead {
  spec: SnapshotSpec;
  /** The new checkpoint's segments: digest and place each. */
  segments: string[];
  /** Where they are (SegmentTable: columns, as the manifest and the next checkpoint take them). */
  table: SegmentTable;
  totals: { blob_count: number; blob_bytes: number };
  changes?: TakenChanges;
  scan: "changes" | "full";
  scanReason?: string;
  newBlocks: number;
  rehashed: number;
  bytesRead: number;
  logPosition?: LogPosition;
  walFoldAtPin: boolean;
  rangeMs: Record<string, number>;
}

export async function takeCheckpoint(o: CheckpointOptions): Promise<CheckpointResult> {
  const phases = new Phases();
  const started = new Date();
  const store = LocalStore.openForWrite(o.storeDir, o.nodeId, o.logger, o.keyFile);
  const storeKey = `${o.storeDir} ${seedDigest(store.info.quick_hash_seed!)}`;
  const pool = o.pool?.alive ? o.pool : new WorkerPool(Math.max(1, o.workers));
  let keepPool = false;
  const cancelled = () => (o.signal?.reason instanceof CairnError ? o.signal.reason : new CairnError("E_CANCELLED", "checkpoint cancelled"));
  const onAbort = () => pool.terminate(cancelled());
  o.signal?.addEventListener("abort", onAbort);
  let published = false;
  let image: ImageRead | undefined;
  try {
    if (o.signal?.aborted) throw cancelled();
    // first: a listed file that cannot be read fails the checkpoint before any work, with its name
    const carried = (o.includeFiles ?? []).length > 0 ? readIncludeFiles(o.includeFiles!).map((f) => includedObject(f, store.keys)) : [];
    const id = await store.nextId();
    const prev = await previousCheckpoint(o, store, pool, id - 1);
    phases.mark("load_store");
    await startWorkers(o, store, pool);
    phases.mark("start_workers");
    image = await readImage(o, store, pool, prev, storeKey, phases);
    crashPoint("checkpoint:blocks-read");
    const walAtLimit = o.commitPressure ? walLimitReached(o.commitPressure) : 0;
    if (walAtLimit > 0) {
      o.logger.warn(
        `checkpoint ${id}: the WAL grew to ${formatBytes(walAtLimit)} under its snapshot (past max_paced_wal_bytes, ${formatBytes(o.maxPacedWalBytes ?? 0)}): it stopped giving way to writes, to end its snapshot sooner`,
      );
    }
    phases.mark("read_blocks");

    // 4. close, publish and sync the packs
    const written = await publishPacks(o, store, pool);
    phases.mark("publish_packs");
    if (o.signal?.aborted) throw cancelled();

    // 5. the manifest, last: it names exactly the packs its segments and their blocks are in
    const table = image.table;
    const imageBytes = image.spec.pageCount * image.spec.pageSize;
    const blockCount = Math.ceil(imageBytes / store.info.block_size);
    const created = new Date().toISOString();
    const packs = packsOf(table);
    const newBytes = written.reduce((s, p) => s + p.packBytes + p.indexBytes, 0);
    // the carried files, each stored once per content, before the manifest that names them
    for (const c of carried) await store.writeObjectOnce(c.path, c.stored);
    crashPoint("checkpoint:before-manifest");
    const manifestWritten = await store.writeManifest({
      format: 1,
      id,
      node_id: o.nodeId,
      created,
      cairn_version: VERSION,
      page_size: image.spec.pageSize,
      page_count: image.spec.pageCount,
      db_size_bytes: imageBytes,
      block_size: store.info.block_size,
      block_count: blockCount,
      segment_blocks: SEGMENT_BLOCKS,
      segments: image.segments,
      packs,
      segment_packs: segmentPacksOf(table, packs),
      db_totals: image.totals,
      stats: {
        started: started.toISOString(),
        duration_ms: Math.round(performance.now() - phases.t0),
        logical_bytes: imageBytes,
        new_blocks: image.newBlocks,
        new_bytes: newBytes,
        blocks_rehashed: image.rehashed,
        scan: image.scan,
        read_bytes: image.bytesRead,
      },
      ...(image.logPosition ? { log: image.logPosition } : {}),
      ...(store.keys ? { key_generation: store.keys.current.generation } : {}),
      ...(carried.length > 0 ? { files: carried.map((c) => c.entry) } : {}),
    });
    const manifestBytes = manifestWritten.bytes;
    published = true;
    image.changes?.commit(storeKey, id);
    crashPoint("checkpoint:after-manifest");
    phases.mark("manifest");
    if (o.cache) {
      o.cache.current = {
        dir: o.storeDir,
        manifest: manifestWritten.manifest,
        locations: table,
      };
    }
    keepPool = true;
    o.logger.debug(`checkpoint ${id} phases (ms): ${Object.entries(phases.ms).map(([k, v]) => `${k} ${v}`).join(", ")}; in its ranges: ${Object.entries(image.rangeMs).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    return {
      id,
      dir: o.storeDir,
      created,
      durationMs: performance.now() - phases.t0,
      logicalBytes: imageBytes,
      newBlocks: image.newBlocks,
      newBytes: newBytes + manifestBytes,
      rehashed: image.rehashed,
      scan: image.scan,
      scanReason: image.scanReason,
      bytesRead: image.bytesRead,
      files: packs.length * 2 + 1,
      blobCount: image.totals.blob_count,
      phases: phases.ms,
      walFoldAtPin: image.walFoldAtPin,
      rangeMs: image.rangeMs,
    };
  } catch (e) {
    if (!published) {
      image?.changes?.abandon();
      discardTmp(store.tmpDir);
    }
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

/** 1. The store's newest checkpoint (`id`), to build on: from the node's cache, or located by a worker. */
async function previousCheckpoint(o: CheckpointOptions, store: LocalStore, pool: WorkerPool, id: number): Promise<PreviousCheckpoint | undefined> {
  if (id < 1 || !(await store.reader.manifestIds()).includes(id)) return undefined;
  // a rotated key: nothing of the old generation is built on, so once the older checkpoints expire no block is left under it
  const g = store.keys?.current.generation;
  const rotated = (m: Manifest) => {
    if (g === undefined || m.key_generation === g) return false;
    o.logger.info(`the store's key was rotated (now generation ${g}): checkpoint ${id + 1} seals every block again under the new key`);
    return true;
  };
  const cached = o.cache?.current;
  if (cached && cached.dir === o.storeDir && cached.manifest.id === id) return rotated(cached.manifest) ? undefined : cached;
  if (g !== undefined && rotated(await store.reader.manifest(id))) return undefined;
  try {
    return await locateSegments(pool, o.storeDir, id, store.keys?.spec);
  } catch (e) {
    if (e instanceof CairnError && (e.code === "E_CANCELLED" || e.code === "E_WORKER")) throw e;
    o.logger.warn(`checkpoint ${id} cannot be built on (${errorMessage(e)}); every block is read and stored again`);
    return undefined;
  }
}

async function startWorkers(o: CheckpointOptions, store: LocalStore, pool: WorkerPool): Promise<void> {
  if (o.commitPressure) resetWalLimitReached(o.commitPressure);
  const init: CheckpointJob = {
    job: "checkpoint",
    op: "init",
    storeDir: o.storeDir,
    tmpDir: store.tmpDir,
    blockSize: store.info.block_size,
    seed: store.info.quick_hash_seed!,
    compression: o.compression,
    sync: o.sync,
    packTargetBytes: Number(process.env[PACK_TARGET_ENV]) > 0 ? Number(process.env[PACK_TARGET_ENV]) : PACK_TARGET_BYTES,
    writeBytesPerSec: o.writeBytesPerSec > 0 ? Math.max(1, Math.floor(o.writeBytesPerSec / pool.size)) : 0,
    maxPacedWalBytes: o.maxPacedWalBytes ?? 0,
    commitPressure: o.commitPressure,
    keys: store.keys?.spec,
  };
  await pool.all(init);
}

/** 2-3. Pin the snapshot and take the changes, have the workers build what changed, release. */
async function readImage(
  o: CheckpointOptions,
  store: LocalStore,
  pool: WorkerPool,
  prev: PreviousCheckpoint | undefined,
  storeKey: string,
  phases: Phases,
): Promise<ImageRead> {
  const folds = await o.wal.pause();
  let pinned: ReturnType<typeof pinSnapshot> | undefined;
  let changes: TakenChanges | undefined;
  try {
    // the log position first: what it names is in the image (a commit by another program in
    // between is in the image too, and shipped after it: applying its pages again changes nothing)
    const logPosition = o.shipper?.beforePin();
    pinned = pinSnapshot(o.live, folds.folding);
    const walFoldAtPin = folds.folding !== undefined;
    // the same instant as the pin: no commit can come in between (same thread)
    changes = o.tracker?.take(storeKey, prev?.manifest.id, pinned.walHeader, walFoldAtPin);
    if (walFoldAtPin) o.logger.debug("checkpoint pinned beside a running WAL fold (passive)");
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
    await pool.all<void, CheckpointJob>({ job: "checkpoint", op: "snapshot", spec });
    phases.mark("pin_and_scan_wal");
    await pausePoint("checkpoint:pinned");
    const blockSize = store.info.block_size;
    let changed = changes?.pages && prev ? changedBlocks(changes.pages, spec, blockSize, prev) : undefined;
    let scanReason = changed ? undefined : !prev ? "the store has no checkpoint to build on" : (changes?.fallback ?? "the changes are not tracked for this store");
    // a few blocks the tracking calls unchanged: asked for now, checked once the changed ranges are built
    const sample = changed && prev ? sampleUnchanged(changed, spec, blockSize, prev) : undefined;
    if (sample) await pool.call(0, { ...sample, op: "prefetchSample" } satisfies SampleJob);
    if (scanReason) o.logger.info(`checkpoint reads the whole database: ${scanReason}`);
    let built = await buildRanges(pool, spec, blockSize, prev, changed, o.onProgress);
    phases.mark("build_ranges");
    if (sample) {
      const wrong = (await pool.call<number[]>(0, sample))[0];
      phases.mark("check_sample");
      if (wrong !== undefined) {
        o.logger.error(`the change tracking missed a change (block ${wrong} differs from checkpoint ${prev!.manifest.id}); this checkpoint reads every block`);
        scanReason = `the change tracking missed a change at block ${wrong}`;
        changed = undefined;
        // what the changed ranges stored is found again in this checkpoint's own blocks
        const partial = built;
        built = await buildRanges(pool, spec, blockSize, prev, undefined, o.onProgress);
        built.bytesRead += partial.bytesRead;
      }
    }
    await pinned.checkGuard();
    return { spec, totals: pinned.totals, changes, scan: changed ? "changes" : "full", scanReason, logPosition, walFoldAtPin, ...built };
  } catch (e) {
    changes?.abandon();
    throw e;
  } finally {
    pinned?.release();
    folds.resume();
  }
}

/**
 * Which blocks hold a changed page: a bit per block. A block past the previous checkpoint's
 * last one, and the image's last block when its size changed, count as changed too.
 */
function changedBlocks(pages: Uint8Array, spec: SnapshotSpec, blockSize: number, prev: PreviousCheckpoint): Uint8Array {
  const imageBytes = spec.pageCount * spec.pageSize;
  const blockCount = Math.ceil(imageBytes / blockSize);
  const out = new Uint8Array(Math.ceil(blockCount / 8));
  const mark = (b: number) => {
    if (b < blockCount) out[b >>> 3]! |= 1 << (b & 7);
  };
  for (let i = 0; i < pages.length; i++) {
    if (pages[i] === 0) continue;
    for (let k = 0; k < 8; k++) {
      if ((pages[i]! & (1 << k)) === 0) continue;
      // page (i * 8 + k + 1) covers these bytes, in one block or (pages larger than blocks) several
      const start = (i * 8 + k) * spec.pageSize;
      for (let b = Math.floor(start / blockSize); b <= Math.floor((start + spec.pageSize - 1) / blockSize); b++) mark(b);
    }
  }
  for (let b = prev.manifest.block_count; b < blockCount; b++) mark(b);
  if (imageBytes !== prev.manifest.db_size_bytes && blockCount > 0) {
    mark(blockCount - 1);
    mark(Math.min(blockCount, prev.manifest.block_count) - 1);
  }
  return out;
}

const isSet = (bits: Uint8Array, b: number) => (bits[b >>> 3]! & (1 << (b & 7))) !== 0;

/** A few blocks the tracking calls unchanged, spread over the image, to compare with the previous checkpoint (undefined: none). */
function sampleUnchanged(changed: Uint8Array, spec: SnapshotSpec, blockSize: number, prev: PreviousCheckpoint): SampleJob | undefined {
  const blockCount = Math.min(prev.manifest.block_count, Math.ceil((spec.pageCount * spec.pageSize) / blockSize));
  const blocks: number[] = [];
  for (let k = 0; k < SAMPLE_BLOCKS * 4 && blocks.length < SAMPLE_BLOCKS && blockCount > 0; k++) {
    const b = Math.floor(Math.random() * blockCount);
    // a whole block (the image's and the previous checkpoint's last one may be shorter)
    if (!isSet(changed, b) && b < blockCount - 1 && !blocks.includes(b)) blocks.push(b);
  }
  if (blocks.length === 0) return undefined;
  return { job: "checkpoint", op: "sample", blocks, prev: blocks.map((b) => segmentRef(prev, Math.floor(b / SEGMENT_BLOCKS))!) };
}

/** Hand out the ranges to build to the workers; every other segment is the previous checkpoint's. */
async function buildRanges(
  pool: WorkerPool,
  spec: SnapshotSpec,
  blockSize: number,
  prev: PreviousCheckpoint | undefined,
  changed: Uint8Array | undefined,
  onProgress?: (done: number, total: number) => void,
): Promise<Pick<ImageRead, "segments" | "table" | "newBlocks" | "rehashed" | "bytesRead" | "rangeMs">> {
  const imageBytes = spec.pageCount * spec.pageSize;
  const blockCount = Math.ceil(imageBytes / blockSize);
  const segCount = Math.ceil(blockCount / SEGMENT_BLOCKS);
  const ranges = Math.ceil(blockCount / RANGE_BLOCKS);
  const incremental = changed !== undefined && prev !== undefined;
  // every segment the previous checkpoint's unless its range is rebuilt
  const segments: string[] = incremental ? prev.manifest.segments.slice(0, segCount) : new Array(segCount);
  const places: (SegmentPlace | undefined)[] = new Array(segCount);
  // the ranges with a changed block (every range without tracking); the rest are taken as they are
  const todo: number[] = [];
  for (let r = 0; r < ranges; r++) {
    let work = !incremental;
    // (a range is a whole number of bitmap bytes; no bit is set past the image's last block)
    const end = Math.ceil(Math.min(blockCount, (r + 1) * RANGE_BLOCKS) / 8);
    for (let i = (r * RANGE_BLOCKS) >>> 3; !work && i < end; i++) if (changed![i] !== 0) work = true;
    if (work) todo.push(r);
  }
  if (incremental && todo.length > 0) {
    const runs = changedRuns(changed, todo, blockCount, blockSize, imageBytes);
    // and the segment lists the ranges read back: those of the segments holding a changed block
    const lists: SegmentLocation[] = [];
    let listed = -1;
    for (let k = 0; k + 1 < runs.length; k += 2) {
      const first = Math.max(listed + 1, Math.floor(runs[k]! / blockSize / SEGMENT_BLOCKS));
      const last = Math.min(prev.manifest.segments.length - 1, Math.floor((runs[k]! + runs[k + 1]! - 1) / blockSize / SEGMENT_BLOCKS));
      for (let seg = first; seg <= last; seg++) lists.push(locationAt(prev.locations, (listed = seg)));
    }
    await pool.call(0, { job: "checkpoint", op: "prefetch", runs, lists } satisfies CheckpointJob);
  }
  let newBlocks = 0;
  let rehashed = 0;
  let bytesRead = 0;
  const rangeMs: Record<string, number> = {};
  let done = 0;
  const totalBytes = changed ? todo.length * RANGE_BLOCKS * blockSize : imageBytes;
  let next = 0;
  await Promise.all(
    Array.from({ length: pool.size }, async (_, w) => {
      while (next < todo.length) {
        const r = todo[next++]!;
        const first = r * RANGE_BLOCKS;
        const count = Math.min(RANGE_BLOCKS, blockCount - first);
        const s0 = first / SEGMENT_BLOCKS;
        const job: RangeJob = {
          job: "checkpoint",
          op: "range",
          first,
          count,
          changed: changed ? rangeBits(changed, first, count) : undefined,
          prev: Array.from({ length: Math.ceil(count / SEGMENT_BLOCKS) }, (_, k) => (prev ? segmentRef(prev, s0 + k) : null)),
          prevBlockCount: prev?.manifest.block_count ?? 0,
        };
        const res = await pool.call<RangeResult>(w, job);
        res.segments.forEach((seg, k) => {
          segments[s0 + k] = seg.digest;
          places[s0 + k] = seg.place;
        });
        newBlocks += res.newBlocks;
        rehashed += res.rehashed;
        bytesRead += res.bytesRead;
        for (const [k, v] of Object.entries(res.timers)) rangeMs[k] = (rangeMs[k] ?? 0) + v;
        done += changed ? count * blockSize : res.bytesRead;
        onProgress?.(Math.min(done, totalBytes), totalBytes);
      }
    }),
  );
  for (const k of Object.keys(rangeMs)) rangeMs[k] = Math.round(rangeMs[k]! * 10) / 10;
  const table = patchedTable(incremental ? prev.locations : undefined, places);
  return { segments, table, newBlocks, rehashed, bytesRead, rangeMs: { ranges: todo.length, ...rangeMs } };
}

/** What the ranges read ahead at most (a large change is read as it comes, not all fetched into the cache first). */
const PREFETCH_BYTES = 64 * 1024 * 1024;

/** The changed blocks of ranges `todo` as runs of the image: byte offset, length pairs, up to PREFETCH_BYTES in all. */
function changedRuns(changed: Uint8Array, todo: number[], blockCount: number, blockSize: number, imageBytes: number): Float64Array {
  const runs: number[] = [];
  let total = 0;
  for (const r of todo) {
    const last = Math.min(blockCount, (r + 1) * RANGE_BLOCKS);
    for (let b = r * RANGE_BLOCKS; b < last && total < PREFETCH_BYTES; b++) {
      if (!isSet(changed, b)) continue;
      let e = b + 1;
      while (e < last && isSet(changed, e)) e++;
      const pos = b * blockSize;
      const len = Math.min(e * blockSize, imageBytes) - pos;
      runs.push(pos, len);
      total += len;
      b = e;
    }
  }
  return new Float64Array(runs);
}

/** The bits of blocks [first, first + count) of `bits`, from bit 0. */
function rangeBits(bits: Uint8Array, first: number, count: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(count / 8));
  for (let i = 0; i < count; i++) if (isSet(bits, first + i)) out[i >>> 3]! |= 1 << (i & 7);
  return out;
}

/** 4. Workers close their packs; they are renamed into place and synced. */
async function publishPacks(o: CheckpointOptions, store: LocalStore, pool: WorkerPool): Promise<PackWritten[]> {
  const finished = await pool.all<FinishResult, CheckpointJob>({ job: "checkpoint", op: "finish" });
  crashPoint("checkpoint:packs-written");
  const written = finished.flatMap((f) => f.packs);
  const sealedApart = finished.reduce((n, f) => n + f.sealedApart, 0);
  if (sealedApart > 0) o.logger.debug(`checkpoint: ${sealedApart} block(s) sealed on threads beside the workers`);
  for (const p of written) store.publishPack(p.packId);
  crashPoint("checkpoint:packs-published");
  if (o.sync && written.length > 0) await store.syncPackDirs(written.map((p) => p.packId));
  return written;
}

function discardTmp(tmpDir: string): void {
  try {
    emptyDirNoFollow(tmpDir);
  } catch {
    // the next writer cleans up too
  }
}
