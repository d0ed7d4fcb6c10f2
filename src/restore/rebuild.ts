/**
 * Rebuilding a checkpoint's database image into a file: workers fetch, decompress and check
 * every block against its digest and write the image 8 MiB at a time, each range at its
 * place, in order. Which ranges are done is kept in a progress file beside the image,
 * written only after the image is flushed to disk, so an interrupted rebuild (Ctrl-C, kill -9,
 * a lost SSH session) continues where it stopped and never re-fetches a finished range.
 */
import { closeSync, constants, existsSync, fdatasync, fdatasyncSync, ftruncateSync, openSync, statSync, unlinkSync } from "node:fs";
import { CairnError } from "../errors.ts";
import { DigestTable } from "../store/digest-table.ts";
import { type IncludedFile, type Manifest, SEGMENT_ENTRY_BYTES } from "../store/format.ts";
import { equalBytes } from "../store/pack.ts";
import { hintedPacks, LOC_WORDS, type StoreReader, windowSegments } from "../store/reader.ts";
import type { Store } from "../store/store.ts";
import type { StreamReader } from "../store/stream-reader.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import type { RestoreJob } from "./jobs.ts";
import { crashPoint, FLUSH_EVERY_ENV } from "../util/crash-point.ts";
import { assertOwnFile, CREATE_EXCLUSIVE_RW, FILE_MODE, preadFully, readOwnFile, writeFileAtomic, writeFully } from "../util/fsx.ts";

/** Blocks per range: the unit of work, of writing and of resuming. */
export const RESTORE_RANGE_BLOCKS = 1024;
/**
 * Progress is made durable at least this often (bytes written since the last flush). Tests
 * lower it (CAIRN_TEST_FLUSH_EVERY_BYTES) to interrupt small restores after a saved step.
 */
const FLUSH_EVERY_BYTES = Number(process.env[FLUSH_EVERY_ENV]) > 0 ? Number(process.env[FLUSH_EVERY_ENV]) : 128 * 1024 * 1024;

export interface RebuildOptions {
  store: Store;
  manifest: Manifest;
  imageFile: string;
  progressFile: string;
  workers: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  /** Work to run on the complete image while its last flush to disk runs (the SQLite check). */
  whileFlushing?: () => Promise<void>;
  /** An archive's shipped log files, as they pass after its packs (a directory or S3 store is read at random instead). */
  onLogFile?: (path: string, data: Uint8Array) => void | Promise<void>;
  /** An archive's carried files (as stored), as they pass after its packs. */
  onIncludedFile?: (f: IncludedFile, stored: Uint8Array) => void | Promise<void>;
}

export interface RebuildResult {
  bytes: number;
  /** Ranges found already done by an earlier, interrupted run (each checked again). */
  resumedRanges: number;
  /** Of those, ranges whose bytes did not match the checkpoint and were written again. */
  redoneRanges: number;
  ranges: number;
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
    const s = JSON.parse(new TextDecoder().decode(readOwnFile(file, 64 * 1024 * 1024))) as ProgressState;
    if (s.ranges !== ranges || !Array.isArray(s.done)) return new Set();
    return new Set(s.done.filter((r) => Number.isInteger(r) && r >= 0 && r < ranges));
  } catch {
    return new Set();
  }
}

export async function rebuildImage(o: RebuildOptions): Promise<RebuildResult> {
  const m = o.manifest;
  const ranges = Math.ceil(m.block_count / RESTORE_RANGE_BLOCKS);
  const done = loadProgress(o.progressFile, ranges, o.imageFile, m.db_size_bytes);
  const resumedRanges = done.size;
  const rangeBytes = (r: number) => Math.min(RESTORE_RANGE_BLOCKS * m.block_size, m.db_size_bytes - r * RESTORE_RANGE_BLOCKS * m.block_size);
  let doneBytes = [...done].reduce((s, r) => s + rangeBytes(r), 0);
  let redoneRanges = 0;
  o.onProgress?.(doneBytes, m.db_size_bytes);

  // never through a link, and a resumed image only if it is this user's own file
  const resuming = existsSync(o.imageFile) && resumedRanges > 0;
  if (!resuming && existsSync(o.imageFile)) unlinkSync(o.imageFile);
  const fd = openSync(o.imageFile, resuming ? constants.O_RDWR | constants.O_NOFOLLOW : CREATE_EXCLUSIVE_RW, FILE_MODE);
  if (resuming) {
    try {
      assertOwnFile(fd, o.imageFile);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }
  let unflushed = 0;
  const doneList = () => [...done].sort((a, b) => a - b);
  /** Record ranges as done: only after the image holding them has been flushed. */
  const record = (list: number[]) => writeFileAtomic(o.progressFile, JSON.stringify({ ranges, done: list } satisfies ProgressState));
  const flushImage = () => new Promise<void>((res, rej) => fdatasync(fd, (e) => (e ? rej(e) : res())));
  /** Make the ranges done so far durable, on this thread (after a failure). */
  const persist = () => {
    fdatasyncSync(fd);
    record(doneList());
    unflushed = 0;
  };
  /**
   * The same, off this thread, while the work goes on: the ranges recorded are those done
   * before the flush began. One at a time.
   */
  let flushing: Promise<void> | undefined;
  const persistInBackground = () => {
    if (flushing) return;
    const snapshot = doneList();
    unflushed = 0;
    flushing = flushImage()
      .then(() => {
        record(snapshot);
        crashPoint("restore:progress-saved");
      })
      .finally(() => {
        flushing = undefined;
      });
  };
  /** An earlier run's range that does not match the checkpoint: not done after all. */
  const rangeRedo = (r: number) => {
    if (!done.delete(r)) return;
    doneBytes -= rangeBytes(r);
    redoneRanges++;
  };
  const rangeDone = (r: number, bytes: number) => {
    done.add(r);
    doneBytes += bytes;
    unflushed += bytes;
    if (unflushed >= FLUSH_EVERY_BYTES) persistInBackground();
    o.onProgress?.(doneBytes, m.db_size_bytes);
  };
  try {
    ftruncateSync(fd, m.db_size_bytes);
    if (o.store.streamer) await fromStream(o, o.store.streamer, fd, done, rangeDone, () => redoneRanges++);
    else await fromObjects(o, o.store.reader!, done, rangeDone, rangeRedo);
    await flushing;
    // the last flush, and whatever the caller checks meanwhile (SQLite reads the image from
    // the page cache; nothing is put in place before both are done)
    await Promise.all([flushImage().then(() => record(doneList())), o.whileFlushing?.()]);
    return { bytes: m.db_size_bytes, resumedRanges, redoneRanges, ranges };
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
    closeSync(fd);
  }
}

/**
 * From a directory or S3: a window of the block list at a time is located in the store's
 * indexes and handed to the workers, which fetch, check and write its ranges in parallel.
 * Memory is that of one window, whatever the size of the database.
 */
async function fromObjects(
  o: RebuildOptions,
  reader: StoreReader,
  done: Set<number>,
  rangeDone: (r: number, bytes: number) => void,
  rangeRedo: (r: number) => void,
): Promise<void> {
  const m = o.manifest;
  const segmentsAt = await reader.locateSome(m.packs, m.segments);
  const pool = new WorkerPool(Math.max(1, o.workers));
  const onAbort = () => pool.terminate(new CairnError("E_INTERRUPTED", "restore interrupted"));
  o.signal?.addEventListener("abort", onAbort);
  try {
    const source = reader.backend.spec?.();
    if (!source) throw new CairnError("E_INTERNAL", `${reader.location} cannot be read by workers`);
    await pool.all<void, RestoreJob>({ job: "restore", op: "init", source, packIds: m.packs, blockSize: m.block_size, imageBytes: m.db_size_bytes, imageFile: o.imageFile, keys: reader.keys?.spec });
    const segsPerRange = RESTORE_RANGE_BLOCKS / m.segment_blocks;
    const window = windowSegments(m, segsPerRange);
    // one list, one location table and one digest table, reused by every window (shared with
    // the workers once): nothing is allocated per window
    const maxBlocks = window * m.segment_blocks;
    const list = new SharedArrayBuffer(maxBlocks * SEGMENT_ENTRY_BYTES);
    const locations = new SharedArrayBuffer(maxBlocks * LOC_WORDS * 4);
    const listBytes = new Uint8Array(list);
    const loc = new Uint32Array(locations);
    const scratch = DigestTable.create(maxBlocks);
    await pool.all<void, RestoreJob>({ job: "restore", op: "tables", list, locations });
    for (let s0 = 0; s0 < m.segments.length; s0 += window) {
      const firstBlock = s0 * m.segment_blocks;
      const nseg = Math.min(window, m.segments.length - s0);
      const r0 = s0 / segsPerRange;
      const r1 = Math.ceil((s0 + nseg) / segsPerRange);
      const here = Array.from({ length: r1 - r0 }, (_, k) => r0 + k);
      if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "restore interrupted");
      const entries = await reader.segmentEntries(m, segmentsAt, s0, nseg);
      const count = entries.length / SEGMENT_ENTRY_BYTES;
      listBytes.set(entries);
      await pool.all<void, RestoreJob>({ job: "restore", op: "window", firstBlock });
      // what an earlier run wrote is believed only once its digests check out again: read back
      // from the staged image (never fetched again from the store), a range at a time
      const resumed = here.filter((r) => done.has(r));
      let nextCheck = 0;
      await Promise.all(
        Array.from({ length: pool.size }, async (_, w) => {
          while (nextCheck < resumed.length) {
            const r = resumed[nextCheck++]!;
            const first = r * RESTORE_RANGE_BLOCKS;
            const ok = await pool.call<boolean, RestoreJob>(w, { job: "restore", op: "checkRange", first, count: Math.min(RESTORE_RANGE_BLOCKS, m.block_count - first) });
            if (!ok) rangeRedo(r);
          }
        }),
      );
      const todo = here.filter((r) => !done.has(r));
      if (todo.length === 0) continue;
      await reader.locateList(m.packs, listBytes, count, loc, (b) => `checkpoint ${m.id}: block ${firstBlock + b}`, scratch, hintedPacks(m, s0, nseg));
      // locating a window leaves its index reads behind: collect them before the next
      Bun.gc(true);
      let next = 0;
      await Promise.all(
        Array.from({ length: pool.size }, async (_, w) => {
          while (next < todo.length) {
            if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "restore interrupted");
            const r = todo[next++]!;
            const first = r * RESTORE_RANGE_BLOCKS;
            const bytes = await pool.call<number, RestoreJob>(w, { job: "restore", op: "range", first, count: Math.min(RESTORE_RANGE_BLOCKS, m.block_count - first) });
            rangeDone(r, bytes);
          }
        }),
      );
    }
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
    await pool.all<void, RestoreJob>({ job: "restore", op: "close" }).catch(() => {});
    pool.terminate(new CairnError("E_CANCELLED", "restore workers done"));
  }
}

/**
 * From an archive: read front to back (archive.ts checks every block against its segment and
 * digest), written sequentially a range at a time. In ranges done by an earlier run, each
 * block is compared with the staged image and written only where it differs.
 */
async function fromStream(
  o: RebuildOptions,
  archive: StreamReader,
  fd: number,
  done: Set<number>,
  rangeDone: (r: number, bytes: number) => void,
  rangeRedone: () => void,
): Promise<void> {
  const m = o.manifest;
  const buffer = new Uint8Array(RESTORE_RANGE_BLOCKS * m.block_size);
  const staged = new Uint8Array(m.block_size);
  let redoneRange = -1;
  let range = -1;
  let filled = 0;
  const flush = () => {
    if (range < 0) return;
    const bytes = Math.min(buffer.length, m.db_size_bytes - range * buffer.length);
    if (filled !== bytes) throw new CairnError("E_STORE_DAMAGED", `${archive.location}: range ${range} is incomplete`);
    writeFully(fd, buffer.subarray(0, bytes), range * buffer.length);
    rangeDone(range, bytes);
    range = -1;
    filled = 0;
  };
  const seen = await archive.streamBlocks(
    (b, data) => {
      const r = Math.floor(b / RESTORE_RANGE_BLOCKS);
      if (done.has(r)) {
        const at = b * m.block_size;
        const got = preadFully(fd, staged, 0, data.length, at);
        if (got !== data.length || !equalBytes(staged.subarray(0, got), data)) {
          writeFully(fd, data, at);
          if (redoneRange !== r) rangeRedone();
          redoneRange = r;
        }
        return;
      }
      if (r !== range) {
        flush();
        range = r;
      }
      buffer.set(data, (b - r * RESTORE_RANGE_BLOCKS) * m.block_size);
      filled += data.length;
    },
    { signal: o.signal, onLogFile: o.onLogFile, onIncludedFile: o.onIncludedFile },
  );
  flush();
  if (seen.checksum !== m.checksum) throw new CairnError("E_STORE_DAMAGED", `${archive.location} changed while it was read`);
}
