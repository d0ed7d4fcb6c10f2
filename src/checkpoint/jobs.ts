/** Messages between the checkpoint coordinator (create.ts, main thread) and its workers (range-job.ts). */
import type { WalIndexHeader } from "../engine/sqlite-files.ts";
import type { KeyringSpec } from "../store/crypto.ts";
import type { PackWritten } from "../store/pack-writer.ts";
import type { SegmentLocation, SegmentPlace, SegmentRef } from "./segments.ts";

export interface CheckpointInit {
  job: "checkpoint";
  op: "init";
  /** The store: its packs are where earlier segments are read from. */
  storeDir: string;
  /** Where this checkpoint's packs are written before they are renamed into place. */
  tmpDir: string;
  blockSize: number;
  /** Quick-hash seed, decimal. */
  seed: string;
  compression: "none" | "zstd";
  sync: boolean;
  packTargetBytes: number;
  /** Per worker; 0 = unlimited. */
  writeBytesPerSec: number;
  /** Past this many bytes of WAL, the pacer stops giving way to commits (0: never). */
  maxPacedWalBytes: number;
  /** The node's commit times, shared (util/io-pressure.ts). */
  commitPressure?: SharedArrayBuffer;
  /** An encrypted store's keys (never logged). */
  keys?: KeyringSpec;
}

/**
 * The image to read. The descriptors are the node's own (engine/live-files.ts): a worker reads
 * through them and never closes them (closing one would drop SQLite's locks on the file).
 */
export interface SnapshotSpec {
  dbFd: number;
  walFd: number;
  pageSize: number;
  pageCount: number;
  /** Pages whose latest version is in the WAL, and where (see engine/sqlite-files.ts). */
  overlayPages: Uint32Array;
  overlayOffsets: Float64Array;
}

/**
 * One range of blocks (whole segments) to build: `changed` has a bit per block of the range
 * that must be read (undefined: every block is read); the others are taken from the previous
 * checkpoint's segment at that place, `prev[k]` for the range's k-th segment (null where the
 * previous checkpoint had none).
 */
export interface RangeJob {
  job: "checkpoint";
  op: "range";
  first: number;
  count: number;
  changed?: Uint8Array;
  prev: (SegmentRef | null)[];
  /** Blocks the previous checkpoint had (its segments' last one may be shorter). */
  prevBlockCount: number;
}

/**
 * Check that blocks the change tracking calls unchanged still hold what the previous checkpoint
 * says ("sample"), having asked for them ahead ("prefetchSample": the kernel reads them while
 * the changed ranges are built).
 */
export interface SampleJob {
  job: "checkpoint";
  op: "prefetchSample" | "sample";
  blocks: number[];
  /** The previous checkpoint's segment holding each block. */
  prev: SegmentRef[];
}

export type CheckpointJob =
  | CheckpointInit
  | RangeJob
  | SampleJob
  | { job: "checkpoint"; op: "snapshot"; spec: SnapshotSpec }
  /** Ask for the image's bytes of these runs (byte offset, length pairs) and these segment lists ahead of the ranges that read them. */
  | { job: "checkpoint"; op: "prefetch"; runs: Float64Array; lists: SegmentLocation[] }
  | { job: "checkpoint"; op: "scanWal"; walFd: number; shmFd: number; walIndex: WalIndexHeader }
  | { job: "checkpoint"; op: "finish" }
  | { job: "checkpoint"; op: "abort" };

export interface RangeResult {
  /** The range's segments, in order: digest (hex), where it is stored, and where its blocks are. */
  segments: { digest: string; place: SegmentPlace }[];
  newBlocks: number;
  newBytes: number;
  /** Blocks read from the image. */
  blocksRead: number;
  /** Of those, blocks that had to be hashed (not found unchanged by their quick hash). */
  rehashed: number;
  bytesRead: number;
  timers: RangeTimers;
}

/** Where a range job's time went (milliseconds), and how many pack indexes it loaded. */
export interface RangeTimers {
  /** Reading back the previous entries of the segments with a block to read. */
  prevEntries: number;
  /** Reading the image. */
  read: number;
  /** Quick-hashing and naming blocks. */
  hash: number;
  /** Compressing new blocks. */
  compress: number;
  /** Writing new blocks into packs (pacing included). */
  write: number;
  /** Of the writes, sleeping to give way to the node's commits or the rate limit. */
  paced: number;
  /** Waiting for the sealing thread. */
  seal: number;
  /** Finding the earlier packs that hold a rebuilt segment's kept blocks. */
  keptPacks: number;
  /** Naming and storing the segments. */
  segments: number;
  /** Pack indexes loaded to find those (not a time). */
  indexLoads: number;
}

export interface FinishResult {
  packs: PackWritten[];
  /** Blocks sealed on the worker's sealing thread (store/sealer.ts) rather than in place. */
  sealedApart: number;
}
