/**
 * Where the segments of a store's newest checkpoint are (one location per segment: its pack,
 * offset, lengths and flags) and which packs each segment's blocks are in, which is all an
 * incremental checkpoint needs of the store: the segments that hold no changed block are taken
 * as they are, by digest, and only those that do are read back, patched and stored again; the
 * new checkpoint names exactly the packs its segments and their blocks are in, and for that
 * needs to know which of a rebuilt segment's packs still hold the blocks it keeps: so the table
 * says, for each block, which of its segment's packs it is in. The node keeps this between
 * checkpoints; it costs some 30 bytes a segment (a segment covers 256 blocks, 2 MiB of database
 * at 8 KiB blocks) and a byte a block (1/8192 of the database: 2 MiB at 16 GiB), kept in typed
 * columns, no object per segment. Where it is not kept (a node's first checkpoint after a
 * start, another store), a worker finds it by scanning the store's pack indexes (store/jobs.ts).
 */
import { CairnError } from "../errors.ts";
import { type Manifest, SEGMENT_BLOCKS } from "../store/format.ts";
import type { KeyringSpec } from "../store/crypto.ts";
import type { StoreReader } from "../store/reader.ts";
import { type SegmentLocation, type SegmentPlace, type StoreJob, UNKNOWN_PACK } from "../store/jobs.ts";
import type { WorkerPool } from "../util/worker-pool.ts";

export type { SegmentLocation, SegmentPlace };
export { UNKNOWN_PACK };

/** A segment to build on: its digest (hex), where it is, and where its blocks are. */
export interface SegmentRef extends SegmentPlace {
  digest: string;
}

/** The segment locations of one checkpoint, in compact columns. */
export interface SegmentTable {
  packIds: string[];
  pack: Uint32Array;
  offset: Uint32Array;
  stored: Uint32Array;
  raw: Uint32Array;
  flags: Uint32Array;
  /** Segment s's blocks are in packs blockPacks[blockPacksAt[s]] .. blockPacks[blockPacksAt[s + 1] - 1] (numbers in packIds). */
  blockPacksAt: Uint32Array;
  blockPacks: Uint32Array;
  /** Block k of segment s is in its pack blockPackOf[s * SEGMENT_BLOCKS + k] of those (a position in its list), or UNKNOWN_PACK. */
  blockPackOf: Uint8Array;
}

/** The newest checkpoint of a store, as a new checkpoint builds on it. */
export interface PreviousCheckpoint {
  dir: string;
  manifest: Manifest;
  locations: SegmentTable;
}

export function segmentRef(prev: PreviousCheckpoint, s: number): SegmentRef | null {
  if (s >= prev.manifest.segments.length) return null;
  return { digest: prev.manifest.segments[s]!, ...placeAt(prev.locations, s) };
}

/** Where segment s itself is stored. */
export function locationAt(t: SegmentTable, s: number): SegmentLocation {
  return { packId: t.packIds[t.pack[s]!]!, offset: t.offset[s]!, stored: t.stored[s]!, raw: t.raw[s]!, flags: t.flags[s]! };
}

export function placeAt(t: SegmentTable, s: number): SegmentPlace {
  const blockPacks: string[] = [];
  for (let i = t.blockPacksAt[s]!; i < t.blockPacksAt[s + 1]!; i++) blockPacks.push(t.packIds[t.blockPacks[i]!]!);
  const blockPackOf = t.blockPackOf.slice(s * SEGMENT_BLOCKS, (s + 1) * SEGMENT_BLOCKS);
  return { ...locationAt(t, s), blockPacks, blockPackOf };
}

/** Build the columns from one place per segment. */
export function segmentTable(places: SegmentPlace[]): SegmentTable {
  return patchedTable(undefined, places);
}

/**
 * The columns of a checkpoint's segments: segment s is `places[s]` where there is one, else
 * segment s of `prev` (the previous checkpoint's), copied column by column: at a large database
 * most segments are the previous ones, and no object is made for any of them. Only the packs
 * still named are kept in packIds.
 */
export function patchedTable(prev: SegmentTable | undefined, places: (SegmentPlace | undefined)[]): SegmentTable {
  const n = places.length;
  const packIds: string[] = prev ? prev.packIds.slice() : [];
  const packIndex = new Map<string, number>(packIds.map((id, i) => [id, i]));
  const number = (id: string) => {
    let p = packIndex.get(id);
    if (p === undefined) {
      p = packIds.length;
      packIds.push(id);
      packIndex.set(id, p);
    }
    return p;
  };
  const pack = new Uint32Array(n);
  const offset = new Uint32Array(n);
  const stored = new Uint32Array(n);
  const raw = new Uint32Array(n);
  const flags = new Uint32Array(n);
  const blockPacksAt = new Uint32Array(n + 1);
  // (positions in each segment's own list: the same whatever the packs are numbered)
  const blockPackOf = new Uint8Array(n * SEGMENT_BLOCKS).fill(UNKNOWN_PACK);
  if (prev) blockPackOf.set(prev.blockPackOf.subarray(0, Math.min(n * SEGMENT_BLOCKS, prev.blockPackOf.length)));
  let blockPacks = new Uint32Array(Math.max(16, (prev?.blockPacks.length ?? n) + 64));
  let total = 0;
  const push = (p: number) => {
    if (total === blockPacks.length) {
      const grown = new Uint32Array(blockPacks.length * 2);
      grown.set(blockPacks);
      blockPacks = grown;
    }
    blockPacks[total++] = p;
  };
  for (let s = 0; s < n; s++) {
    blockPacksAt[s] = total;
    const l = places[s];
    if (l) {
      pack[s] = number(l.packId);
      offset[s] = l.offset;
      stored[s] = l.stored;
      raw[s] = l.raw;
      flags[s] = l.flags;
      for (const id of l.blockPacks) push(number(id));
      if (l.blockPackOf) blockPackOf.set(l.blockPackOf.subarray(0, SEGMENT_BLOCKS), s * SEGMENT_BLOCKS);
      else blockPackOf.fill(UNKNOWN_PACK, s * SEGMENT_BLOCKS, (s + 1) * SEGMENT_BLOCKS);
    } else {
      if (!prev || s + 1 >= prev.blockPacksAt.length) throw new CairnError("E_INTERNAL", `segment ${s} is neither rebuilt nor the previous checkpoint's`);
      pack[s] = prev.pack[s]!;
      offset[s] = prev.offset[s]!;
      stored[s] = prev.stored[s]!;
      raw[s] = prev.raw[s]!;
      flags[s] = prev.flags[s]!;
      for (let i = prev.blockPacksAt[s]!; i < prev.blockPacksAt[s + 1]!; i++) push(prev.blockPacks[i]!);
    }
  }
  blockPacksAt[n] = total;
  const t: SegmentTable = { packIds, pack, offset, stored, raw, flags, blockPacksAt, blockPacks: blockPacks.slice(0, total), blockPackOf };
  return prev ? compacted(t) : t;
}

/** The same table naming only the packs it uses (the previous table's may no longer be). */
function compacted(t: SegmentTable): SegmentTable {
  const renumber = new Int32Array(t.packIds.length).fill(-1);
  for (const p of t.pack) renumber[p] = 0;
  for (const p of t.blockPacks) renumber[p] = 0;
  const packIds: string[] = [];
  t.packIds.forEach((id, i) => {
    if (renumber[i] === 0) renumber[i] = packIds.push(id) - 1;
  });
  if (packIds.length === t.packIds.length) return t;
  for (let s = 0; s < t.pack.length; s++) t.pack[s] = renumber[t.pack[s]!]!;
  for (let i = 0; i < t.blockPacks.length; i++) t.blockPacks[i] = renumber[t.blockPacks[i]!]!;
  return { ...t, packIds };
}

/** Every pack a checkpoint with these segments needs: those of the segments and of their blocks, sorted. */
export function packsOf(t: SegmentTable): string[] {
  const used = new Uint8Array(t.packIds.length);
  for (const p of t.pack) used[p] = 1;
  for (const p of t.blockPacks) used[p] = 1;
  return t.packIds.filter((_, i) => used[i]).sort();
}

/** For each segment, the numbers in `packs` (packsOf(t)) of the packs its blocks are in: the manifest's hint. */
export function segmentPacksOf(t: SegmentTable, packs: string[]): number[][] {
  const at = new Map(packs.map((p, i) => [p, i]));
  const number = t.packIds.map((id) => at.get(id) ?? -1);
  const out: number[][] = [];
  for (let s = 0; s + 1 < t.blockPacksAt.length; s++) {
    const l: number[] = [];
    for (let i = t.blockPacksAt[s]!; i < t.blockPacksAt[s + 1]!; i++) l.push(number[t.blockPacks[i]!]!);
    out.push(l.sort((a, b) => a - b));
  }
  return out;
}

/**
 * After garbage collection rewrote packs: the same segments, in the packs their blocks were
 * copied to. A segment that was in a rewritten pack is at another offset there now: it is
 * found again in the new packs' indexes (only those are read). E_STORE_DAMAGED if one is not.
 */
export async function relocateAfterRewrite(prev: PreviousCheckpoint, renamed: Map<string, string>, reader: StoreReader): Promise<void> {
  const t = prev.locations;
  const moved: number[] = [];
  t.pack.forEach((p, s) => renamed.has(t.packIds[p]!) && moved.push(s));
  t.packIds = t.packIds.map((id) => renamed.get(id) ?? id);
  if (moved.length === 0) return;
  const digests = moved.map((s) => prev.manifest.segments[s]!);
  const where = await reader.locateSome([...new Set(moved.map((s) => t.packIds[t.pack[s]!]!))], digests);
  for (const s of moved) {
    const l = where.get(prev.manifest.segments[s]!);
    if (!l || l.packId !== t.packIds[t.pack[s]!]) throw new CairnError("E_STORE_DAMAGED", `segment ${s} of checkpoint ${prev.manifest.id} is not in the pack it was copied to`);
    t.offset[s] = l.offset;
    t.stored[s] = l.storedLength;
    t.raw[s] = l.rawLength;
    t.flags[s] = l.flags;
  }
}

/** A worker finds where checkpoint `id`'s segments are (one scan of its packs' indexes). */
export async function locateSegments(pool: WorkerPool, storeDir: string, id: number, keys?: KeyringSpec): Promise<PreviousCheckpoint> {
  const job: StoreJob = { job: "store", op: "locateSegments", storeDir, manifestId: id, keys };
  const r = await pool.call<{ manifest: Manifest; locations: SegmentPlace[] }>(0, job);
  return { dir: storeDir, manifest: r.manifest, locations: segmentTable(r.locations) };
}
