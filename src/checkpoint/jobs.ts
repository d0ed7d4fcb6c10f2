/** Messages between the checkpoint coordinator (create.ts, main thread) and its workers (range-job.ts). */
import type { WalIndexHeader } from "../engine/sqlite-files.ts";
import type { PackWritten } from "../store/pack-writer.ts";

export interface CheckpointInit {
  job: "checkpoint";
  op: "init";
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

export type CheckpointJob =
  | CheckpointInit
  | { job: "checkpoint"; op: "table"; table: SharedArrayBuffer; prev: SharedArrayBuffer | null; prevBlockCount: number }
  | { job: "checkpoint"; op: "snapshot"; spec: SnapshotSpec }
  | { job: "checkpoint"; op: "scanWal"; walFd: number; shmFd: number; walIndex: WalIndexHeader }
  | { job: "checkpoint"; op: "range"; first: number; count: number }
  | { job: "checkpoint"; op: "finish" }
  | { job: "checkpoint"; op: "abort" };

export interface RangeResult {
  /** SEGMENT_ENTRY_BYTES per block: digest + quick hash. */
  entries: Uint8Array;
  /** The digests (32 bytes each) of the range's segments, in order; the range starts on a segment boundary. */
  segments: Uint8Array;
  /** The packs the range's blocks are in, each once: >= 0 a pack index of the table's pack list; < 0 the worker's own pack -(k+1). */
  packRefs: Int32Array;
  newBlocks: number;
  newBytes: number;
  rehashed: number;
  bytesRead: number;
}

export interface FinishResult {
  packs: PackWritten[];
  /** This worker's packs in order (refs -(k+1) name them). */
  myPacks: string[];
}
