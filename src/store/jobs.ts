/**
 * What a store's own work looks like in a worker thread (the node never does it on its main
 * thread): finding where a checkpoint's segments are, and garbage collection.
 */
import { CairnError } from "../errors.ts";
import { type KeyringSpec, StoreKeys } from "./crypto.ts";
import { DirBackend } from "./dir/backend.ts";
import { type Manifest, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { collectGarbage, type GcOptions } from "./gc.ts";
import { hintedPacks, LOC_WORDS, StoreReader, windowSegments } from "./reader.ts";

export type StoreJob =
  | { job: "store"; op: "locateSegments"; storeDir: string; manifestId: number; keys?: KeyringSpec }
  | ({ job: "store"; op: "gc"; storeDir: string } & GcOptions);

export async function storeJob(msg: StoreJob): Promise<unknown> {
  switch (msg.op) {
    case "locateSegments":
      return locateSegments(msg.storeDir, msg.manifestId, msg.keys ? new StoreKeys(msg.keys) : undefined);
    case "gc":
      return collectGarbage(msg.storeDir, msg);
  }
}

/**
 * Checkpoint `manifestId`'s manifest, where each of its segments is, and which packs each
 * segment's blocks are in (its whole block list located, a window of segments at a time, so
 * memory stays that of a window). E_STORE_DAMAGED if a segment or block is in none of its packs.
 */
async function locateSegments(storeDir: string, manifestId: number, keys: StoreKeys | undefined): Promise<{ manifest: Manifest; locations: SegmentPlace[] }> {
  const backend = new DirBackend(storeDir);
  try {
    const reader = new StoreReader(backend, keys);
    const m = await reader.manifest(manifestId);
    const where = await reader.locateSome(m.packs, m.segments);
    const locations: SegmentPlace[] = m.segments.map((d, s) => {
      const l = where.get(d);
      if (!l) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} (${d.slice(0, 16)}…) is in none of its packs`);
      return { packId: l.packId, offset: l.offset, stored: l.storedLength, raw: l.rawLength, flags: l.flags, blockPacks: [] };
    });
    const window = windowSegments(m, 1);
    let out = new Uint32Array(0);
    for (let first = 0; first < m.segments.length; first += window) {
      const n = Math.min(window, m.segments.length - first);
      const entries = await reader.segmentEntries(m, where, first, n);
      const count = entries.length / SEGMENT_ENTRY_BYTES;
      if (out.length < count * LOC_WORDS) out = new Uint32Array(count * LOC_WORDS);
      await reader.locateList(m.packs, entries, count, out, (b) => `checkpoint ${m.id}: block ${first * m.segment_blocks + b}`, undefined, hintedPacks(m, first, n));
      for (let k = 0; k < n; k++) {
        const b0 = k * m.segment_blocks;
        const blocks = Math.min(count, (k + 1) * m.segment_blocks) - b0;
        const found = blockPacksOf((b) => m.packs[out[(b0 + b) * LOC_WORDS]!]!, blocks, m.segment_blocks);
        Object.assign(locations[first + k]!, found);
      }
    }
    return { manifest: m, locations };
  } finally {
    backend.close();
  }
}

/** Where one stored segment is. */
export interface SegmentLocation {
  packId: string;
  offset: number;
  stored: number;
  raw: number;
  flags: number;
}

/** Where one stored segment is, and the packs its blocks are in. */
export interface SegmentPlace extends SegmentLocation {
  blockPacks: string[];
  /**
   * For each of its blocks, which of blockPacks it is in (a position in that list), or
   * UNKNOWN_PACK: a segment rebuilt by the next checkpoint then needs no pack index to know
   * which of them still hold its kept blocks.
   */
  blockPackOf?: Uint8Array;
}

/** In SegmentPlace.blockPackOf: not known (the packs are then looked up in their indexes). */
export const UNKNOWN_PACK = 255;

/** The sorted packs of a segment's blocks (`packOf[b]` each, for its `blocks` blocks) and each block's position in that list. */
export function blockPacksOf(packOf: (b: number) => string, blocks: number, capacity: number): { blockPacks: string[]; blockPackOf: Uint8Array } {
  const ids = new Set<string>();
  for (let b = 0; b < blocks; b++) ids.add(packOf(b));
  const blockPacks = [...ids].sort();
  const blockPackOf = new Uint8Array(capacity).fill(UNKNOWN_PACK);
  if (blockPacks.length <= UNKNOWN_PACK) {
    const at = new Map(blockPacks.map((id, i) => [id, i]));
    for (let b = 0; b < blocks; b++) blockPackOf[b] = at.get(packOf(b))!;
  }
  return { blockPacks, blockPackOf };
}
