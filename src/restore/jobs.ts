/** Messages between a restore's coordinator (rebuild.ts, restore.ts) and its workers (range-job.ts, check-job.ts). */
import type { BackendSpec } from "../store/backend.ts";
import type { KeyringSpec } from "../store/crypto.ts";

export interface RestoreInit {
  job: "restore";
  op: "init";
  /** Where the packs are read from. */
  source: BackendSpec;
  packIds: string[];
  blockSize: number;
  imageBytes: number;
  /** The image being rebuilt: each worker writes its ranges into it. */
  imageFile: string;
  /** An encrypted store's keys (never logged). */
  keys?: KeyringSpec;
}

export type RestoreJob =
  | RestoreInit
  /**
   * The tables every window is written into, shared once: the window's block list
   * (SEGMENT_ENTRY_BYTES per block) and, per block, LOC_WORDS u32 (pack number, offset, stored
   * length, raw length, flags).
   */
  | { job: "restore"; op: "tables"; list: SharedArrayBuffer; locations: SharedArrayBuffer }
  | { job: "restore"; op: "window"; firstBlock: number }
  | { job: "restore"; op: "range"; first: number; count: number }
  /** Whether an earlier run's range in the image still matches the window's digests. */
  | { job: "restore"; op: "checkRange"; first: number; count: number }
  | { job: "restore"; op: "close" };
