/**
 * Reading a checkpoint store through a backend's random reads (a folder, S3): its info,
 * manifests, pack indexes, segments and blocks, each checked as it is read (manifest and index
 * checksums, block digests). Used by list, verify, restore and export alike.
 */
import { openStored, type StoreKeys } from "./crypto.ts";
import { CairnError } from "../errors.ts";
import { type Backend, type RandomReads, randomReadsOf } from "./backend.ts";
import { DigestTable } from "./digest-table.ts";
import {
  decodeManifest,
  decodeStoreInfo,
  type IncludedFile,
  includedPath,
  indexPath,
  type Manifest,
  MANIFEST_NAME_RE,
  manifestPath,
  MAX_MANIFEST_BYTES,
  MAX_STORE_INFO_BYTES,
  packFileOf,
  packPath,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  type StoreInfo,
} from "./format.ts";
import { fromHex } from "./hash.ts";
import { MAX_INCLUDED_STORED_BYTES, openIncluded } from "./included.ts";
import {
  type DecodedIndex,
  decodeBlock,
  decodeIndexFile,
  equalBytes,
  INDEX_ENTRY_BYTES,
  type IndexEntry,
  MAX_INDEX_BYTES,
  readIndexEntry,
} from "./pack.ts";

export interface BlockLocation extends IndexEntry {
  packId: string;
}

/** Words per block in a location table: pack number (in the list given), offset, stored length, raw length, flags. */
export const LOC_WORDS = 5;
/** Decoded pack indexes kept in memory at most (the oldest are dropped first). */
const INDEX_CACHE_BYTES = 4 * 1024 * 1024;

/**
 * How many segments a reader walking a whole checkpoint (verify, restore, export) locates at a
 * time, a multiple of `multiple`. With the manifest's segment pack hints a window reads only
 * its own segments' packs' indexes, so it stays small (memory flat whatever the size of the
 * checkpoint); without them each window scans every index, so it is at least 64 segments
 * (16 Ki blocks) and at most a sixteenth of the checkpoint (16 scans at most).
 */
export function windowSegments(m: Manifest, multiple: number): number {
  const n = m.segment_packs ? HINTED_WINDOW_SEGMENTS : Math.max(HINTED_WINDOW_SEGMENTS, Math.ceil(m.segments.length / 16));
  return Math.ceil(n / multiple) * multiple;
}
const HINTED_WINDOW_SEGMENTS = 64;

/** The numbers in m.packs of the packs the manifest's hints place segments [first, first + n)'s blocks in, ascending (none without hints). */
export function hintedPacks(m: Manifest, first: number, n: number): number[] {
  if (!m.segment_packs) return [];
  const set = new Set<number>();
  for (let s = first; s < Math.min(first + n, m.segments.length); s++) for (const p of m.segment_packs[s]!) set.add(p);
  return [...set].sort((a, b) => a - b);
}

export class StoreReader {
  private infoCache?: StoreInfo;
  private indexCache = new Map<string, DecodedIndex>();
  private indexCacheBytes = 0;
  /** Indexes whose checksum this reader has checked (a re-read need not check it again). */
  private readonly checkedIndexes = new Set<string>();
  private scanBuffer: Uint8Array = new Uint8Array(0);

  /** The backend's random reads. */
  readonly source: RandomReads;

  /** An encrypted store's opened keys (store/open.ts sets them); undefined for a plaintext store. */
  keys?: StoreKeys;

  constructor(readonly backend: Backend, keys?: StoreKeys) {
    this.keys = keys;
    this.source = randomReadsOf(backend, "reading a store at random");
  }

  get location(): string {
    return this.backend.location;
  }

  async info(): Promise<StoreInfo> {
    this.infoCache ??= decodeStoreInfo(await this.source.get(STORE_FILE, MAX_STORE_INFO_BYTES), `${this.location}/${STORE_FILE}`);
    return this.infoCache;
  }

  /** True if the location holds a store at all. */
  async exists(): Promise<boolean> {
    return (await this.source.size(STORE_FILE)) !== undefined;
  }

  /** Ids of the checkpoints whose manifests are present, ascending. */
  async manifestIds(): Promise<number[]> {
    const names = await this.source.list("manifests/");
    const ids: number[] = [];
    for (const n of names) {
      const m = MANIFEST_NAME_RE.exec(n.slice("manifests/".length));
      if (m) ids.push(Number(m[1]));
    }
    return ids.sort((a, b) => a - b);
  }

  /** Packs present in the store (those with an index). */
  async packIds(): Promise<string[]> {
    return (await this.source.list("packs/")).flatMap((f) => {
      const pf = packFileOf(f);
      return pf?.ext === "idx" ? [pf.packId] : [];
    });
  }

  async manifest(id: number): Promise<Manifest> {
    const path = manifestPath(id);
    const m = decodeManifest(openStored(await this.source.get(path, MAX_MANIFEST_BYTES), path, `${this.location}/${path}`, this.keys), `${this.location}/${path}`);
    if (m.id !== id) throw new CairnError("E_STORE_DAMAGED", `${this.location}/${path}: says it is checkpoint ${m.id}`);
    return m;
  }

  /**
   * An index for one pass over it: from the cache, or read into a buffer reused by the next
   * call (so a scan of many indexes allocates nothing), its checksum checked on first read.
   */
  private async indexForScan(packId: string): Promise<DecodedIndex> {
    const cached = this.indexCache.get(packId);
    if (cached) return cached;
    const path = indexPath(packId);
    const data = await this.source.getReusing(path, this.scanBuffer, MAX_INDEX_BYTES);
    if (data.buffer !== this.scanBuffer.buffer) this.scanBuffer = new Uint8Array(data.buffer);
    const idx = decodeIndexFile(data, `${this.location}/${path}`, path, this.keys, !this.checkedIndexes.has(packId));
    this.checkedIndexes.add(packId);
    return idx;
  }

  async index(packId: string): Promise<DecodedIndex> {
    let idx = this.indexCache.get(packId);
    if (!idx) {
      const path = indexPath(packId);
      idx = decodeIndexFile(await this.source.get(path, MAX_INDEX_BYTES), `${this.location}/${path}`, path, this.keys);
      this.checkedIndexes.add(packId);
      this.indexCache.set(packId, idx);
      this.indexCacheBytes += idx.entries.byteLength;
      // bounded: a reader walking a large store re-reads rather than holding every index
      for (const [id, old] of this.indexCache) {
        if (this.indexCacheBytes <= INDEX_CACHE_BYTES || id === packId) break;
        this.indexCache.delete(id);
        this.indexCacheBytes -= old.entries.byteLength;
      }
    }
    return idx;
  }

  /** The indexes of `packIds`, in that order, and how many entries they hold together. */
  async indexesOf(packIds: string[]): Promise<{ indexes: DecodedIndex[]; entries: number }> {
    const indexes: DecodedIndex[] = [];
    let entries = 0;
    for (const id of packIds) {
      const idx = await this.index(id);
      indexes.push(idx);
      entries += idx.count;
    }
    return { indexes, entries };
  }

  /** About how many blocks `packIds` hold together (from the sizes of their index files, in one listing). */
  async entryCounts(packIds: string[]): Promise<{ entries: number }> {
    const sizes = await this.source.listSizes("packs/");
    let entries = 0;
    for (const id of packIds) entries += Math.ceil((sizes.get(indexPath(id)) ?? 0) / INDEX_ENTRY_BYTES);
    return { entries };
  }

  /** A carried file's content (store/included.ts), fetched and checked against its name and size. */
  async carriedFile(f: IncludedFile): Promise<Uint8Array> {
    return openIncluded(await this.source.get(includedPath(f.name), MAX_INCLUDED_STORED_BYTES), f, this.keys, this.location);
  }

  /** Read one block, decompress it and check its digest. */
  async block(loc: BlockLocation): Promise<Uint8Array> {
    const path = packPath(loc.packId);
    const stored = await this.source.getRange(path, loc.offset, loc.storedLength);
    return decodeBlock(stored, loc, `${this.location}/${path}`, this.keys);
  }

  /**
   * Where the given digests are, among the given packs (the first location found wins).
   * Scans the indexes with a binary table: no per-entry allocation, whatever the pack size.
   */
  async locateSome(packIds: string[], digests: string[]): Promise<Map<string, BlockLocation>> {
    const wanted = DigestTable.create(digests.length);
    let table = wanted;
    const keys = digests.map((d) => fromHex(d));
    keys.forEach((k, i) => {
      table = table.set(k, i);
    });
    const found = new Map<string, BlockLocation>();
    const distinct = new Set(digests).size;
    for (const packId of packIds) {
      if (found.size >= distinct) break;
      const idx = await this.indexForScan(packId);
      for (let i = 0; i < idx.count && found.size < distinct; i++) {
        const w = table.getAt(idx.entries, i * INDEX_ENTRY_BYTES);
        if (w < 0 || found.has(digests[w]!)) continue;
        const e = readIndexEntry(idx, i);
        // the table keys on 16 bytes: confirm the whole digest
        if (!equalBytes(e.digest, keys[w]!)) continue;
        found.set(digests[w]!, { ...e, digest: e.digest.slice(), packId });
      }
    }
    return found;
  }

  /**
   * Where each of `count` blocks of a block list (SEGMENT_ENTRY_BYTES each) is among `packIds`:
   * LOC_WORDS u32 per block, written into `out` (a shared buffer, for workers). Memory is that
   * of the list, whatever the size of the store: the indexes are scanned, not loaded together.
   * Throws E_STORE_DAMAGED naming the first block in none of the packs. The packs numbered in
   * `first` (hintedPacks) are scanned before the others, which are scanned only if a block is
   * still not found: a wrong hint costs time, never an answer.
   */
  async locateList(
    packIds: string[],
    list: Uint8Array,
    count: number,
    out: Uint32Array,
    what: (b: number) => string,
    scratch?: DigestTable,
    first: number[] = [],
  ): Promise<void> {
    const table = scratch && scratch.capacity >= count * 2 ? scratch.clear() : DigestTable.create(count);
    for (let b = 0; b < count; b++) table.insertAt(list, b * SEGMENT_ENTRY_BYTES, b);
    let distinct = 0;
    for (let b = 0; b < count; b++) if (table.getAt(list, b * SEGMENT_ENTRY_BYTES) === b) distinct++;
    const found = new Uint8Array(count);
    let foundCount = 0;
    const early = new Set(first);
    const order = [...first, ...Array.from(packIds.keys()).filter((p) => !early.has(p))];
    for (let k = 0; k < order.length && foundCount < distinct; k++) {
      const p = order[k]!;
      const idx = await this.indexForScan(packIds[p]!);
      const dv = new DataView(idx.entries.buffer, idx.entries.byteOffset, idx.entries.byteLength);
      for (let i = 0; i < idx.count; i++) {
        const at = i * INDEX_ENTRY_BYTES;
        const w = table.getAt(idx.entries, at);
        if (w < 0 || found[w]) continue;
        // the table keys on 16 bytes: confirm the whole digest
        let same = true;
        for (let k = 0; k < 32 && same; k++) same = idx.entries[at + k] === list[w * SEGMENT_ENTRY_BYTES + k];
        if (!same) continue;
        const o = w * LOC_WORDS;
        out[o] = p;
        out[o + 1] = dv.getUint32(at + 32, true);
        out[o + 2] = dv.getUint32(at + 36, true);
        out[o + 3] = dv.getUint32(at + 40, true);
        out[o + 4] = dv.getUint32(at + 44, true);
        found[w] = 1;
        foundCount++;
      }
    }
    for (let b = 0; b < count; b++) {
      const first = table.getAt(list, b * SEGMENT_ENTRY_BYTES);
      if (!found[first]) throw new CairnError("E_STORE_DAMAGED", `${what(b)} is in none of its packs`);
      if (first !== b) out.copyWithin(b * LOC_WORDS, first * LOC_WORDS, first * LOC_WORDS + LOC_WORDS);
    }
  }

  /**
   * The entries of segments [first, first + n) of a checkpoint's block list, each segment
   * checked against its digest; `where` locates the segments (locateSome over m.segments).
   */
  async segmentEntries(m: Manifest, where: Map<string, BlockLocation>, first: number, n: number): Promise<Uint8Array> {
    const end = Math.min(m.segments.length, first + n);
    const blocks = Math.min(m.block_count, end * m.segment_blocks) - first * m.segment_blocks;
    const out = new Uint8Array(Math.max(0, blocks) * SEGMENT_ENTRY_BYTES);
    for (let s = first; s < end; s++) {
      const l = where.get(m.segments[s]!);
      if (!l) {
        throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} (${m.segments[s]!.slice(0, 16)}…) is in none of its packs`);
      }
      const seg = await this.block(l);
      const expected = Math.min(m.segment_blocks, m.block_count - s * m.segment_blocks) * SEGMENT_ENTRY_BYTES;
      if (seg.length !== expected) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} has the wrong length`);
      out.set(seg, (s - first) * m.segment_blocks * SEGMENT_ENTRY_BYTES);
    }
    return out;
  }

  /**
   * The block list of a checkpoint: SEGMENT_ENTRY_BYTES per block (digest, quick hash), read
   * from its segments, each checked against its digest.
   */
  async blockList(m: Manifest, where?: Map<string, BlockLocation>): Promise<Uint8Array> {
    return this.segmentEntries(m, where ?? (await this.locateSome(m.packs, m.segments)), 0, m.segments.length);
  }
}
