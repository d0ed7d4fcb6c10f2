/**
 * A checkpoint worker's job: read its share of the database image (the database file with the
 * snapshot's WAL frames laid over it, through the node's own descriptors), hash each block, and
 * append the blocks the store does not hold yet to a pack of its own in the store's tmp/
 * folder (store/pack-writer.ts). The coordinator is create.ts.
 */
import { readSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { scanWal } from "../engine/sqlite-files.ts";
import { DigestTable } from "../store/digest-table.ts";
import { SEGMENT_BLOCKS, SEGMENT_ENTRY_BYTES } from "../store/format.ts";
import { blockDigestInto, DIGEST_BYTES, quickHash } from "../store/hash.ts";
import { BLOCK_KIND_DATA, BLOCK_KIND_SEGMENT, FLAG_ZSTD } from "../store/pack.ts";
import { PackFile, type PackWritten } from "../store/pack-writer.ts";
import { preadFully } from "../util/fsx.ts";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import { Transfer } from "../util/worker-pool.ts";
import type { CheckpointInit, CheckpointJob, FinishResult, RangeResult, SnapshotSpec } from "./jobs.ts";

const CHUNK_BYTES = 4 * 1024 * 1024;

let init: CheckpointInit | undefined;
let seed = 0n;
let table: DigestTable | undefined;
let prev: { words: Uint32Array; count: number } | undefined;
/** The image being read; its descriptors belong to the node and are never closed here. */
let snap: SnapshotSpec | undefined;
const chunk = new Uint8Array(CHUNK_BYTES);

// ---- packs ----------------------------------------------------------------------------------

let current: PackFile | undefined;
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

/** The I/O rate limit: sleep until the bytes written so far fit the rate. */
function paceWrites(n: number): void {
  bytesWritten += n;
  const rate = init!.writeBytesPerSec;
  if (rate > 0) {
    const ahead = (bytesWritten / rate) * 1000 - (performance.now() - started);
    if (ahead > 1) Atomics.wait(sleeper, 0, 0, ahead);
  }
}

function openPack(): PackFile {
  const p = new PackFile(init!.tmpDir, { sync: init!.sync, onWrite: paceWrites, crashPrefix: "checkpoint" });
  myPacks.push(p.packId);
  return p;
}

function closePack(p: PackFile): void {
  written.push(p.close());
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
  current ??= openPack();
  const p = current;
  const flags = kind << 8;
  const z = init!.compression === "zstd" ? Bun.zstdCompressSync(data, { level: 1 }) : undefined;
  if (z && z.length < data.length) p.append(dw, at, new Uint8Array(z.buffer, z.byteOffset, z.byteLength), data.length, flags | FLAG_ZSTD);
  else if (chunkAt >= 0) p.appendRun(dw, at, chunk, chunkAt, chunkAt + data.length, data.length, flags);
  else p.append(dw, at, data, data.length, flags);
  const ref = -myPacks.length;
  newHere = newHere.setWords(dw, at, -ref);
  if (p.layout.full(init!.packTargetBytes)) {
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
    current?.flushRun();
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

// ---- messages ---------------------------------------------------------------------------------

function abort(): void {
  snap = undefined;
  current?.abandon();
  current = undefined;
  for (const id of myPacks) {
    for (const ext of ["pack", "idx"] as const) {
      try {
        unlinkSync(join(init!.tmpDir, `${id}.${ext}`));
      } catch {}
    }
  }
}

export function checkpointJob(msg: CheckpointJob): unknown {
  switch (msg.op) {
    case "init":
      init = msg;
      seed = BigInt(msg.seed);
      // a worker may be kept for the next checkpoint: nothing of the last one carries over
      current = undefined;
      written.length = 0;
      myPacks.length = 0;
      newHere = newHere.clear();
      bytesWritten = 0;
      started = performance.now();
      // a checkpoint is background work: the node's request thread goes first
      lowerThisThreadPriority(10);
      return;
    case "table":
      table = DigestTable.attach(msg.table);
      prev = msg.prev ? { words: new Uint32Array(msg.prev), count: msg.prevBlockCount } : undefined;
      return;
    case "snapshot":
      snap = msg.spec;
      return;
    case "scanWal":
      return scanWal(msg.walFd, msg.shmFd, msg.walIndex);
    case "range": {
      const r = processRange(msg.first, msg.count);
      return new Transfer(r, [r.entries.buffer as ArrayBuffer, r.segments.buffer as ArrayBuffer, r.packRefs.buffer as ArrayBuffer]);
    }
    case "finish": {
      // the descriptors stay open: they are the node's, for its whole life (engine/live-files.ts)
      snap = undefined;
      if (current) {
        closePack(current);
        current = undefined;
      }
      // a kept worker should not hold a full checkpoint's worth of digests until the next one
      if (newHere.capacity > NEW_HERE_INITIAL * 2) newHere = DigestTable.create(NEW_HERE_INITIAL);
      return { packs: [...written], myPacks: [...myPacks] } satisfies FinishResult;
    }
    case "abort":
      if (init) abort();
      return;
  }
}
