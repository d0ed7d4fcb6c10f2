/**
 * Reading a checkpoint store through an ObjectSource: its info, manifests, pack indexes,
 * segments and blocks, each checked as it is read (manifest and index checksums, block
 * digests). Used by list, verify, restore and export alike, whatever the backend.
 */
import { CairnError } from "../errors.ts";
import {
  decodeIndex,
  decodeManifest,
  decodeStoreInfo,
  type DecodedIndex,
  equalBytes,
  FLAG_ZSTD,
  INDEX_ENTRY_BYTES,
  type IndexEntry,
  indexPath,
  type Manifest,
  MANIFEST_NAME_RE,
  manifestPath,
  packPath,
  readIndexEntry,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  type StoreInfo,
} from "./format.ts";
import { DigestTable } from "./digest-table.ts";
import { blockDigest, fromHex, toHex } from "./hash.ts";
import type { ObjectSource } from "./objects.ts";

export interface BlockLocation extends IndexEntry {
  packId: string;
}

export class StoreReader {
  private infoCache?: StoreInfo;
  private indexCache = new Map<string, DecodedIndex>();

  constructor(readonly source: ObjectSource) {}

  get location(): string {
    return this.source.location;
  }

  async info(): Promise<StoreInfo> {
    this.infoCache ??= decodeStoreInfo(await this.source.get(STORE_FILE), `${this.location}/${STORE_FILE}`);
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

  async manifest(id: number): Promise<Manifest> {
    const path = manifestPath(id);
    const m = decodeManifest(await this.source.get(path), `${this.location}/${path}`);
    if (m.id !== id) throw new CairnError("E_STORE_DAMAGED", `${this.location}/${path}: says it is checkpoint ${m.id}`);
    return m;
  }

  async index(packId: string): Promise<DecodedIndex> {
    let idx = this.indexCache.get(packId);
    if (!idx) {
      const path = indexPath(packId);
      idx = decodeIndex(await this.source.get(path), `${this.location}/${path}`);
      this.indexCache.set(packId, idx);
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

  /** Read one block, decompress it and check its digest. */
  async block(loc: BlockLocation): Promise<Uint8Array> {
    const path = packPath(loc.packId);
    const stored = await this.source.getRange(path, loc.offset, loc.storedLength);
    return decodeBlock(stored, loc, `${this.location}/${path}`);
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
    for (const packId of packIds) {
      const idx = await this.index(packId);
      for (let i = 0; i < idx.count && found.size < digests.length; i++) {
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
   * The block list of a checkpoint: SEGMENT_ENTRY_BYTES per block (digest, quick hash), read
   * from its segments, each checked against its digest.
   */
  async blockList(m: Manifest, where?: Map<string, BlockLocation>): Promise<Uint8Array> {
    const loc = where ?? (await this.locateSome(m.packs, m.segments));
    const out = new Uint8Array(m.block_count * SEGMENT_ENTRY_BYTES);
    for (let s = 0; s < m.segments.length; s++) {
      const l = loc.get(m.segments[s]!);
      if (!l) {
        throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} (${m.segments[s]!.slice(0, 16)}…) is in none of its packs`);
      }
      const seg = await this.block(l);
      const expected = Math.min(m.segment_blocks, m.block_count - s * m.segment_blocks) * SEGMENT_ENTRY_BYTES;
      if (seg.length !== expected) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} has the wrong length`);
      out.set(seg, s * m.segment_blocks * SEGMENT_ENTRY_BYTES);
    }
    return out;
  }
}

/** Decompress a stored block if needed and check it against its digest. */
export function decodeBlock(stored: Uint8Array, loc: IndexEntry, name: string): Uint8Array {
  if (stored.length !== loc.storedLength) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: truncated (block at offset ${loc.offset} is cut short)`);
  }
  let raw = stored;
  if (loc.flags & FLAG_ZSTD) {
    try {
      raw = new Uint8Array(Bun.zstdDecompressSync(stored));
    } catch {
      throw new CairnError("E_STORE_DAMAGED", `${name}: block at offset ${loc.offset} does not decompress (damaged)`);
    }
  }
  if (raw.length !== loc.rawLength || !equalBytes(blockDigest(raw), loc.digest)) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: block ${toHex(loc.digest).slice(0, 16)}… at offset ${loc.offset} does not match its digest (damaged)`);
  }
  return raw;
}
