/**
 * A checkpoint worker: reads its share of the database image (the database file with the
 * snapshot's WAL frames laid over it), hashes each block, and appends the blocks the store
 * does not hold yet to a pack of its own in the store's tmp/ folder. Also loads pack indexes
 * and block lists for the coordinator, so that no heavy work runs on the node's main thread.
 */
import { Database } from "bun:sqlite";
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { DigestTable } from "./digest-table.ts";
import {
  BLOCK_KIND_DATA,
  BLOCK_KIND_SEGMENT,
  encodeIndex,
  FLAG_ZSTD,
  INDEX_ENTRY_BYTES,
  PACK_MAGIC,
  PACK_MAX_ENTRIES,
  packPath,
  newPackId,
  SEGMENT_BLOCKS,
  SEGMENT_ENTRY_BYTES,
} from "./format.ts";
import { blockDigestInto, DIGEST_BYTES, quickHash } from "./hash.ts";
import { DirSource } from "./objects.ts";
import type { PackWritten, RangeResult, SnapshotSpec, WorkerInit, WorkerReply, WorkerRequest } from "./protocol.ts";
import { crashPoint } from "../util/crash-point.ts";
import { CREATE_EXCLUSIVE, DIR_MODE, FILE_MODE, preadFully, writeFully } from "../util/fsx.ts";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import { collectGarbage } from "./gc.ts";
import { decodeBlock, StoreReader } from "./reader.ts";
import { scanWal } from "./wal-format.ts";
import { checkImageRange, closeRestore, openRestore, restoreRange, setRestoreTables, setRestoreWindow } from "../restore/range-worker.ts";

declare const self: Worker;

const CHUNK_BYTES = 4 * 1024 * 1024;
const WRITE_BUFFER_BYTES = 1024 * 1024;

let init: WorkerInit | undefined;
let seed = 0n;
let table: DigestTable | undefined;
let prev: { words: Uint32Array; count: number } | undefined;
/** The image being read; its descriptors belong to the node and are never closed here. */
let snap: SnapshotSpec | undefined;
const chunk = new Uint8Array(CHUNK_BYTES);

// ---- packs ----------------------------------------------------------------------------------

interface OpenPack {
  packId: string;
  fd: number;
  bytes: number;
  /** Bytes written since the last fdatasync. */
  unsynced: number;
  entries: Uint8Array;
  /** `entries` as words: INDEX_ENTRY_BYTES / 4 per entry. */
  entryWords: Uint32Array;
  count: number;
  /** Payloads that are not in the read chunk (compressed blocks, segments) wait here. */
  buffer: Uint8Array;
  buffered: number;
}

const ENTRY_WORDS = INDEX_ENTRY_BYTES / 4;
let current: OpenPack | undefined;
/**
 * Raw blocks are written straight from the read chunk: the run [runStart, runEnd) of `chunk`
 * is the pack's next bytes, written before the chunk is refilled. A pack has either a pending
 * run or buffered bytes, never both, so its bytes stay in order.
 */
let runStart = 0;
let runEnd = 0;
const written: PackWritten[] = [];
/** This worker's packs, in order; refs to them are -(k+1). */
const myPacks: string[] = [];
/** Blocks this worker stored during this checkpoint: digest → -ref (binary keys, no strings per block). */
const NEW_HERE_INITIAL = 1 << 16;
let newHere = DigestTable.create(NEW_HERE_INITIAL);
/** Whether the last storeBlock() call added the block (false: an earlier block had the same content). */
let lastStoreAdded = false;
let bytesWritten = 0;
let started = performance.now();
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function tmpFile(packId: string, ext: "pack" | "idx"): string {
  return join(init!.tmpDir, `${packId}.${ext}`);
}

function writeAll(fd: number, data: Uint8Array): void {
  writeFully(fd, data);
  bytesWritten += data.length;
  const rate = init!.writeBytesPerSec;
  if (rate > 0) {
    // the I/O rate limit: sleep until the bytes written so far fit the rate
    const ahead = (bytesWritten / rate) * 1000 - (performance.now() - started);
    if (ahead > 1) Atomics.wait(sleeper, 0, 0, ahead);
  }
}

function openPack(): OpenPack {
  const packId = newPackId();
  const fd = openSync(tmpFile(packId, "pack"), CREATE_EXCLUSIVE, FILE_MODE);
  const entries = new Uint8Array(INDEX_ENTRY_BYTES * 1024);
  const p: OpenPack = {
    packId,
    fd,
    bytes: 0,
    unsynced: 0,
    entries,
    entryWords: new Uint32Array(entries.buffer),
    count: 0,
    buffer: new Uint8Array(WRITE_BUFFER_BYTES),
    buffered: 0,
  };
  const magic = new TextEncoder().encode(PACK_MAGIC);
  p.buffer.set(magic, 0);
  p.buffered = magic.length;
  p.bytes = magic.length;
  myPacks.push(packId);
  return p;
}

/**
 * With `sync`, packs are flushed to disk every SYNC_EVERY bytes rather than all at the end,
 * so that no single large flush queues ahead of the node's own commit fsyncs.
 */
const SYNC_EVERY = 8 * 1024 * 1024;

function wrote(p: OpenPack, n: number): void {
  p.unsynced += n;
  if (init!.sync && p.unsynced >= SYNC_EVERY) {
    fdatasyncSync(p.fd);
    p.unsynced = 0;
  }
}

function flushRun(p: OpenPack): void {
  if (runEnd === runStart) return;
  writeAll(p.fd, chunk.subarray(runStart, runEnd));
  wrote(p, runEnd - runStart);
  runStart = runEnd = 0;
}

function flushBuffer(p: OpenPack): void {
  if (p.buffered === 0) return;
  writeAll(p.fd, p.buffer.subarray(0, p.buffered));
  wrote(p, p.buffered);
  p.buffered = 0;
}

function closePack(p: OpenPack): void {
  flushRun(p);
  flushBuffer(p);
  if (init!.sync) fsyncSync(p.fd);
  closeSync(p.fd);
  crashPoint("checkpoint:pack-written");
  const idx = encodeIndex(p.bytes, p.entries, p.count);
  const fd = openSync(tmpFile(p.packId, "idx"), CREATE_EXCLUSIVE, FILE_MODE);
  try {
    writeAll(fd, idx);
    if (init!.sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  crashPoint("checkpoint:index-written");
  written.push({ packId: p.packId, packBytes: p.bytes, indexBytes: idx.length, blocks: p.count });
}

/**
 * Append a block the store lacks to this worker's pack; returns its ref (negative: this
 * worker's pack) and sets lastStoreAdded. The digest is the 8 words of `dw` from word `at`.
 * `chunkAt` is where `data` sits in the read chunk (raw blocks are then written from there),
 * or -1.
 */
function storeBlock(dw: Uint32Array, at: number, data: Uint8Array, kind: number, chunkAt: number): number {
  const known = newHere.getWords(dw, at);
  lastStoreAdded = known < 0;
  if (known >= 0) return -known;
  let payload = data;
  let flags = kind << 8;
  if (init!.compression === "zstd") {
    const z = Bun.zstdCompressSync(data, { level: 1 });
    if (z.length < data.length) {
      payload = new Uint8Array(z.buffer, z.byteOffset, z.byteLength);
      flags |= FLAG_ZSTD;
      chunkAt = -1;
    }
  }
  current ??= openPack();
  const p = current;
  if ((p.count + 1) * INDEX_ENTRY_BYTES > p.entries.length) {
    const grown = new Uint8Array(p.entries.length * 2);
    grown.set(p.entries);
    p.entries = grown;
    p.entryWords = new Uint32Array(grown.buffer);
  }
  const e = p.count++ * ENTRY_WORDS;
  const ew = p.entryWords;
  for (let k = 0; k < 8; k++) ew[e + k] = dw[at + k]!;
  ew[e + 8] = p.bytes;
  ew[e + 9] = payload.length;
  ew[e + 10] = data.length;
  ew[e + 11] = flags;
  if (chunkAt >= 0) {
    flushBuffer(p);
    if (runEnd !== chunkAt) {
      flushRun(p);
      runStart = runEnd = chunkAt;
    }
    runEnd += payload.length;
  } else {
    flushRun(p);
    if (p.buffered + payload.length > p.buffer.length) flushBuffer(p);
    if (payload.length > p.buffer.length) {
      writeAll(p.fd, payload);
      wrote(p, payload.length);
    } else {
      p.buffer.set(payload, p.buffered);
      p.buffered += payload.length;
    }
  }
  p.bytes += payload.length;
  const ref = -myPacks.length;
  newHere = newHere.setWords(dw, at, -ref);
  if (p.bytes >= init!.packTargetBytes || p.count >= PACK_MAX_ENTRIES) {
    closePack(p);
    current = undefined;
  }
  return ref;
}

// ---- reading the image ------------------------------------------------------------------------

/** Fill buf[0, len) with the database image at byte `pos`. */
function readImage(pos: number, len: number): Uint8Array {
  const s = snap!;
  const buf = chunk.subarray(0, len);
  const got = preadFully(s.dbFd, buf, 0, len, pos);
  if (got < len) buf.fill(0, got);
  if (s.overlayPages.length > 0) {
    const firstPage = Math.floor(pos / s.pageSize) + 1;
    const lastPage = Math.floor((pos + len - 1) / s.pageSize) + 1;
    // binary search for the first overlaid page >= firstPage
    let lo = 0;
    let hi = s.overlayPages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (s.overlayPages[mid]! < firstPage) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < s.overlayPages.length && s.overlayPages[i]! <= lastPage; i++) {
      const at = (s.overlayPages[i]! - 1) * s.pageSize - pos;
      const n = readSync(s.walFd, buf, at, s.pageSize, s.overlayOffsets[i]!);
      if (n !== s.pageSize) throw new CairnError("E_SNAPSHOT", "the WAL changed while it was read");
    }
  }
  return buf;
}

function processRange(first: number, count: number): RangeResult {
  const s = snap!;
  const bs = init!.blockSize;
  const imageBytes = s.pageCount * s.pageSize;
  const entries = new Uint8Array(count * SEGMENT_ENTRY_BYTES);
  const words = new Uint32Array(entries.buffer);
  const quick = new BigUint64Array(entries.buffer);
  // SEGMENT_ENTRY_BYTES is 40: 10 words an entry, the digest in words 0-7, the quick hash in 8-9
  const W = SEGMENT_ENTRY_BYTES / 4;
  const used = new Set<number>();
  let lastRef = 0x7fffffff;
  let newBlocks = 0;
  let newBytes = 0;
  let rehashed = 0;
  const start = first * bs;
  const end = Math.min((first + count) * bs, imageBytes);
  const step = Math.floor(CHUNK_BYTES / bs) * bs;
  const pw = prev?.words;
  const prevCount = prev?.count ?? 0;
  const t = table!;
  for (let pos = start; pos < end; pos += step) {
    const len = Math.min(step, end - pos);
    const buf = readImage(pos, len);
    for (let o = 0; o < len; o += bs) {
      const b = (pos + o) / bs;
      const i = b - first;
      const e = i * W;
      const data = buf.subarray(o, Math.min(o + bs, len));
      quick[i * 5 + 4] = quickHash(data, seed);
      let ref: number;
      if (pw && b < prevCount && words[e + 8] === pw[b * W + 8] && words[e + 9] === pw[b * W + 9]) {
        // unchanged since the previous checkpoint: reuse its digest, if the store still has it
        ref = t.getWords(pw, b * W);
        if (ref >= 0) {
          for (let k = 0; k < 8; k++) words[e + k] = pw[b * W + k]!;
          if (ref !== lastRef) used.add((lastRef = ref));
          continue;
        }
      }
      blockDigestInto(data, entries.subarray(i * SEGMENT_ENTRY_BYTES, i * SEGMENT_ENTRY_BYTES + 32));
      rehashed++;
      ref = t.getWords(words, e);
      if (ref < 0) {
        ref = storeBlock(words, e, data, BLOCK_KIND_DATA, o);
        if (lastStoreAdded) {
          newBlocks++;
          newBytes += data.length;
        }
      }
      if (ref !== lastRef) used.add((lastRef = ref));
    }
    // the chunk is about to be refilled: what is still to be written from it goes now
    if (current) flushRun(current);
  }
  // the range's segments (ranges start on segment boundaries): each is the block list's bytes
  // for SEGMENT_BLOCKS blocks, stored like a block if the store lacks it
  const segCount = Math.ceil(count / SEGMENT_BLOCKS);
  const segments = new Uint8Array(segCount * DIGEST_BYTES);
  const segWords = new Uint32Array(segments.buffer);
  for (let k = 0; k < segCount; k++) {
    const seg = entries.subarray(k * SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES, Math.min(count, (k + 1) * SEGMENT_BLOCKS) * SEGMENT_ENTRY_BYTES);
    blockDigestInto(seg, segments.subarray(k * DIGEST_BYTES, (k + 1) * DIGEST_BYTES));
    let ref = t.getWords(segWords, k * 8);
    if (ref < 0) ref = storeBlock(segWords, k * 8, seg, BLOCK_KIND_SEGMENT, -1);
    if (ref !== lastRef) used.add((lastRef = ref));
  }
  return { entries, segments, packRefs: Int32Array.from(used), newBlocks, newBytes, rehashed, bytesRead: end - start };
}

// ---- loading what the store holds ---------------------------------------------------------------

async function loadIndex(storeDir: string, packIds: string[]): Promise<SharedArrayBuffer> {
  const { indexes, entries } = await new StoreReader(new DirSource(storeDir)).indexesOf(packIds);
  // room to grow: the next checkpoints add their blocks to this table (create.ts keeps it)
  const t = DigestTable.create(Math.ceil(entries * 1.5));
  indexes.forEach((idx, packIndex) => {
    for (let i = 0; i < idx.count; i++) t.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, packIndex);
  });
  return t.buffer;
}

async function loadBlockList(storeDir: string, manifestId: number): Promise<{ entries: SharedArrayBuffer; count: number }> {
  const reader = new StoreReader(new DirSource(storeDir));
  const m = await reader.manifest(manifestId);
  const list = await reader.blockList(m);
  const sab = new SharedArrayBuffer(list.length);
  new Uint8Array(sab).set(list);
  return { entries: sab, count: m.block_count };
}

// ---- messages ---------------------------------------------------------------------------------

function closeSnapshot(): void {
  // the descriptors stay open: they are the node's, for its whole life (engine/live-files.ts)
  snap = undefined;
}

function abort(): void {
  closeSnapshot();
  if (current) {
    try {
      closeSync(current.fd);
    } catch {}
    current = undefined;
  }
  for (const id of myPacks) {
    for (const ext of ["pack", "idx"] as const) {
      try {
        unlinkSync(tmpFile(id, ext));
      } catch {}
    }
  }
}

async function handle(msg: WorkerRequest): Promise<unknown> {
  switch (msg.type) {
    case "init":
      init = msg;
      seed = BigInt(msg.seed);
      // a worker may be kept for the next checkpoint: nothing of the last one carries over
      current = undefined;
      runStart = runEnd = 0;
      written.length = 0;
      myPacks.length = 0;
      newHere = newHere.clear();
      bytesWritten = 0;
      started = performance.now();
      mkdirSync(msg.tmpDir, { recursive: true, mode: DIR_MODE });
      // a checkpoint is background work: the node's request thread goes first
      lowerThisThreadPriority(10);
      return;
    case "table":
      table = DigestTable.attach(msg.table);
      prev = msg.prev ? { words: new Uint32Array(msg.prev), count: msg.prevBlockCount } : undefined;
      return;
    case "snapshot":
      closeSnapshot();
      snap = msg.spec;
      return;
    case "range": {
      const r = processRange(msg.first, msg.count);
      return r;
    }
    case "finish":
      closeSnapshot();
      if (current) {
        closePack(current);
        current = undefined;
      }
      // a kept worker should not hold a full checkpoint's worth of digests until the next one
      if (newHere.capacity > NEW_HERE_INITIAL * 2) newHere = DigestTable.create(NEW_HERE_INITIAL);
      return { packs: written, myPacks };
    case "abort":
      abort();
      closeRestore();
      return;
    case "restoreInit":
      lowerThisThreadPriority(5);
      openRestore(msg);
      return;
    case "restoreTables":
      setRestoreTables(msg.list, msg.locations);
      return;
    case "restoreWindow":
      setRestoreWindow(msg.firstBlock);
      return;
    case "restoreRange":
      return restoreRange(msg.first, msg.count);
    case "checkImageRange":
      return checkImageRange(msg.first, msg.count);
    case "integrityCheck": {
      const db = new Database(msg.file, { readwrite: true, create: false });
      try {
        const rows = db
          .query<Record<string, string>, []>(`PRAGMA ${msg.full ? "integrity_check" : "quick_check"}`)
          .all()
          .map((r) => String(Object.values(r)[0]));
        const nodeId = db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'node_id'").get()?.value ?? null;
        return { rows, nodeId };
      } finally {
        db.close();
      }
    }
    case "scanWal":
      return scanWal(msg.walFd, msg.shmFd, msg.walIndex);
    case "loadIndex":
      return loadIndex(msg.storeDir, msg.packIds);
    case "loadBlockList":
      return loadBlockList(msg.storeDir, msg.manifestId);
    case "gc":
      return collectGarbage(msg.storeDir, { minLiveFraction: msg.minLiveFraction, sync: msg.sync, checkpointsRemoved: msg.checkpointsRemoved });
  }
}

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const msg = event.data;
  try {
    const result = await handle(msg);
    const transfer: ArrayBuffer[] = [];
    if (msg.type === "range") {
      const r = result as RangeResult;
      transfer.push(r.entries.buffer as ArrayBuffer, r.segments.buffer as ArrayBuffer, r.packRefs.buffer as ArrayBuffer);
    }
    self.postMessage({ id: msg.id, ok: true, result } satisfies WorkerReply, transfer);
  } catch (e) {
    self.postMessage({
      id: msg.id,
      ok: false,
      error: e instanceof Error ? e.message : String(e),
      code: e instanceof CairnError ? e.code : (e as { code?: string })?.code,
    } satisfies WorkerReply);
  }
};
