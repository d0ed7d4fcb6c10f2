/**
 * The checkpoint store's on-disk format, version 1. A store is a folder (or an archive, or an
 * S3 prefix) holding:
 *
 *   cairn-store.json            format, owner node id, block size, quick-hash seed
 *   packs/<xx>/<pack id>.pack   blocks, back to back (raw or zstd), after an 8-byte magic
 *   packs/<xx>/<pack id>.idx    the pack's index: one 48-byte entry per block, then a BLAKE3
 *                               of everything before it
 *   manifests/<id>.json         one per checkpoint: what it needs (segment digests, packs),
 *                               database size and page size, node id, time, cairn version,
 *                               and a BLAKE3 of its own text
 *   tmp/                        files being written; anything here is a leftover
 *
 * A block is BLOCK_SIZE bytes of the database image (the last one may be shorter). The list of
 * a checkpoint's blocks is cut into segments of SEGMENT_BLOCKS entries; each segment is itself
 * stored as a block (kind "segment"), so that a checkpoint of a barely changed database stores
 * only the segments that changed, not the whole list again.
 *
 * Every file is immutable once renamed into place, which is what lets the same format live in
 * a directory, a tar archive or an object store.
 */
import { CairnError } from "../errors.ts";
import { blockDigest, DIGEST_BYTES, toHex } from "./hash.ts";

export const STORE_FORMAT = 1;
export const STORE_FILE = "cairn-store.json";
export const STORE_LOCK_FILE = "cairn-store.lock";
export const PACK_MAGIC = "CAIRNPK1";
export const INDEX_MAGIC = "CAIRNIX1";
export const PACK_HEADER_BYTES = 8;
export const DEFAULT_BLOCK_SIZE = 8192;
export const SEGMENT_BLOCKS = 256;
/** A pack is closed once it holds this many bytes. */
export const PACK_TARGET_BYTES = 64 * 1024 * 1024;

export const BLOCK_KIND_DATA = 0;
export const BLOCK_KIND_SEGMENT = 1;
export const FLAG_ZSTD = 1;

export interface StoreInfo {
  format: number;
  node_id: string;
  created: string;
  block_size: number;
  /** Seed of the quick hash (decimal string of a u64). */
  quick_hash_seed: string;
}

export interface ManifestStats {
  started: string;
  duration_ms: number;
  /** Bytes of the database image (= db_size_bytes). */
  logical_bytes: number;
  new_blocks: number;
  /** Bytes this checkpoint added to the store (packs and their indexes). */
  new_bytes: number;
  blocks_rehashed: number;
}

export interface Manifest {
  format: number;
  id: number;
  node_id: string;
  created: string;
  cairn_version: string;
  page_size: number;
  page_count: number;
  db_size_bytes: number;
  block_size: number;
  block_count: number;
  segment_blocks: number;
  /** BLAKE3 of each segment, in order. */
  segments: string[];
  /** Every pack holding a block or segment this checkpoint needs. */
  packs: string[];
  db_totals: { blob_count: number; blob_bytes: number };
  stats: ManifestStats;
  /** BLAKE3 (hex) of this JSON with `checksum` set to "". */
  checksum: string;
}

// ---- paths ----------------------------------------------------------------------------------

export function packPath(packId: string): string {
  return `packs/${packId.slice(0, 2)}/${packId}.pack`;
}

export function indexPath(packId: string): string {
  return `packs/${packId.slice(0, 2)}/${packId}.idx`;
}

export function manifestPath(id: number): string {
  return `manifests/${String(id).padStart(10, "0")}.json`;
}

export const MANIFEST_NAME_RE = /^(\d{10})\.json$/;
export const PACK_ID_RE = /^[0-9a-f]{32}$/;

export function newPackId(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

// ---- index entries ---------------------------------------------------------------------------

/** One block in a pack: 32-byte digest, offset u32, stored length u32, raw length u32, flags u32. */
export const INDEX_ENTRY_BYTES = 48;
const INDEX_HEADER_BYTES = 24;

export interface IndexEntry {
  digest: Uint8Array;
  offset: number;
  storedLength: number;
  rawLength: number;
  /** bit 0: zstd; bits 8-15: kind */
  flags: number;
}

export function entryKind(flags: number): number {
  return (flags >>> 8) & 0xff;
}

/** Encode a pack index: header, entries, BLAKE3 trailer. */
export function encodeIndex(packBytes: number, entries: Uint8Array, count: number): Uint8Array {
  const out = new Uint8Array(INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES + DIGEST_BYTES);
  out.set(new TextEncoder().encode(INDEX_MAGIC), 0);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(8, BigInt(packBytes), true);
  dv.setUint32(16, count, true);
  out.set(entries.subarray(0, count * INDEX_ENTRY_BYTES), INDEX_HEADER_BYTES);
  const body = out.subarray(0, out.length - DIGEST_BYTES);
  out.set(blockDigest(body), out.length - DIGEST_BYTES);
  return out;
}

export function writeIndexEntry(buf: Uint8Array, i: number, e: IndexEntry): void {
  const o = i * INDEX_ENTRY_BYTES;
  buf.set(e.digest, o);
  const dv = new DataView(buf.buffer, buf.byteOffset);
  dv.setUint32(o + 32, e.offset, true);
  dv.setUint32(o + 36, e.storedLength, true);
  dv.setUint32(o + 40, e.rawLength, true);
  dv.setUint32(o + 44, e.flags, true);
}

export interface DecodedIndex {
  packBytes: number;
  count: number;
  /** Raw entries, INDEX_ENTRY_BYTES each. */
  entries: Uint8Array;
}

/**
 * Decode and check a pack index; throws E_STORE_DAMAGED naming `name` if anything is off.
 * `checksum: false` skips its BLAKE3 (for a file this process has already checked).
 */
export function decodeIndex(data: Uint8Array, name: string, checksum = true): DecodedIndex {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: ${why}`);
  if (data.length < INDEX_HEADER_BYTES + DIGEST_BYTES) throw bad("index file is truncated");
  if (new TextDecoder().decode(data.subarray(0, 8)) !== INDEX_MAGIC) throw bad("not a cairn pack index (bad magic)");
  const body = data.subarray(0, data.length - DIGEST_BYTES);
  if (checksum && !equalBytes(blockDigest(body), data.subarray(data.length - DIGEST_BYTES))) throw bad("index checksum mismatch (damaged)");
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const packBytes = Number(dv.getBigUint64(8, true));
  const count = dv.getUint32(16, true);
  if (INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES + DIGEST_BYTES !== data.length) throw bad("index length does not match its entry count");
  return { packBytes, count, entries: data.subarray(INDEX_HEADER_BYTES, INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES) };
}

export function readIndexEntry(idx: DecodedIndex, i: number): IndexEntry {
  const o = i * INDEX_ENTRY_BYTES;
  const dv = new DataView(idx.entries.buffer, idx.entries.byteOffset + o, INDEX_ENTRY_BYTES);
  return {
    digest: idx.entries.subarray(o, o + 32),
    offset: dv.getUint32(32, true),
    storedLength: dv.getUint32(36, true),
    rawLength: dv.getUint32(40, true),
    flags: dv.getUint32(44, true),
  };
}

// ---- segments --------------------------------------------------------------------------------

/** One segment entry: BLAKE3 digest (32) + quick hash (8). */
export const SEGMENT_ENTRY_BYTES = 40;

// ---- manifests -------------------------------------------------------------------------------

export function encodeManifest(m: Omit<Manifest, "checksum">): Uint8Array {
  const withEmpty = { ...m, checksum: "" };
  const checksum = toHex(blockDigest(new TextEncoder().encode(JSON.stringify(withEmpty))));
  return new TextEncoder().encode(`${JSON.stringify({ ...m, checksum }, null, 1)}\n`);
}

/** Parse and check a manifest; throws E_STORE_DAMAGED (or E_STORE_FORMAT) naming `name`. */
export function decodeManifest(data: Uint8Array, name: string): Manifest {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: ${why}`);
  let m: Manifest;
  try {
    m = JSON.parse(new TextDecoder().decode(data)) as Manifest;
  } catch {
    throw bad("manifest is not valid JSON (truncated or damaged)");
  }
  if (typeof m !== "object" || m === null) throw bad("manifest is not an object");
  if (typeof m.format === "number" && m.format > STORE_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `${name}: manifest format ${m.format} is newer than this cairn understands (${STORE_FORMAT})`, {
      hint: "use a newer cairn binary",
    });
  }
  const { checksum, ...rest } = m;
  const expect = toHex(blockDigest(new TextEncoder().encode(JSON.stringify({ ...rest, checksum: "" }))));
  if (checksum !== expect) throw bad("manifest checksum mismatch (damaged)");
  if (
    m.format !== STORE_FORMAT ||
    !Number.isSafeInteger(m.id) ||
    !Array.isArray(m.segments) ||
    !Array.isArray(m.packs) ||
    !Number.isSafeInteger(m.db_size_bytes) ||
    !Number.isSafeInteger(m.block_size) ||
    m.block_size <= 0 ||
    m.segments.length !== Math.ceil(m.block_count / m.segment_blocks)
  ) {
    throw bad("manifest is missing fields or they do not agree");
  }
  return m;
}

export function encodeStoreInfo(info: StoreInfo): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(info, null, 2)}\n`);
}

export function decodeStoreInfo(data: Uint8Array, name: string): StoreInfo {
  let info: StoreInfo;
  try {
    info = JSON.parse(new TextDecoder().decode(data)) as StoreInfo;
  } catch {
    throw new CairnError("E_STORE_DAMAGED", `${name}: not valid JSON (damaged)`);
  }
  if (typeof info?.format !== "number") throw new CairnError("E_STORE_DAMAGED", `${name}: no format version`);
  if (info.format > STORE_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `${name}: store format ${info.format} is newer than this cairn understands (${STORE_FORMAT})`, {
      hint: "use a newer cairn binary",
    });
  }
  if (typeof info.node_id !== "string" || !Number.isSafeInteger(info.block_size) || typeof info.quick_hash_seed !== "string") {
    throw new CairnError("E_STORE_DAMAGED", `${name}: missing fields`);
  }
  return info;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
