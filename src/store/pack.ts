/**
 * Packs and their indexes (format version 1):
 *
 *   <id>.pack   an 8-byte magic, then blocks back to back, each raw or zstd-compressed
 *   <id>.idx    a 24-byte header (magic, pack length, entry count), one 48-byte entry per
 *               block (BLAKE3 digest, offset, stored length, raw length, flags), then a BLAKE3
 *               of everything before it
 *
 * A block is stored compressed only when that makes it smaller, as one zstd frame that
 * declares its content size, so a reader never inflates a block past what its index says.
 * pack-writer.ts lays packs out; everything here reads, checks and encodes them.
 */
import { CairnError } from "../errors.ts";
import { MAX_BLOCK_SIZE, MAX_SEGMENT_BLOCKS, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { BLOCK_SEAL_BYTES, KEY_NEEDED_HINT, openStored, type StoreKeys } from "./crypto.ts";
import { blockDigest, blockDigestInto, DIGEST_BYTES, digestMatches, toHex } from "./hash.ts";

export const PACK_MAGIC = "CAIRNPK1";
export const INDEX_MAGIC = "CAIRNIX1";
export const PACK_HEADER_BYTES = 8;
/** A pack is closed once it holds this many bytes. */
export const PACK_TARGET_BYTES = 64 * 1024 * 1024;

/** A pack is closed once it holds this many blocks (so its index stays below MAX_INDEX_BYTES). */
export const PACK_MAX_ENTRIES = 1 << 20;
/** Offsets in an index are 32-bit. */
export const MAX_PACK_BYTES = 0xffffffff;
/** The largest thing stored as one block: a data block, or a segment (40 bytes an entry). */
export const MAX_BLOCK_RAW_BYTES = Math.max(MAX_BLOCK_SIZE, MAX_SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES);

export const BLOCK_KIND_DATA = 0;
export const BLOCK_KIND_SEGMENT = 1;
export const FLAG_ZSTD = 1;
/** The stored bytes are sealed (an encrypted store: store/crypto.ts), around raw or zstd bytes. */
export const FLAG_SEALED = 2;

// ---- index entries ---------------------------------------------------------------------------

/** One block in a pack: 32-byte digest, offset u32, stored length u32, raw length u32, flags u32. */
export const INDEX_ENTRY_BYTES = 48;
const INDEX_HEADER_BYTES = 24;

export interface IndexEntry {
  digest: Uint8Array;
  offset: number;
  storedLength: number;
  rawLength: number;
  /** bit 0: zstd; bit 1: sealed; bits 8-15: kind */
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
// (64 bytes more: what sealing adds to a stored index in an encrypted store)
export const MAX_INDEX_BYTES = INDEX_HEADER_BYTES + PACK_MAX_ENTRIES * INDEX_ENTRY_BYTES + DIGEST_BYTES + 64;

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
  if ((flags & ~(FLAG_ZSTD | FLAG_SEALED | 0xff00)) !== 0) return `has unknown flags ${flags.toString(16)}`;
  const kind = entryKind(flags);
  if (kind !== BLOCK_KIND_DATA && kind !== BLOCK_KIND_SEGMENT) return `has an unknown kind ${kind}`;
  if (offset < PACK_HEADER_BYTES || offset + stored > packBytes) return `lies outside its pack (offset ${offset}, ${stored} bytes)`;
  if (raw === 0 || raw > MAX_BLOCK_RAW_BYTES) return `declares ${raw} bytes, more than a block can hold`;
  // a block is stored compressed only when that makes it smaller; sealing adds a fixed amount
  const inner = flags & FLAG_SEALED ? stored - BLOCK_SEAL_BYTES : stored;
  if ((flags & FLAG_ZSTD) === 0 ? inner !== raw : inner <= 0 || inner > raw) return `has a stored length ${stored} that does not fit its ${raw} bytes`;
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


/**
 * A stored block's bytes as they were read: opened if sealed (with the store's keys), then
 * decompressed if needed (never to more than its index says) and checked against its digest
 * (BLAKE3, or keyed BLAKE3 in an encrypted store).
 */
export function decodeBlock(stored: Uint8Array, loc: IndexEntry, name: string, keys?: StoreKeys): Uint8Array {
  if (stored.length !== loc.storedLength) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: truncated (block at offset ${loc.offset} is cut short)`);
  }
  let inner = stored;
  if (loc.flags & FLAG_SEALED) {
    if (!keys) throw new CairnError("E_KEY_NEEDED", `${name} holds encrypted blocks`, { hint: KEY_NEEDED_HINT });
    inner = keys.openBlock(loc.digest, stored, name);
  } else if (keys) throw new CairnError("E_STORE_DAMAGED", `${name}: block at offset ${loc.offset} is not encrypted, in an encrypted store (altered)`);
  const raw = loc.flags & FLAG_ZSTD ? decompressBlock(inner, loc.rawLength, name, loc.offset) : inner;
  if (raw.length !== loc.rawLength || !isBlockNamed(raw, loc.digest, keys)) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: block ${toHex(loc.digest).slice(0, 16)}… at offset ${loc.offset} does not match its digest (damaged)`);
  }
  return raw;
}

/** The name of a block's bytes in its store: BLAKE3, keyed by the store's name key when it is encrypted. */
export function blockNameInto(data: Uint8Array, out: Uint8Array, keys?: StoreKeys): void {
  if (keys) keys.digestInto(data, out);
  else blockDigestInto(data, out);
}

const keyedScratch = new Uint8Array(DIGEST_BYTES);

/** Whether `data` is the block named `name` in its store (what verify, restore and export check every block against). */
export function isBlockNamed(data: Uint8Array, name: Uint8Array, keys?: StoreKeys): boolean {
  if (!keys) return digestMatches(data, name);
  keys.digestInto(data, keyedScratch);
  return equalBytes(keyedScratch, name);
}

/** decodeIndex of a stored index file (opened first in an encrypted store; `path` is its path in the store). */
export function decodeIndexFile(data: Uint8Array, name: string, path: string, keys: StoreKeys | undefined, checksum = true): DecodedIndex {
  return decodeIndex(openStored(data, path, name, keys), name, checksum);
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

