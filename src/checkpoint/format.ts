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

// ---- the format's own limits: every size read from a store is checked against them before
// anything is allocated for it, so a crafted store or archive fails cleanly, naming the file

/** A pack is closed once it holds this many blocks (so its index stays below MAX_INDEX_BYTES). */
export const PACK_MAX_ENTRIES = 1 << 20;
/** Offsets in an index are 32-bit. */
export const MAX_PACK_BYTES = 0xffffffff;
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const MAX_SEGMENT_BLOCKS = 65536;
/** The largest thing stored as one block: a data block, or a segment (40 bytes an entry). */
export const MAX_BLOCK_RAW_BYTES = Math.max(MAX_BLOCK_SIZE, MAX_SEGMENT_BLOCKS * 40);
export const MAX_STORE_INFO_BYTES = 64 * 1024;
/**
 * A manifest names a 64-hex digest per segment: 256 MiB holds ~3.7 million segments, a
 * database of ~7 TiB at 8 KiB blocks.
 */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;
/** SQLite's own limit: 2^32 - 2 pages of at most 64 KiB. */
export const MAX_DB_BYTES = 0xfffffffe * 65536;

export const BLOCK_KIND_DATA = 0;
export const BLOCK_KIND_SEGMENT = 1;
export const FLAG_ZSTD = 1;

export interface StoreInfo {
  format: number;
  node_id: string;
  created: string;
  block_size: number;
  /** Seed of the quick hash (decimal string of a u64); only in the node's own local store. */
  quick_hash_seed?: string;
  /** In copies of a store (archives, remote stores): the seed's digest, never the seed. */
  quick_hash_seed_digest?: string;
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
const DIGEST_HEX_RE = /^[0-9a-f]{64}$/;
const PACK_FILE_RE = /^packs\/([0-9a-f]{2})\/([0-9a-f]{32})\.(pack|idx)$/;

/**
 * The pack a stored file belongs to (`packs/<xx>/<id>.pack` or `.idx`, with xx the id's first
 * two characters), or undefined for any other path: the one parser of pack file names.
 */
export function packFileOf(path: string): { packId: string; ext: "pack" | "idx" } | undefined {
  const m = PACK_FILE_RE.exec(path);
  if (!m || m[2]!.slice(0, 2) !== m[1]) return undefined;
  return { packId: m[2]!, ext: m[3] as "pack" | "idx" };
}

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
/** The largest index: PACK_MAX_ENTRIES entries. */
export const MAX_INDEX_BYTES = INDEX_HEADER_BYTES + PACK_MAX_ENTRIES * INDEX_ENTRY_BYTES + DIGEST_BYTES;

/**
 * Decode and check a pack index; throws E_STORE_DAMAGED naming `name` if anything is off,
 * including any entry whose offset, lengths or flags the format cannot have written.
 * `checksum: false` skips its BLAKE3 and the entry checks (for a file this process has
 * already checked).
 */
export function decodeIndex(data: Uint8Array, name: string, checksum = true): DecodedIndex {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: ${why}`);
  if (data.length < INDEX_HEADER_BYTES + DIGEST_BYTES) throw bad("index file is truncated");
  if (data.length > MAX_INDEX_BYTES) throw bad(`index is ${data.length} bytes, more than an index can be (${MAX_INDEX_BYTES})`);
  if (new TextDecoder().decode(data.subarray(0, 8)) !== INDEX_MAGIC) throw bad("not a cairn pack index (bad magic)");
  const body = data.subarray(0, data.length - DIGEST_BYTES);
  if (checksum && !equalBytes(blockDigest(body), data.subarray(data.length - DIGEST_BYTES))) throw bad("index checksum mismatch (damaged)");
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const packBytes = Number(dv.getBigUint64(8, true));
  const count = dv.getUint32(16, true);
  if (INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES + DIGEST_BYTES !== data.length) throw bad("index length does not match its entry count");
  if (packBytes < PACK_HEADER_BYTES || packBytes > MAX_PACK_BYTES) throw bad(`index says the pack is ${packBytes} bytes, which no pack can be`);
  const entries = data.subarray(INDEX_HEADER_BYTES, INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES);
  if (checksum) {
    const w = new DataView(entries.buffer, entries.byteOffset, entries.byteLength);
    for (let i = 0; i < count; i++) {
      const o = i * INDEX_ENTRY_BYTES;
      const why = entryProblem(w.getUint32(o + 32, true), w.getUint32(o + 36, true), w.getUint32(o + 40, true), w.getUint32(o + 44, true), packBytes);
      if (why) throw bad(`entry ${i} ${why}`);
    }
  }
  return { packBytes, count, entries };
}

/** What is impossible about an index entry, or undefined. */
function entryProblem(offset: number, stored: number, raw: number, flags: number, packBytes: number): string | undefined {
  if ((flags & ~(FLAG_ZSTD | 0xff00)) !== 0) return `has unknown flags ${flags.toString(16)}`;
  const kind = entryKind(flags);
  if (kind !== BLOCK_KIND_DATA && kind !== BLOCK_KIND_SEGMENT) return `has an unknown kind ${kind}`;
  if (offset < PACK_HEADER_BYTES || offset + stored > packBytes) return `lies outside its pack (offset ${offset}, ${stored} bytes)`;
  if (raw === 0 || raw > MAX_BLOCK_RAW_BYTES) return `declares ${raw} bytes, more than a block can hold`;
  // a block is stored compressed only when that makes it smaller
  if ((flags & FLAG_ZSTD) === 0 ? stored !== raw : stored === 0 || stored > raw) return `has a stored length ${stored} that does not fit its ${raw} bytes`;
  return undefined;
}

/**
 * Decompress a stored zstd block of `rawLength` bytes, allocating no more than that: the frame
 * must be one whole frame that declares exactly that content size (cairn writes every
 * compressed block so), else E_STORE_DAMAGED naming `name`. A crafted frame that would inflate
 * to gigabytes is refused before it is decoded.
 */
export function decompressBlock(stored: Uint8Array, rawLength: number, name: string, offset: number): Uint8Array {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: block at offset ${offset} ${why} (damaged)`);
  const frame = zstdFrame(bufferReader(stored), 0);
  if (typeof frame === "string") throw bad(frame);
  if (frame.bytes !== stored.length) throw bad("is not one zstd frame");
  if (frame.contentSize !== rawLength) throw bad(`declares ${frame.contentSize ?? "no"} content size, its index ${rawLength} bytes`);
  let raw: Uint8Array;
  try {
    raw = new Uint8Array(Bun.zstdDecompressSync(stored));
  } catch {
    throw bad("does not decompress");
  }
  if (raw.length !== rawLength) throw bad("decompresses to the wrong length");
  return raw;
}

/** `n` bytes at `at` of something (a buffer, a file), or undefined where it ends before that. */
export type ByteReader = (at: number, n: number) => Uint8Array | undefined;

export function bufferReader(buf: Uint8Array): ByteReader {
  return (at, n) => (at + n <= buf.length ? buf.subarray(at, at + n) : undefined);
}

/**
 * The zstd frame at `at` (RFC 8878), walked by its headers without decoding: its length in
 * bytes and its declared content size (undefined if it declares none), or what is wrong with
 * it. Skippable frames are walked too (content size 0).
 */
export function zstdFrame(read: ByteReader, at: number): { bytes: number; contentSize: number | undefined } | string {
  const cut = (where: number) => `the zstd stream is cut short at byte ${where}`;
  const head = read(at, 4);
  if (!head) return cut(at);
  const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
  if (magic >= 0x184d2a50 && magic <= 0x184d2a5f) {
    const len = read(at + 4, 4);
    if (!len) return cut(at);
    const end = at + 8 + new DataView(len.buffer, len.byteOffset, 4).getUint32(0, true);
    if (end > at + 8 && !read(end - 1, 1)) return "the zstd stream is cut short in a skippable frame";
    return { bytes: end - at, contentSize: 0 };
  }
  if (magic !== 0xfd2fb528) return `not a zstd frame at byte ${at}`;
  const fhdByte = read(at + 4, 1);
  if (!fhdByte) return cut(at);
  const fhd = fhdByte[0]!;
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const hasChecksum = (fhd >> 2) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!;
  const fcsAt = at + 5 + (single ? 0 : 1) + dictBytes;
  let contentSize: number | undefined;
  if (fcsBytes > 0) {
    const f = read(fcsAt, fcsBytes);
    if (!f) return cut(at);
    const dv = new DataView(f.buffer, f.byteOffset, fcsBytes);
    contentSize = fcsBytes === 1 ? f[0]! : fcsBytes === 2 ? dv.getUint16(0, true) + 256 : fcsBytes === 4 ? dv.getUint32(0, true) : Number(dv.getBigUint64(0, true));
  }
  let p = fcsAt + fcsBytes;
  for (;;) {
    const b = read(p, 3);
    if (!b) return cut(p);
    const bh = b[0]! | (b[1]! << 8) | (b[2]! << 16);
    const type = (bh >> 1) & 3;
    if (type === 3) return `a malformed zstd block at byte ${p}`;
    const blockStart = p;
    p += 3 + (type === 1 ? 1 : bh >>> 3);
    if (!read(p - 1, 1)) return `the zstd stream is cut short in a block at byte ${blockStart}`;
    if (bh & 1) break;
  }
  if (hasChecksum) {
    p += 4;
    if (!read(p - 1, 1)) return "the zstd stream is cut short in a frame checksum";
  }
  return { bytes: p - at, contentSize };
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
  // the checksum proves only that the text is whole: every field is checked before use
  const why = manifestProblem(m);
  if (why) throw bad(`manifest ${why}`);
  return m;
}

const isCount = (n: unknown, max = Number.MAX_SAFE_INTEGER): n is number => Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) <= max;
const isPowerOfTwo = (n: unknown, min: number, max: number): n is number => isCount(n, max) && n >= min && (n & (n - 1)) === 0;
const isTime = (s: unknown): s is string => typeof s === "string" && s.length <= 64 && Number.isFinite(Date.parse(s));
const isName = (s: unknown): s is string => typeof s === "string" && /^[A-Za-z0-9._:-]{1,128}$/.test(s);

/** What is wrong with a manifest's fields (types, ranges, and how they agree), or undefined. */
function manifestProblem(m: Manifest): string | undefined {
  if (m.format !== STORE_FORMAT) return `has format ${JSON.stringify(m.format)}`;
  if (!isCount(m.id) || m.id < 1) return `has an impossible id ${JSON.stringify(m.id)}`;
  if (!isName(m.node_id)) return "has no valid node id";
  if (!isTime(m.created)) return "has no valid creation time";
  if (typeof m.cairn_version !== "string" || m.cairn_version.length > 64) return "has no valid cairn version";
  if (!isPowerOfTwo(m.page_size, 512, 65536)) return `has an impossible page size ${JSON.stringify(m.page_size)}`;
  if (!isCount(m.db_size_bytes, MAX_DB_BYTES)) return `has an impossible database size ${JSON.stringify(m.db_size_bytes)}`;
  if (!isCount(m.page_count) || m.page_count * m.page_size !== m.db_size_bytes) return "has a page count that does not match its size";
  if (!isPowerOfTwo(m.block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)) return `has an impossible block size ${JSON.stringify(m.block_size)}`;
  if (m.block_count !== Math.ceil(m.db_size_bytes / m.block_size)) return "has a block count that does not match its size";
  if (!isCount(m.segment_blocks, MAX_SEGMENT_BLOCKS) || m.segment_blocks < 1) return `has an impossible segment length ${JSON.stringify(m.segment_blocks)}`;
  if (!Array.isArray(m.segments) || m.segments.length !== Math.ceil(m.block_count / m.segment_blocks)) return "has a segment list that does not match its block count";
  for (const s of m.segments) if (typeof s !== "string" || !DIGEST_HEX_RE.test(s)) return "names a segment that is not a digest";
  if (!Array.isArray(m.packs)) return "has no pack list";
  for (const p of m.packs) if (typeof p !== "string" || !PACK_ID_RE.test(p)) return `names a pack that is not a pack id: ${JSON.stringify(String(p).slice(0, 80))}`;
  if (new Set(m.packs).size !== m.packs.length) return "names a pack twice";
  if (typeof m.db_totals !== "object" || m.db_totals === null || !isCount(m.db_totals.blob_count) || !isCount(m.db_totals.blob_bytes)) return "has no valid blob totals";
  const st = m.stats;
  if (typeof st !== "object" || st === null || !isCount(st.new_bytes) || !isCount(st.duration_ms) || !isCount(st.new_blocks) || !isCount(st.logical_bytes)) return "has no valid stats";
  return undefined;
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
  const seedOk = info.quick_hash_seed === undefined || (typeof info.quick_hash_seed === "string" && /^\d{1,20}$/.test(info.quick_hash_seed) && BigInt(info.quick_hash_seed) < 2n ** 64n);
  const seedDigestOk = info.quick_hash_seed_digest === undefined || (typeof info.quick_hash_seed_digest === "string" && DIGEST_HEX_RE.test(info.quick_hash_seed_digest));
  if (!isName(info.node_id) || !isPowerOfTwo(info.block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE) || !seedOk || !seedDigestOk || (info.quick_hash_seed === undefined && info.quick_hash_seed_digest === undefined)) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: missing or impossible fields`);
  }
  return info;
}

/**
 * The store info as it leaves the host (an archive, a remote store): the quick-hash seed is
 * replaced by its digest. The seed stays in the node's own store (owner-only), so nobody who
 * can read a bucket or a backup disk can craft blocks whose quick hash collides; the digest
 * is enough to tell two copies of one store apart from copies of another.
 */
export function storeInfoForCopy(info: StoreInfo): StoreInfo {
  const { quick_hash_seed: seed, ...rest } = info;
  return { ...rest, quick_hash_seed_digest: info.quick_hash_seed_digest ?? seedDigest(seed!) };
}

/** The digest of a quick-hash seed (what copies of a store carry). */
export function seedDigest(seed: string): string {
  return toHex(blockDigest(new TextEncoder().encode(`cairn quick-hash seed ${seed}`)));
}

/** Whether two store infos are of the same store (same seed, or the same seed digest). */
export function sameStore(a: StoreInfo, b: StoreInfo): boolean {
  const da = a.quick_hash_seed_digest ?? seedDigest(a.quick_hash_seed!);
  const db = b.quick_hash_seed_digest ?? seedDigest(b.quick_hash_seed!);
  return a.node_id === b.node_id && a.block_size === b.block_size && da === db;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
