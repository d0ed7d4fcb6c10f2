/**
 * A restore worker's job: fetch, check and assemble ranges of the image.
 *
 * The coordinator (rebuild.ts) hands over the block list and block locations one window at a
 * time; each range is read from the store in runs of blocks that lie back to back in one pack
 * (the backend's random reads: a pread from a folder, one ranged GET from S3, a few at a time),
 * every block is checked against its digest, and the range is written at its place in the
 * image file.
 */
import { closeSync, constants, openSync } from "node:fs";
import { CairnError } from "../errors.ts";
import type { Backend, RandomReads } from "../store/backend.ts";
import { packPath, SEGMENT_ENTRY_BYTES } from "../store/format.ts";
import { openBackend } from "../store/open.ts";
import { StoreKeys } from "../store/crypto.ts";
import { decodeBlock, FLAG_SEALED, FLAG_ZSTD, isBlockNamed } from "../store/pack.ts";
import { LOC_WORDS } from "../store/reader.ts";
import { preadFully, writeFully } from "../util/fsx.ts";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import type { RestoreInit, RestoreJob } from "./jobs.ts";

interface RestoreState {
  backend: Backend;
  packs: RandomReads;
  packIds: string[];
  blockSize: number;
  imageBytes: number;
  imageFd: number;
  /** The current window: its first block, its list entries and block locations. */
  firstBlock: number;
  list: Uint8Array;
  loc: Uint32Array;
  /** One range's worth of image, reused for every range. */
  buffer: Uint8Array;
  /** An encrypted store's keys: every block is sealed, and named by a keyed digest. */
  keys?: StoreKeys;
}

let state: RestoreState | undefined;
let rangesSinceGc = 0;

/** Longest single read when blocks lie back to back in a pack. */
const RESTORE_READ_BYTES = 1024 * 1024;

function openRestore(o: RestoreInit): void {
  closeRestore();
  const backend = openBackend(o.source);
  state = {
    backend,
    packs: backend.random!,
    packIds: o.packIds,
    blockSize: o.blockSize,
    imageBytes: o.imageBytes,
    imageFd: openSync(o.imageFile, constants.O_RDWR | constants.O_NOFOLLOW),
    firstBlock: 0,
    list: new Uint8Array(0),
    loc: new Uint32Array(0),
    buffer: new Uint8Array(0),
    keys: o.keys ? new StoreKeys(o.keys) : undefined,
  };
}

/** The tables the coordinator writes each window into (shared, so never copied). */
function setRestoreTables(list: SharedArrayBuffer, locations: SharedArrayBuffer): void {
  state!.list = new Uint8Array(list);
  state!.loc = new Uint32Array(locations);
}

/** The tables now hold the window starting at block `firstBlock`. */
function setRestoreWindow(firstBlock: number): void {
  state!.firstBlock = firstBlock;
}

function closeRestore(): void {
  if (!state) return;
  state.backend.close?.();
  closeSync(state.imageFd);
  state = undefined;
}

/**
 * Whether blocks [first, first+count) of the image file already hold what the window's list
 * says (an earlier, interrupted run wrote them): read back and checked against each digest.
 */
function checkImageRange(first: number, count: number): boolean {
  const r = state!;
  const start = first * r.blockSize;
  const end = Math.min((first + count) * r.blockSize, r.imageBytes);
  if (r.buffer.length < end - start) r.buffer = new Uint8Array(end - start);
  const image = r.buffer.subarray(0, end - start);
  if (preadFully(r.imageFd, image, 0, image.length, start) !== image.length) return false;
  for (let b = first; b * r.blockSize < end; b++) {
    const o = b * r.blockSize - start;
    const at = (b - r.firstBlock) * SEGMENT_ENTRY_BYTES;
    if (!isBlockNamed(image.subarray(o, Math.min(o + r.blockSize, image.length)), r.list.subarray(at, at + 32), r.keys)) return false;
  }
  return true;
}

/**
 * Rebuild blocks [first, first+count) of the image (numbers in the whole image; the window
 * must hold them), each checked against its digest, and write them at their place in the
 * image file. Returns the bytes written.
 */
async function restoreRange(first: number, count: number): Promise<number> {
  const r = state!;
  const start = first * r.blockSize;
  const end = Math.min((first + count) * r.blockSize, r.imageBytes);
  if (r.buffer.length < end - start) r.buffer = new Uint8Array(end - start);
  const out = r.buffer.subarray(0, end - start);
  const last = first + Math.ceil((end - start) / r.blockSize);
  const w = (b: number) => (b - r.firstBlock) * LOC_WORDS;
  const digestOf = (b: number) => r.list.subarray((b - r.firstBlock) * SEGMENT_ENTRY_BYTES, (b - r.firstBlock) * SEGMENT_ENTRY_BYTES + 32);
  const expectedLength = (b: number) => Math.min(r.blockSize, r.imageBytes - b * r.blockSize);
  const isPlain = (b: number) => (r.loc[w(b) + 4]! & (FLAG_ZSTD | FLAG_SEALED)) === 0 && r.loc[w(b) + 2] === expectedLength(b) && r.loc[w(b) + 3] === expectedLength(b);
  const packName = (b: number) => `${r.backend.location}/${packPath(r.packIds[r.loc[w(b)]!]!)}`;
  const damaged = (b: number, why: string) => new CairnError("E_STORE_DAMAGED", `${packName(b)}: block ${b} at offset ${r.loc[w(b) + 1]} ${why} (damaged)`);

  // runs of blocks back to back in one pack: plain runs are read straight into place
  const runs: { b: number; e: number; bytes: number; plain: boolean }[] = [];
  for (let b = first; b < last; ) {
    const plain = isPlain(b);
    const pack = r.loc[w(b)]!;
    const offset = r.loc[w(b) + 1]!;
    let e = b + 1;
    let bytes = r.loc[w(b) + 2]!;
    while (e < last && bytes < RESTORE_READ_BYTES && isPlain(e) === plain && r.loc[w(e)] === pack && r.loc[w(e) + 1] === offset + bytes) {
      bytes += r.loc[w(e) + 2]!;
      e++;
    }
    runs.push({ b, e, bytes, plain });
    b = e;
  }
  const fetchRun = async (run: (typeof runs)[number]) => {
    const pack = r.packIds[r.loc[w(run.b)]!]!;
    const offset = r.loc[w(run.b) + 1]!;
    if (run.plain) {
      const at = run.b * r.blockSize - start;
      const n = await r.packs.readInto(packPath(pack), out, at, run.bytes, offset);
      if (n !== run.bytes) throw damaged(run.b, "is cut short (truncated pack)");
      for (let k = run.b; k < run.e; k++) {
        const o = k * r.blockSize - start;
        if (!isBlockNamed(out.subarray(o, o + expectedLength(k)), digestOf(k), r.keys)) throw damaged(k, "does not match its digest");
      }
      return;
    }
    const stored = new Uint8Array(run.bytes);
    const n = await r.packs.readInto(packPath(pack), stored, 0, run.bytes, offset);
    for (let k = run.b, at = 0; k < run.e; k++) {
      const len = r.loc[w(k) + 2]!;
      const loc = { digest: digestOf(k), offset: r.loc[w(k) + 1]!, storedLength: len, rawLength: r.loc[w(k) + 3]!, flags: r.loc[w(k) + 4]! };
      const raw = decodeBlock(stored.subarray(at, Math.min(n, at + len)), loc, packName(k), r.keys);
      if (raw.length !== expectedLength(k)) throw damaged(k, "has the wrong length");
      out.set(raw, k * r.blockSize - start);
      at += len;
    }
  };
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(r.packs.parallelReads, runs.length) }, async () => {
      while (next < runs.length) await fetchRun(runs[next++]!);
    }),
  );
  writeFully(r.imageFd, out, start);
  // each block left a small digest buffer behind: collect every few ranges, so memory stays
  // flat however large the database (a lazy collector lets it grow with the number of ranges)
  if (++rangesSinceGc >= 2) {
    Bun.gc(true);
    rangesSinceGc = 0;
  }
  return out.length;
}

export async function restoreJob(msg: RestoreJob): Promise<unknown> {
  switch (msg.op) {
    case "init":
      // a restore shares the machine with whatever else runs there
      lowerThisThreadPriority(5);
      openRestore(msg);
      return;
    case "tables":
      setRestoreTables(msg.list, msg.locations);
      return;
    case "window":
      setRestoreWindow(msg.firstBlock);
      return;
    case "range":
      return restoreRange(msg.first, msg.count);
    case "checkRange":
      return checkImageRange(msg.first, msg.count);
    case "close":
      closeRestore();
      return;
  }
}
