/** Messages between the checkpoint coordinator (main thread) and its workers. */
import type { PackSourceSpec } from "../restore/range-worker.ts";
import type { WalIndexHeader } from "./wal-format.ts";

export interface WorkerInit {
  type: "init";
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
  /** Pages whose latest version is in the WAL, and where (see wal-format.ts). */
  overlayPages: Uint32Array;
  overlayOffsets: Float64Array;
}

export type WorkerRequest =
  | (WorkerInit & { id: number })
  | { type: "table"; id: number; table: SharedArrayBuffer; prev: SharedArrayBuffer | null; prevBlockCount: number }
  | { type: "snapshot"; id: number; spec: SnapshotSpec }
  | { type: "scanWal"; id: number; walFd: number; shmFd: number; walIndex: WalIndexHeader }
  | { type: "range"; id: number; first: number; count: number }
  | { type: "finish"; id: number }
  | { type: "abort"; id: number }
  | { type: "loadIndex"; id: number; storeDir: string; packIds: string[] }
  | { type: "loadBlockList"; id: number; storeDir: string; manifestId: number }
  | {
      type: "restoreInit";
      id: number;
      /** Where the packs are read from. */
      source: PackSourceSpec;
      packIds: string[];
      blockSize: number;
      imageBytes: number;
      /** The image being rebuilt: each worker writes its ranges into it. */
      imageFile: string;
    }
  | {
      /** The tables every window is written into, shared once. */
      type: "restoreTables";
      id: number;
      /** The window's block list (SEGMENT_ENTRY_BYTES per block). */
      list: SharedArrayBuffer;
      /** Per block, LOC_WORDS u32: pack number, offset, stored length, raw length, flags. */
      locations: SharedArrayBuffer;
    }
  | { type: "restoreWindow"; id: number; firstBlock: number }
  | { type: "restoreRange"; id: number; first: number; count: number }
  | { type: "checkImageRange"; id: number; first: number; count: number }
  | { type: "integrityCheck"; id: number; file: string; full: boolean }
  | { type: "gc"; id: number; storeDir: string; minLiveFraction: number; sync: boolean; checkpointsRemoved: boolean };

export interface PackWritten {
  packId: string;
  packBytes: number;
  indexBytes: number;
  blocks: number;
}

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

export type WorkerReply =
  | { id: number; ok: true; result?: unknown }
  | { id: number; ok: false; error: string; code?: string };
