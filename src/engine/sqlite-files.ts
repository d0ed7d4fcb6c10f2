/**
 * Reading SQLite's WAL and its wal-index (-shm) directly, as documented in
 * https://www.sqlite.org/walformat.html and https://www.sqlite.org/fileformat2.html#walformat.
 * A snapshot is the database file with the WAL frames 1..mxFrame laid over it (the latest
 * frame of each page wins), truncated to the page count of the last commit.
 *
 * The live node's files are read through descriptors the node holds for its whole life
 * (engine/live-files.ts): these functions take descriptors and never open or close one of a
 * live database. Only scanWalRecovery, for a database no node has open, takes a path.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { CairnError } from "../errors.ts";

/** The page size in an SQLite database header (bytes 16-17; 1 means 65536). */
export function headerPageSize(header: Uint8Array): number {
  const v = (header[16]! << 8) | header[17]!;
  return v === 1 ? 65536 : v;
}

export interface WalIndexHeader {
  /** Last valid frame (a commit boundary). */
  mxFrame: number;
  /** Database size in pages as of mxFrame. */
  nPage: number;
  pageSize: number;
  /** Frames already copied into the database file by WAL checkpoints. */
  nBackfill: number;
  salt1: number;
  salt2: number;
  /** SQLite's count of commits into this wal-index (any connection's; a WAL restart keeps it). */
  iChange: number;
}

const SHM_HEADER_BYTES = 136;

/** Read the wal-index header from the descriptor of `<db>-shm`. Both copies must agree. */
export function readWalIndexHeader(shmFd: number): WalIndexHeader {
  const buf = new Uint8Array(SHM_HEADER_BYTES);
  if (readSync(shmFd, buf, 0, SHM_HEADER_BYTES, 0) !== SHM_HEADER_BYTES) throw new CairnError("E_SNAPSHOT", "the WAL index is too short");
  for (let i = 0; i < 48; i++) {
    if (buf[i] !== buf[48 + i]) throw new CairnError("E_SNAPSHOT", "the WAL index is being rewritten; try again");
  }
  // native byte order (little-endian on the machines cairn runs on)
  const dv = new DataView(buf.buffer);
  if (buf[12] !== 1) throw new CairnError("E_SNAPSHOT", "the WAL index is not initialised");
  const szPage = dv.getUint16(14, true);
  return {
    mxFrame: dv.getUint32(16, true),
    nPage: dv.getUint32(20, true),
    pageSize: szPage === 1 ? 65536 : szPage,
    // the salts are copied byte for byte from the WAL header, which is big-endian
    salt1: dv.getUint32(32, false),
    salt2: dv.getUint32(36, false),
    nBackfill: dv.getUint32(96, true),
    iChange: dv.getUint32(8, true),
  };
}

const WAL_HEADER_BYTES = 32;
const FRAME_HEADER_BYTES = 24;

const nativeLittleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Add `data` (a multiple of 8 bytes) to the running WAL checksum `s`. */
function checksum(s: [number, number], data: Uint8Array, bigEndian: boolean): void {
  let s1 = s[0];
  let s2 = s[1];
  if (bigEndian !== nativeLittleEndian && data.byteOffset % 4 === 0) {
    // words in native order: read them straight from a Uint32Array (the common case)
    const w = new Uint32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    for (let i = 0; i < w.length; i += 2) {
      s1 = (s1 + w[i]! + s2) >>> 0;
      s2 = (s2 + w[i + 1]! + s1) >>> 0;
    }
  } else {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    for (let i = 0; i < data.byteLength; i += 8) {
      s1 = (s1 + dv.getUint32(i, !bigEndian) + s2) >>> 0;
      s2 = (s2 + dv.getUint32(i + 4, !bigEndian) + s1) >>> 0;
    }
  }
  s[0] = s1;
  s[1] = s2;
}

/** The WAL's frames in bytes, all and not yet folded in, from the wal-index (undefined if it cannot be read). */
export function walFrameBytes(shmFd: number): { total: number; pending: number } | undefined {
  try {
    const h = readWalIndexHeader(shmFd);
    const frame = h.pageSize + FRAME_HEADER_BYTES;
    return { total: h.mxFrame * frame, pending: Math.max(0, h.mxFrame - h.nBackfill) * frame };
  } catch {
    return undefined;
  }
}

export interface WalOverlay {
  /** Sorted page numbers (1-based) whose latest version is in the WAL. */
  pages: Uint32Array;
  /** For each entry of `pages`, the byte offset of that page's data in the WAL file. */
  offsets: Float64Array;
  /** Database size in pages after the last commit read. */
  pageCount: number;
}

/** wal-index layout (walformat.html §2.2): 32 KiB blocks; block 0 starts with the header. */
const WALINDEX_BLOCK_WORDS = 32768 / 4;
const HASHTABLE_NPAGE = 4096;
const HASHTABLE_NPAGE_ONE = HASHTABLE_NPAGE - SHM_HEADER_BYTES / 4;

/** The word of the wal-index holding the page number of WAL frame `frame` (1-based). */
function pgnoWord(frame: number): number {
  if (frame <= HASHTABLE_NPAGE_ONE) return SHM_HEADER_BYTES / 4 + frame - 1;
  const block = Math.floor((frame + HASHTABLE_NPAGE - HASHTABLE_NPAGE_ONE - 1) / HASHTABLE_NPAGE);
  return block * WALINDEX_BLOCK_WORDS + ((frame - 1 - HASHTABLE_NPAGE_ONE) % HASHTABLE_NPAGE);
}

/**
 * The page numbers of WAL frames `from`..`to` (1-based, inclusive), read from the wal-index
 * (`-shm`) through its descriptor, one read per 32 KiB block of the index it spans. A 0 is a
 * frame the index does not name (not written yet).
 */
export function framePages(shmFd: number, from: number, to: number): Uint32Array {
  const out = new Uint32Array(Math.max(0, to - from + 1));
  let f = from;
  while (f <= to) {
    // frames of one index block are contiguous words
    const first = pgnoWord(f);
    const blockEnd = f <= HASHTABLE_NPAGE_ONE ? HASHTABLE_NPAGE_ONE : HASHTABLE_NPAGE_ONE + Math.ceil((f - HASHTABLE_NPAGE_ONE) / HASHTABLE_NPAGE) * HASHTABLE_NPAGE;
    const last = Math.min(to, blockEnd);
    const n = last - f + 1;
    const bytes = new Uint8Array(out.buffer, (f - from) * 4, n * 4);
    if (readSync(shmFd, bytes, 0, n * 4, first * 4) !== n * 4) throw new CairnError("E_SNAPSHOT", `the WAL index ends before frame ${last}`);
    f = last + 1;
  }
  return out;
}

/**
 * Where the snapshot's pages newer than the database file are: for frames nBackfill+1..mxFrame,
 * the page numbers come from the wal-index (`-shm`), as SQLite's own readers find them; frames
 * up to nBackfill are already in the database file (the node's WAL checkpoints copied them,
 * and they are paused now). Nothing but the page data is read from the WAL later, so an
 * incremental checkpoint no longer reads and checksums the whole WAL (50 ms for ~30 MB).
 * The WAL header and the last frame's header are checked against the index (magic, page
 * size, salts, page number, commit size): an index that does not describe this WAL is an
 * error, and the snapshot is refused.
 */
export function scanWal(walFd: number, shmFd: number, hdr: WalIndexHeader): WalOverlay {
  const fail = (why: string) => new CairnError("E_SNAPSHOT", `the WAL: ${why}`);
  const frameBytes = FRAME_HEADER_BYTES + hdr.pageSize;
  const frameData = (frame: number) => WAL_HEADER_BYTES + (frame - 1) * frameBytes + FRAME_HEADER_BYTES;
  const fd = walFd;
  {
    const head = new Uint8Array(WAL_HEADER_BYTES + frameBytes);
    const lastHead = head.subarray(WAL_HEADER_BYTES, WAL_HEADER_BYTES + FRAME_HEADER_BYTES);
    if (readSync(fd, head, 0, WAL_HEADER_BYTES, 0) !== WAL_HEADER_BYTES) throw fail("header is truncated");
    if (readSync(fd, lastHead, 0, FRAME_HEADER_BYTES, frameData(hdr.mxFrame) - FRAME_HEADER_BYTES) !== FRAME_HEADER_BYTES) {
      throw fail(`ends before frame ${hdr.mxFrame}`);
    }
    const hv = new DataView(head.buffer);
    const magic = hv.getUint32(0, false);
    if (magic !== 0x377f0682 && magic !== 0x377f0683) throw fail("bad magic");
    if (hv.getUint32(8, false) !== hdr.pageSize) throw fail(`page size ${hv.getUint32(8, false)} differs from the WAL index's ${hdr.pageSize}`);
    if (hv.getUint32(16, false) !== hdr.salt1 || hv.getUint32(20, false) !== hdr.salt2) throw fail("salts differ from the WAL index");
    const fv = new DataView(head.buffer, WAL_HEADER_BYTES, FRAME_HEADER_BYTES);
    if (fv.getUint32(8, false) !== hdr.salt1 || fv.getUint32(12, false) !== hdr.salt2) throw fail(`frame ${hdr.mxFrame} has a stale salt`);
    if (fv.getUint32(4, false) !== hdr.nPage) throw fail(`frame ${hdr.mxFrame} is not the commit the WAL index says it is`);

    const shm = new Uint32Array((pgnoWord(hdr.mxFrame) + 1 + WALINDEX_BLOCK_WORDS - 1) & ~(WALINDEX_BLOCK_WORDS - 1));
    const bytes = new Uint8Array(shm.buffer);
    if (readSync(shmFd, bytes, 0, bytes.length, 0) < (pgnoWord(hdr.mxFrame) + 1) * 4) throw fail("the WAL index is shorter than its header says");
    if (shm[pgnoWord(hdr.mxFrame)] !== fv.getUint32(0, false)) throw fail(`the WAL index and frame ${hdr.mxFrame} name different pages`);
    // the newest frame of each page wins
    const latest = new Map<number, number>();
    for (let f = hdr.nBackfill + 1; f <= hdr.mxFrame; f++) {
      const pgno = shm[pgnoWord(f)]!;
      if (pgno === 0) throw fail(`the WAL index has no page for frame ${f}`);
      latest.set(pgno, f);
    }
    const pageCount = hdr.nPage;
    const pages = Uint32Array.from([...latest.keys()].filter((p) => p <= pageCount)).sort();
    const offsets = Float64Array.from(pages, (p) => frameData(latest.get(p)!));
    return { pages, offsets, pageCount };
  }
}

/**
 * The committed frames of a WAL read without its index (as SQLite's recovery does): frames are
 * taken while their salts match the header's and the running checksum holds, up to the last
 * commit among them. Returns undefined if there is no usable WAL. For a database that no
 * connection of this process has open (restore's look at an existing target): it opens and
 * closes the file by path, which would drop the locks of a live connection.
 */
export function scanWalRecovery(walFile: string): WalOverlay | undefined {
  let fd: number;
  try {
    fd = openSync(walFile, "r");
  } catch {
    return undefined;
  }
  try {
    const head = new Uint8Array(WAL_HEADER_BYTES);
    if (readSync(fd, head, 0, WAL_HEADER_BYTES, 0) !== WAL_HEADER_BYTES) return undefined;
    const hv = new DataView(head.buffer);
    const magic = hv.getUint32(0, false);
    if (magic !== 0x377f0682 && magic !== 0x377f0683) return undefined;
    const bigEndian = (magic & 1) === 1;
    const pageSize = hv.getUint32(8, false);
    const salt1 = hv.getUint32(16, false);
    const salt2 = hv.getUint32(20, false);
    const s: [number, number] = [0, 0];
    checksum(s, head.subarray(0, 24), bigEndian);
    if (s[0] !== hv.getUint32(24, false) || s[1] !== hv.getUint32(28, false)) return undefined;
    const frameBytes = FRAME_HEADER_BYTES + pageSize;
    const frame = new Uint8Array(frameBytes);
    const pending = new Map<number, number>();
    const committed = new Map<number, number>();
    let pageCount = 0;
    for (let i = 0; ; i++) {
      const pos = WAL_HEADER_BYTES + i * frameBytes;
      if (readSync(fd, frame, 0, frameBytes, pos) !== frameBytes) break;
      const fv = new DataView(frame.buffer, 0, FRAME_HEADER_BYTES);
      if (fv.getUint32(8, false) !== salt1 || fv.getUint32(12, false) !== salt2) break;
      checksum(s, frame.subarray(0, 8), bigEndian);
      checksum(s, frame.subarray(FRAME_HEADER_BYTES), bigEndian);
      if (s[0] !== fv.getUint32(16, false) || s[1] !== fv.getUint32(20, false)) break;
      pending.set(fv.getUint32(0, false), pos + FRAME_HEADER_BYTES);
      const commitSize = fv.getUint32(4, false);
      if (commitSize > 0) {
        for (const [p, o] of pending) committed.set(p, o);
        pending.clear();
        pageCount = commitSize;
      }
    }
    if (pageCount === 0) return undefined;
    const pages = Uint32Array.from([...committed.keys()].filter((p) => p <= pageCount)).sort();
    return { pages, offsets: Float64Array.from(pages, (p) => committed.get(p)!), pageCount };
  } finally {
    closeSync(fd);
  }
}
