/**
 * Rebuilding a checkpoint's database image into a file: workers fetch, decompress and check
 * every block against its digest and write the image 8 MiB at a time, each range at its
 * place, in order. Which ranges are done is kept in a progress file beside the image,
 * written only after the image is flushed to disk, so an interrupted rebuild (Ctrl-C, kill -9,
 * a lost SSH session) continues where it stopped and never re-fetches a finished range.
 */
import { closeSync, existsSync, fdatasync, fdatasyncSync, ftruncateSync, openSync, readFileSync, statSync } from "node:fs";
import { CairnError } from "../errors.ts";
import { DigestTable } from "../checkpoint/digest-table.ts";
import { equalBytes, INDEX_ENTRY_BYTES, type Manifest, readIndexEntry, SEGMENT_ENTRY_BYTES } from "../checkpoint/format.ts";
import { WorkerPool } from "../checkpoint/pool.ts";
import type { StoreReader } from "../checkpoint/reader.ts";
import { crashPoint } from "../util/crash-point.ts";
import { writeFileAtomic } from "../util/fsx.ts";

/** Blocks per range: the unit of work, of writing and of resuming. */
export const RESTORE_RANGE_BLOCKS = 1024;
/** Progress is made durable at least this often (bytes written since the last flush). */
const FLUSH_EVERY_BYTES = 128 * 1024 * 1024;

export interface RebuildOptions {
  reader: StoreReader;
  /** A local store directory, which the workers read directly. */
  storeDir: string;
  manifest: Manifest;
  imageFile: string;
  progressFile: string;
  workers: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface RebuildResult {
  bytes: number;
  /** Ranges found already done by an earlier, interrupted run. */
  resumedRanges: number;
  ranges: number;
}

/** Where each block of the checkpoint is: 5 u32 per block (see restoreInit in protocol.ts). */
async function locateBlocks(reader: StoreReader, m: Manifest, list: Uint8Array): Promise<{ locations: SharedArrayBuffer; packIds: string[] }> {
  const packIds = m.packs;
  const { indexes, entries: total } = await reader.indexesOf(packIds);
  // digest → global entry number (packs one after the other)
  const table = DigestTable.create(total);
  const firstEntry: number[] = [];
  let n = 0;
  indexes.forEach((idx) => {
    firstEntry.push(n);
    for (let i = 0; i < idx.count; i++) table.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, n + i);
    n += idx.count;
  });
  const locations = new SharedArrayBuffer(m.block_count * 5 * 4);
  const loc = new Uint32Array(locations);
  for (let b = 0; b < m.block_count; b++) {
    const g = table.getAt(list, b * SEGMENT_ENTRY_BYTES);
    let p = -1;
    if (g >= 0) {
      p = firstEntry.findLastIndex((f) => f <= g);
      const e = readIndexEntry(indexes[p]!, g - firstEntry[p]!);
      if (!equalBytes(e.digest, list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32))) p = -1;
      else loc.set([p, e.offset, e.storedLength, e.rawLength, e.flags], b * 5);
    }
    if (p < 0) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: block ${b} is in none of its packs`);
  }
  return { locations, packIds };
}

interface ProgressState {
  ranges: number;
  done: number[];
}

/**
 * The ranges an earlier run finished, if its image is still there at its full size (after a
 * crash right after the swap, the image has gone into place and its progress means nothing).
 */
function loadProgress(file: string, ranges: number, imageFile: string, imageBytes: number): Set<number> {
  if (!existsSync(file)) return new Set();
  try {
    if (statSync(imageFile).size !== imageBytes) return new Set();
  } catch {
    return new Set();
  }
  try {
    const s = JSON.parse(readFileSync(file, "utf8")) as ProgressState;
    if (s.ranges !== ranges || !Array.isArray(s.done)) return new Set();
    return new Set(s.done.filter((r) => Number.isInteger(r) && r >= 0 && r < ranges));
  } catch {
    return new Set();
  }
}

export async function rebuildImage(o: RebuildOptions): Promise<RebuildResult> {
  const m = o.manifest;
  const list = await o.reader.blockList(m);
  const { locations, packIds } = await locateBlocks(o.reader, m, list);
  // planning built and dropped per-block objects: collect them before the long part
  Bun.gc(true);
  const listShared = new SharedArrayBuffer(list.byteLength);
  new Uint8Array(listShared).set(list);

  const ranges = Math.ceil(m.block_count / RESTORE_RANGE_BLOCKS);
  const done = loadProgress(o.progressFile, ranges, o.imageFile, m.db_size_bytes);
  const resumedRanges = done.size;
  const rangeBytes = (r: number) => Math.min(RESTORE_RANGE_BLOCKS * m.block_size, m.db_size_bytes - r * RESTORE_RANGE_BLOCKS * m.block_size);
  let doneBytes = [...done].reduce((s, r) => s + rangeBytes(r), 0);
  o.onProgress?.(doneBytes, m.db_size_bytes);

  const fd = openSync(o.imageFile, existsSync(o.imageFile) && resumedRanges > 0 ? "r+" : "w", 0o600);
  const pool = new WorkerPool(Math.max(1, o.workers));
  const onAbort = () => pool.terminate(new CairnError("E_INTERRUPTED", "restore interrupted"));
  o.signal?.addEventListener("abort", onAbort);
  let unflushed = 0;
  /** Make the ranges done so far durable: flush the image, then record them. */
  const persist = () => {
    fdatasyncSync(fd);
    writeFileAtomic(o.progressFile, JSON.stringify({ ranges, done: [...done].sort((a, b) => a - b) } satisfies ProgressState));
    unflushed = 0;
  };
  /**
   * The same, off this thread, while the workers go on writing: the ranges recorded are those
   * done before the flush began. One at a time.
   */
  let flushing: Promise<void> | undefined;
  const persistInBackground = () => {
    if (flushing) return;
    const snapshot = [...done].sort((a, b) => a - b);
    unflushed = 0;
    flushing = new Promise<void>((res, rej) => fdatasync(fd, (e) => (e ? rej(e) : res())))
      .then(() => {
        writeFileAtomic(o.progressFile, JSON.stringify({ ranges, done: snapshot } satisfies ProgressState));
        crashPoint("restore:progress-saved");
      })
      .finally(() => {
        flushing = undefined;
      });
  };
  try {
    ftruncateSync(fd, m.db_size_bytes);
    await pool.all({
      type: "restoreInit",
      storeDir: o.storeDir,
      packIds,
      locations,
      list: listShared,
      blockSize: m.block_size,
      imageBytes: m.db_size_bytes,
      imageFile: o.imageFile,
    });
    const todo = Array.from({ length: ranges }, (_, r) => r).filter((r) => !done.has(r));
    let next = 0;
    await Promise.all(
      Array.from({ length: pool.size }, async (_, w) => {
        while (next < todo.length) {
          if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "restore interrupted");
          const r = todo[next++]!;
          const first = r * RESTORE_RANGE_BLOCKS;
          const bytes = await pool.call<number>(w, { type: "restoreRange", first, count: Math.min(RESTORE_RANGE_BLOCKS, m.block_count - first) });
          done.add(r);
          doneBytes += bytes;
          unflushed += bytes;
          if (unflushed >= FLUSH_EVERY_BYTES) persistInBackground();
          o.onProgress?.(doneBytes, m.db_size_bytes);
        }
      }),
    );
    await flushing;
    persist();
    return { bytes: m.db_size_bytes, resumedRanges, ranges };
  } catch (e) {
    // keep what is done for the next run; a range half-written is simply not marked done
    try {
      await flushing?.catch(() => {});
      persist();
    } catch {
      // the disk may be what failed
    }
    throw e;
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
    pool.terminate();
    closeSync(fd);
  }
}
