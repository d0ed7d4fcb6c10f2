/**
 * A checkpoint worker's job: build the block list of a range of the database image (whole
 * segments), reading only what it must. The image is the database file with the snapshot's
 * WAL frames laid over it, read through the node's own descriptors. Blocks the coordinator
 * says are unchanged (the change tracking) are taken from the previous checkpoint's segment at
 * that place without being read; blocks that are read and whose quick hash matches the
 * previous checkpoint's keep their digest; the others are hashed with BLAKE3 and, unless this
 * checkpoint stored the same block already, appended to a pack of this worker's in the store's
 * tmp/ folder (store/pack-writer.ts). Each segment is then hashed and, if it differs from the
 * previous one, stored like a block. The coordinator is create.ts.
 */
import { readSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { scanWal } from "../engine/sqlite-files.ts";
import { DigestTable } from "../store/digest-table.ts";
import { DirBackend } from "../store/dir/backend.ts";
import { StoreReader } from "../store/reader.ts";
import { packPath, SEGMENT_BLOCKS, SEGMENT_ENTRY_BYTES } from "../store/format.ts";
import { DIGEST_BYTES, fromHex, quickHash, toHex } from "../store/hash.ts";
import { BLOCK_SEAL_BYTES, StoreKeys } from "../store/crypto.ts";
import { BlockSealer } from "../store/sealer.ts";
import { BLOCK_KIND_DATA, BLOCK_KIND_SEGMENT, blockNameInto, decodeBlock, FLAG_SEALED, FLAG_ZSTD, INDEX_ENTRY_BYTES } from "../store/pack.ts";
import { PackFile, type PackWritten, syncPackFiles } from "../store/pack-writer.ts";
import { preadFully } from "../util/fsx.ts";
import { readAhead } from "../util/readahead.ts";
import { IoPacer } from "../util/io-pressure.ts";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import type { CheckpointInit, CheckpointJob, FinishResult, RangeJob, RangeResult, RangeTimers, SampleJob, SnapshotSpec } from "./jobs.ts";
import { type SegmentLocation, type SegmentPlace, type SegmentRef, UNKNOWN_PACK } from "./segments.ts";
import { blockPacksOf } from "../store/jobs.ts";

const CHUNK_BYTES = 4 * 1024 * 1024;
/** Words per block-list entry: the digest in words 0-7, the quick hash in 8-9. */
const W = SEGMENT_ENTRY_BYTES / 4;

let init: CheckpointInit | undefined;
let seed = 0n;
/** An encrypted store's keys: blocks are named by keyed digests and sealed. */
let keys: StoreKeys | undefined;
let store: DirBackend | undefined;
let reader: StoreReader | undefined;
/** The image being read; its descriptors belong to the node and are never closed here. */
let snap: SnapshotSpec | undefined;
const chunk = new Uint8Array(CHUNK_BYTES);

// ---- packs ----------------------------------------------------------------------------------

let current: PackFile | undefined;
const written: PackWritten[] = [];
/** Full packs whose last blocks are still being sealed (closed once they are written). */
const closing: PackFile[] = [];
/**
 * An encrypted store's blocks sealed on a thread of their own (store/sealer.ts), once a range
 * has at least a chunk of blocks to read; until then, and for a small checkpoint, in place.
 */
let sealer: BlockSealer | undefined;
/** This worker's packs, in order. */
const myPacks: string[] = [];
/**
 * Blocks this worker stored during this checkpoint: digest → where (an index into `stored`).
 * Bounded: past DEDUP_ENTRIES (2 GiB of new 8 KiB blocks) it starts over, so memory does not
 * grow with the database (a block it no longer remembers is stored again; the store stays
 * correct, a little larger).
 */
const DEDUP_ENTRIES = 1 << 18;
let newHere = DigestTable.create(1 << 16);

/** Where each remembered block is: STORED_WORDS words each (pack number in myPacks, offset, stored and raw length, flags). */
const STORED_WORDS = 5;
const stored = {
  words: new Uint32Array(1024 * STORED_WORDS),
  count: 0,
  add(pack: number, offset: number, length: number, raw: number, flags: number): number {
    if ((this.count + 1) * STORED_WORDS > this.words.length) {
      const grown = new Uint32Array(Math.min(DEDUP_ENTRIES, this.count * 2) * STORED_WORDS);
      grown.set(this.words);
      this.words = grown;
    }
    const o = this.count * STORED_WORDS;
    this.words.set([pack, offset, length, raw, flags], o);
    return this.count++;
  },
  packNumber(k: number): number {
    return this.words[k * STORED_WORDS]!;
  },
  location(k: number): SegmentLocation {
    const o = k * STORED_WORDS;
    const w = this.words;
    return { packId: myPacks[w[o]!]!, offset: w[o + 1]!, stored: w[o + 2]!, raw: w[o + 3]!, flags: w[o + 4]! };
  },
  clear(): void {
    this.count = 0;
  },
  /** Back to a small table (a kept worker should not hold a checkpoint's worth until the next one). */
  shrink(): void {
    this.count = 0;
    if (this.words.length > 1024 * STORED_WORDS) this.words = new Uint32Array(1024 * STORED_WORDS);
  },
};
/** Paces this worker's reads and writes (the rate limit, and giving way to the node's commits). */
let pacer: IoPacer | undefined;

function openPack(): PackFile {
  const p = new PackFile(init!.tmpDir, { sync: init!.sync, deferSync: true, onWrite: (n) => pacer?.account(n), crashPrefix: "checkpoint", keys });
  myPacks.push(p.packId);
  return p;
}

/** Whether the last storeBlock() call added the block (false: this checkpoint had stored it already). */
let lastStoreAdded = false;

/**
 * Store a block (digest: the 8 words of `dw` from word `at`) unless this checkpoint already
 * did; returns where it is (an index into `stored`). `chunkAt` is where `data` sits in the
 * read chunk (a raw block is then written from there), or -1.
 */
function storeBlock(dw: Uint32Array, at: number, data: Uint8Array, kind: number, chunkAt: number): number {
  const known = newHere.getWords(dw, at);
  lastStoreAdded = known < 0;
  if (known >= 0) return known;
  current ??= openPack();
  const p = current;
  const flags = kind << 8;
  charge("hash");
  const z = init!.compression === "zstd" ? Bun.zstdCompressSync(data, { level: 1 }) : undefined;
  charge("compress");
  let offset: number;
  let storedLength = data.length;
  let f = flags;
  if (keys) {
    // sealed around the smaller of the raw and compressed bytes, its digest as additional data
    const small = z !== undefined && z.length < data.length;
    const plain = small ? new Uint8Array(z.buffer, z.byteOffset, z.byteLength) : data;
    const digest = new Uint8Array(dw.buffer, dw.byteOffset + at * 4, DIGEST_BYTES);
    f |= FLAG_SEALED | (small ? FLAG_ZSTD : 0);
    storedLength = BLOCK_SEAL_BYTES + plain.length;
    if (sealer) {
      offset = p.reserve(dw, at, storedLength, data.length, f);
      sealer.add(p, offset, digest, plain, small ? -1 : chunkAt);
    } else {
      const [head, body] = keys.sealBlockParts(digest, plain);
      offset = p.appendParts(dw, at, head, body, data.length, f);
    }
  } else if (z && z.length < data.length) {
    offset = p.append(dw, at, new Uint8Array(z.buffer, z.byteOffset, z.byteLength), data.length, (f |= FLAG_ZSTD));
    storedLength = z.length;
  } else if (chunkAt >= 0) offset = p.appendRun(dw, at, chunk, chunkAt, chunkAt + data.length, data.length, flags);
  else offset = p.append(dw, at, data, data.length, flags);
  charge("write");
  if (newHere.size >= DEDUP_ENTRIES) {
    newHere = newHere.clear();
    stored.clear();
  }
  const k = stored.add(myPacks.length - 1, offset, storedLength, data.length, f);
  newHere = newHere.setWords(dw, at, k);
  if (p.layout.full(init!.packTargetBytes)) {
    if (p.writesPending) closing.push(p);
    else written.push(p.close());
    current = undefined;
  }
  return k;
}

/** Hand what was gathered to the sealing thread; close the full packs it has written. */
async function submitSealed(drain = false): Promise<void> {
  if (!sealer) return;
  await (drain ? sealer.drain() : sealer.submit());
  for (let i = 0; i < closing.length; ) {
    if (closing[i]!.writesPending) i++;
    else written.push(closing.splice(i, 1)[0]!.close());
  }
}

// ---- which earlier packs a kept block is in ---------------------------------------------------

/**
 * The digests of a few of the store's packs, most recently used last: a block kept from the
 * previous checkpoint is in one of its segment's packs, and a rebuilt segment names the ones
 * that still hold a block of it (so a checkpoint names exactly the packs it needs).
 */
const PACK_TABLES = 16;
const packTables = new Map<string, DigestTable>();

async function packTable(packId: string): Promise<DigestTable> {
  let t = packTables.get(packId);
  if (t) {
    packTables.delete(packId);
    packTables.set(packId, t);
    return t;
  }
  const idx = await reader!.index(packId);
  timers.indexLoads++;
  t = DigestTable.create(idx.count);
  for (let i = 0; i < idx.count; i++) t.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, i);
  packTables.set(packId, t);
  if (packTables.size > PACK_TABLES) packTables.delete(packTables.keys().next().value!);
  return t;
}

/**
 * Which of `ref`'s packs each kept block (`kept[i]` set) of a rebuilt segment is in, into
 * `packOf` (block j of the segment is block first + j of the range, its entry the words of
 * `words` there): as the previous table says (blockPackOf), else looked up in the packs'
 * indexes (a table from before it said). E_STORE_DAMAGED if a block is in none of them.
 */
async function keptBlockPacks(ref: SegmentRef, words: Uint32Array, first: number, blocks: number, kept: Uint8Array, packOf: string[], segmentIndex: number): Promise<void> {
  const candidates = ref.blockPacks;
  // the packs already found first: a segment's blocks are mostly in one or two
  const found: string[] = [];
  for (let j = 0; j < blocks; j++) {
    const i = first + j;
    if (!kept[i]) continue;
    const said = ref.blockPackOf?.[j] ?? UNKNOWN_PACK;
    const known = said !== UNKNOWN_PACK && said < candidates.length;
    if (known || candidates.length === 1) {
      packOf[j] = candidates[known ? said : 0]!;
      continue;
    }
    let where: string | undefined;
    for (let c = 0; where === undefined && c < found.length; c++) if ((await packTable(found[c]!)).getWords(words, i * W) >= 0) where = found[c];
    for (let c = 0; where === undefined && c < candidates.length; c++) {
      const p = candidates[c]!;
      if (!found.includes(p) && (await packTable(p)).getWords(words, i * W) >= 0) {
        where = p;
        found.push(p);
      }
    }
    if (where === undefined) {
      throw new CairnError("E_STORE_DAMAGED", `block ${j} of segment ${segmentIndex} of the previous checkpoint is in none of the packs it names`);
    }
    packOf[j] = where;
  }
}

// ---- where a range's time goes ---------------------------------------------------------------

/** Milliseconds of each part of the current range (and pack indexes loaded), for the checkpoint's result. */
let timers = newTimers();
function newTimers(): RangeTimers {
  return { prevEntries: 0, read: 0, hash: 0, compress: 0, write: 0, paced: 0, seal: 0, keptPacks: 0, segments: 0, indexLoads: 0 };
}
let lap = 0;
/** Charge the time since the last lap to `part`. */
function charge(part: Exclude<keyof RangeTimers, "indexLoads" | "paced">): void {
  const now = performance.now();
  timers[part] += now - lap;
  lap = now;
}

// ---- reading the image ------------------------------------------------------------------------

/**
 * Walk the database image's bytes [pos, pos + len) as the snapshot has them: `file(at, n)` for
 * each stretch the database file holds, `wal(i, from, to, skip)` for each overlaid page i (or
 * the part of it in range, `skip` bytes into the page: pages may be larger than blocks), in order. Only those stretches are read
 * from the file: at a large database the file's old copies of pages the WAL replaces are long
 * out of the page cache, and reading them would cost a disk round trip each for bytes
 * overwritten at once.
 */
function imageParts(pos: number, len: number, file: (at: number, n: number) => void, wal: (i: number, from: number, to: number, skip: number) => void): void {
  const s = snap!;
  const ps = s.pageSize;
  const end = pos + len;
  const pages = s.overlayPages;
  // the first overlaid page that ends after pos (binary search)
  const firstPage = Math.floor(pos / ps) + 1;
  let lo = 0;
  let hi = pages.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pages[mid]! < firstPage) lo = mid + 1;
    else hi = mid;
  }
  let at = pos;
  for (let i = lo; at < end; i++) {
    const pageStart = i < pages.length ? (pages[i]! - 1) * ps : end;
    const gapEnd = Math.min(end, pageStart);
    if (gapEnd > at) file(at, gapEnd - at);
    if (pageStart >= end) break;
    const from = Math.max(at, pageStart);
    const to = Math.min(end, pageStart + ps);
    wal(i, from, to, from - pageStart);
    at = to;
  }
}

/** Fill into[0, len) with the database image at byte `pos`. */
function readImage(pos: number, len: number, into: Uint8Array = chunk): Uint8Array {
  const s = snap!;
  const buf = into.subarray(0, len);
  imageParts(
    pos,
    len,
    (at, n) => {
      // zeros past the file's end: the WAL grew the image
      const got = preadFully(s.dbFd, buf, at - pos, n, at);
      if (got < n) buf.fill(0, at - pos + got, at - pos + n);
    },
    (i, from, to, skip) => {
      const n = readSync(s.walFd, buf, from - pos, to - from, s.overlayOffsets[i]! + skip);
      if (n !== to - from) throw new CairnError("E_SNAPSHOT", "the WAL changed while it was read");
    },
  );
  charge("read");
  return buf;
}

/**
 * Ask at once for the database file's part of the image's runs (byte offset, length pairs) and
 * for the previous segment lists the ranges read back: at a large database the few blocks a
 * change leaves partly old (the other page of a block with a changed page) and the lists, in
 * packs over the whole store, are each a disk round trip if read one after another.
 */
function prefetch(runs: Float64Array, lists: SegmentLocation[]): void {
  const s = snap!;
  for (let k = 0; k + 1 < runs.length; k += 2) imageParts(runs[k]!, runs[k + 1]!, (at, n) => readAhead(s.dbFd, at, n), () => {});
  for (const l of lists) store!.readAhead(packPath(l.packId), l.offset, l.stored);
}

/** The entries of a previous segment, read back from the store and checked against its digest. */
async function previousEntries(ref: SegmentRef): Promise<Uint8Array> {
  const bytes = new Uint8Array(ref.stored);
  const n = await store!.readInto(packPath(ref.packId), bytes, 0, ref.stored, ref.offset);
  const name = `${store!.location}/${packPath(ref.packId)}`;
  return decodeBlock(bytes.subarray(0, n), { digest: fromHex(ref.digest), offset: ref.offset, storedLength: ref.stored, rawLength: ref.raw, flags: ref.flags }, name, keys);
}

async function processRange(job: RangeJob): Promise<RangeResult> {
  const { first, count, changed } = job;
  timers = newTimers();
  lap = performance.now();
  const pacedBefore = pacer?.sleptMs ?? 0;
  const s = snap!;
  const bs = init!.blockSize;
  const imageBytes = s.pageCount * s.pageSize;
  const entries = new Uint8Array(count * SEGMENT_ENTRY_BYTES);
  const words = new Uint32Array(entries.buffer);
  const quick = new BigUint64Array(entries.buffer);
  // the previous checkpoint's entries for this range, where it had them (its segments may hold
  // more blocks than this range has, when the database shrank)
  const prev = new Uint8Array(job.prev.length * SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES);
  const prevWords = new Uint32Array(prev.buffer);
  const prevValid = Math.max(0, Math.min(count, job.prevBlockCount - first));
  const hasPrev = (i: number) => i < prevValid && job.prev[Math.floor(i / SEGMENT_BLOCKS)] != null;
  const mustRead = (i: number) => !changed || !hasPrev(i) || (changed[i >>> 3]! & (1 << (i & 7))) !== 0;
  const end = Math.min(first + count, Math.ceil(imageBytes / bs));
  // the segments with a block to read; every other one is the previous checkpoint's as it is,
  // taken by its digest without reading its entries back from the store (at a large store those
  // are reads from packs long out of the page cache)
  const touched = new Uint8Array(Math.ceil(count / SEGMENT_BLOCKS));
  let toRead = 0;
  for (let i = 0; i < end - first; i++) {
    if (!mustRead(i)) continue;
    touched[Math.floor(i / SEGMENT_BLOCKS)] = 1;
    toRead++;
  }
  for (const [k, ref] of job.prev.entries()) if (ref && touched[k]) store!.readAhead(packPath(ref.packId), ref.offset, ref.stored);
  for (let k = 0; k < job.prev.length; k++) {
    const ref = job.prev[k];
    if (ref && touched[k]) prev.set(await previousEntries(ref), k * SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES);
  }
  charge("prevEntries");
  // per block: kept from the previous checkpoint (1), else the pack it is in (a number in myPacks)
  const kept = new Uint8Array(count);
  const newPackOf = new Int32Array(count);
  let newBlocks = 0;
  let newBytes = 0;
  let rehashed = 0;
  let blocksRead = 0;
  let bytesRead = 0;
  const perChunk = Math.floor(CHUNK_BYTES / bs);
  // a chunk's worth to seal: worth a thread of its own (segments and compressed blocks go too)
  if (keys && !sealer && toRead >= perChunk) sealer = new BlockSealer(init!.keys!, init!.sync, CHUNK_BYTES, perChunk + 256);
  for (let b = first; b < end; ) {
    const i0 = b - first;
    if (!mustRead(i0)) {
      // unchanged since the previous checkpoint: its entry, as it was
      entries.set(prev.subarray(i0 * SEGMENT_ENTRY_BYTES, (i0 + 1) * SEGMENT_ENTRY_BYTES), i0 * SEGMENT_ENTRY_BYTES);
      kept[i0] = 1;
      b++;
      continue;
    }
    // a run of blocks to read, at most a chunk
    let e = b + 1;
    while (e < end && e - b < perChunk && mustRead(e - first)) e++;
    const pos = b * bs;
    const len = Math.min(e * bs, imageBytes) - pos;
    // room for the chunk's blocks in the job gathered (segments may be in it already)
    if (sealer && !sealer.fits(e - b, len)) await submitSealed();
    charge("hash");
    const buf = readImage(pos, len, sealer?.chunk);
    bytesRead += len;
    for (let o = 0; o < len; o += bs) {
      const i = (pos + o) / bs - first;
      const at = i * W;
      const data = buf.subarray(o, Math.min(o + bs, len));
      quick[i * 5 + 4] = quickHash(data, seed);
      blocksRead++;
      if (hasPrev(i) && words[at + 8] === prevWords[at + 8] && words[at + 9] === prevWords[at + 9]) {
        for (let k = 0; k < 8; k++) words[at + k] = prevWords[at + k]!;
        kept[i] = 1;
        continue;
      }
      blockNameInto(data, entries.subarray(i * SEGMENT_ENTRY_BYTES, i * SEGMENT_ENTRY_BYTES + DIGEST_BYTES), keys);
      rehashed++;
      newPackOf[i] = stored.packNumber(storeBlock(words, at, data, BLOCK_KIND_DATA, o));
      if (lastStoreAdded) {
        newBlocks++;
        newBytes += data.length;
      }
    }
    // the chunk is about to be refilled: what is still to be written from it goes now
    current?.flushRun();
    charge("hash");
    await submitSealed();
    charge("seal");
    b = e;
  }
  charge("hash");
  // the range's segments: each is the block list's bytes for SEGMENT_BLOCKS blocks, stored
  // like a block unless it is the previous checkpoint's segment at that place
  const blocks = end - first;
  const segCount = Math.ceil(blocks / SEGMENT_BLOCKS);
  const digests = new Uint8Array(segCount * DIGEST_BYTES);
  const digestWords = new Uint32Array(digests.buffer);
  const segments: RangeResult["segments"] = [];
  // the segments join the job gathered next (the next chunk's), so that this range's last chunk
  // is sealed while the next range is read, not waited for here
  if (sealer && !sealer.fits(segCount, segCount * SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES)) await submitSealed();
  for (let k = 0; k < segCount; k++) {
    const untouched = job.prev[k];
    if (untouched && !touched[k]) {
      segments.push({ digest: untouched.digest, place: untouched });
      continue;
    }
    const seg = entries.subarray(k * SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES, Math.min(blocks, (k + 1) * SEGMENT_BLOCKS) * SEGMENT_ENTRY_BYTES);
    blockNameInto(seg, digests.subarray(k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES), keys);
    const digest = toHex(digests.subarray(k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES));
    const ref = job.prev[k];
    if (ref && ref.digest === digest) {
      segments.push({ digest, place: ref });
      continue;
    }
    // the pack of each of its blocks: where it was stored now, or where the previous checkpoint had it
    const b0 = k * SEGMENT_BLOCKS;
    const segBlocks = Math.min(SEGMENT_BLOCKS, blocks - b0);
    const packOf: string[] = new Array(segBlocks);
    for (let j = 0; j < segBlocks; j++) if (!kept[b0 + j]) packOf[j] = myPacks[newPackOf[b0 + j]!]!;
    charge("segments");
    if (ref) await keptBlockPacks(ref, words, b0, segBlocks, kept, packOf, first / SEGMENT_BLOCKS + k);
    charge("keptPacks");
    const place: SegmentPlace = { ...stored.location(storeBlock(digestWords, k * 8, seg, BLOCK_KIND_SEGMENT, -1)), ...blockPacksOf((j) => packOf[j]!, segBlocks, SEGMENT_BLOCKS) };
    segments.push({ digest, place });
  }
  charge("segments");
  timers.paced = (pacer?.sleptMs ?? 0) - pacedBefore;
  return { segments, newBlocks, newBytes, blocksRead, rehashed, bytesRead, timers };
}

/**
 * Ask for a sample's blocks, spread over the whole image, and their segment lists, over the
 * store's packs, ahead of checkSample: at a large store they are mostly out of the page cache.
 */
function prefetchSample(job: SampleJob): void {
  const s = snap!;
  const bs = init!.blockSize;
  const imageBytes = s.pageCount * s.pageSize;
  for (let k = 0; k < job.blocks.length; k++) {
    const pos = job.blocks[k]! * bs;
    readAhead(s.dbFd, pos, Math.min(bs, imageBytes - pos));
    const ref = job.prev[k]!;
    store!.readAhead(packPath(ref.packId), ref.offset, ref.stored);
  }
}

/** The blocks of `job` that no longer hold what the previous checkpoint says (their numbers). */
async function checkSample(job: SampleJob): Promise<number[]> {
  const s = snap!;
  const bs = init!.blockSize;
  const imageBytes = s.pageCount * s.pageSize;
  const mismatched: number[] = [];
  const lists = new Map<string, Uint8Array>();
  for (let k = 0; k < job.blocks.length; k++) {
    const b = job.blocks[k]!;
    const ref = job.prev[k]!;
    let list = lists.get(ref.digest);
    if (!list) lists.set(ref.digest, (list = await previousEntries(ref)));
    const i = b % SEGMENT_BLOCKS;
    const want = new DataView(list.buffer, list.byteOffset + i * SEGMENT_ENTRY_BYTES + 32, 8).getBigUint64(0, true);
    const pos = b * bs;
    const data = readImage(pos, Math.min(bs, imageBytes - pos));
    if (quickHash(data, seed) !== want) mismatched.push(b);
  }
  return mismatched;
}

// ---- messages ---------------------------------------------------------------------------------

async function abort(): Promise<void> {
  snap = undefined;
  await sealer?.close();
  sealer = undefined;
  current?.abandon();
  current = undefined;
  for (const p of closing.splice(0)) p.abandon();
  for (const id of myPacks) {
    for (const ext of ["pack", "idx"] as const) {
      try {
        unlinkSync(join(init!.tmpDir, `${id}.${ext}`));
      } catch {}
    }
  }
  store?.close();
}

export async function checkpointJob(msg: CheckpointJob): Promise<unknown> {
  switch (msg.op) {
    case "init":
      init = msg;
      seed = BigInt(msg.seed);
      if (store?.location !== msg.storeDir) packTables.clear();
      store?.close();
      store = new DirBackend(msg.storeDir);
      keys = msg.keys ? new StoreKeys(msg.keys) : undefined;
      reader = new StoreReader(store, keys);
      // a worker may be kept for the next checkpoint: nothing of the last one carries over
      current = undefined;
      written.length = 0;
      closing.length = 0;
      await sealer?.close();
      sealer = undefined;
      myPacks.length = 0;
      newHere = newHere.capacity > (1 << 17) ? DigestTable.create(1 << 16) : newHere.clear();
      stored.shrink();
      pacer = new IoPacer(msg.commitPressure, { maxBytesPerSec: msg.writeBytesPerSec, maxPacedWalBytes: msg.maxPacedWalBytes });
      // a checkpoint is background work: the node's request thread goes first
      lowerThisThreadPriority(10);
      return;
    case "snapshot":
      snap = msg.spec;
      return;
    case "scanWal":
      return scanWal(msg.walFd, msg.shmFd, msg.walIndex);
    case "range":
      return processRange(msg);
    case "prefetchSample":
      return prefetchSample(msg);
    case "prefetch":
      return prefetch(msg.runs, msg.lists);
    case "sample":
      return checkSample(msg);
    case "finish": {
      // the descriptors stay open: they are the node's, for its whole life (engine/live-files.ts)
      snap = undefined;
      await submitSealed(true);
      const sealedApart = sealer?.sealed ?? 0;
      await sealer?.close();
      sealer = undefined;
      if (current) {
        written.push(current.close());
        current = undefined;
      }
      store?.close();
      // a kept worker should not hold a checkpoint's worth of digests until the next one
      newHere = DigestTable.create(1 << 16);
      stored.shrink();
      // every pack durable before the coordinator renames it into place
      if (init!.sync) await syncPackFiles(init!.tmpDir, written.map((w) => w.packId));
      // and what the checkpoint left in this worker's heap goes now, not at some later one's
      Bun.gc(true);
      return { packs: [...written], sealedApart } satisfies FinishResult;
    }
    case "abort":
      if (init) await abort();
      return;
  }
}
