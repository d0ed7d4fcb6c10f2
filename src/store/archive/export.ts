/**
 * `export-db-checkpoint`: one checkpoint of a store (a directory or an S3 prefix) written as a
 * self-contained archive (.tar, .tar.gz or .tar.zst) in the streaming layout archive.ts reads.
 *
 * Streamed end to end: the block list is handled a window at a time, and blocks go from the
 * store through tar-stream and the compressor to the file as they are read, so memory does
 * not grow with the database. Every block is checked against its digest on the way, so a
 * damaged store makes a failed export, never a damaged archive. The file appears under its
 * name only when complete (temp name, fsync, rename, fsync of the folder).
 */
import { sealedIfKeys } from "../crypto.ts";
import { statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { CairnError, errorMessage, isDiskFull } from "../../errors.ts";
import { pausePoint } from "../../util/crash-point.ts";
import { FileLock } from "../../util/file-lock.ts";
import { FILE_MODE, tempNameFor } from "../../util/fsx.ts";
import { DigestTable } from "../digest-table.ts";
import {
  encodeManifest,
  encodeStoreInfo,
  indexPath,
  type Manifest,
  includedPath,
  manifestPath,
  packPath,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  type StoreInfo,
  storeInfoForCopy,
} from "../format.ts";
import { blockDigest, toHex } from "../hash.ts";
import { decodeBlock, PACK_MAGIC } from "../pack.ts";
import { PackLayout } from "../pack-writer.ts";
import { type BlockLocation, hintedPacks, LOC_WORDS, type StoreReader, windowSegments } from "../reader.ts";
import { type ArchiveCompression, archiveRoot, compressionForName } from "./names.ts";
import { ArchiveFile, type EntryHeader } from "./writer.ts";
import { MAX_INCLUDED_STORED_BYTES } from "../included.ts";
import { chainPath, indexLog, LOG_DIR, MAX_SEGMENT_BYTES } from "../log.ts";

/** Segments per pack of an archive: 8,192 blocks, 64 MiB of 8 KiB blocks. */
export const EXPORT_PACK_SEGMENTS = 32;
let runsSinceGc = 0;
/** Adjacent stored blocks are read from the store in runs of at most this. */
const READ_RUN_BYTES = 1024 * 1024;

export interface ExportOptions {
  reader: StoreReader;
  checkpointId: number;
  output: string;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface ExportResult {
  checkpoint_id: number;
  output: string;
  compression: ArchiveCompression;
  /** Size of the archive file. */
  archive_bytes: number;
  /** Size of the database it restores to. */
  size_bytes: number;
  packs: number;
  duration_ms: number;
}

/** The log files (store/log.ts) that bring checkpoint `m` forward on its own chain: its record, then the segments after its image in order. */
async function logFilesAfter(reader: StoreReader, m: Manifest): Promise<string[]> {
  if (!m.log) return [];
  const paths = await reader.source.list(`${LOG_DIR}/${m.log.chain}/`);
  if (paths.length === 0) return [];
  const c = (await indexLog(paths, undefined, reader.location)).chains.get(m.log.chain);
  if (!c) return [];
  const segs: string[] = [];
  let txn = m.log.txn;
  for (const s of c.segments) {
    if (s.lastTxn <= txn) continue;
    if (s.firstTxn > txn + 1) break;
    segs.push(s.path);
    txn = s.lastTxn;
  }
  return segs.length > 0 ? [chainPath(m.log.chain), ...segs] : [];
}

/** The names of the packs of an archive of `m`: derived from the manifest, so re-exports match. */
function exportPackIds(m: Manifest): string[] {
  const n = Math.ceil(m.segments.length / EXPORT_PACK_SEGMENTS);
  return Array.from({ length: n }, (_, k) => toHex(blockDigest(new TextEncoder().encode(`${m.checksum}/${k}`))).slice(0, 32));
}

export async function exportCheckpoint(o: ExportOptions): Promise<ExportResult> {
  const t0 = performance.now();
  const output = resolve(o.output);
  const compression = compressionForName(output);
  const reader = o.reader;
  const info = await reader.info();
  const m = await reader.manifest(o.checkpointId);
  const packIds = exportPackIds(m);
  // the archive's packs are its own, so the store's segment pack hints do not hold there
  const { checksum: _old, segment_packs: _hints, ...rest } = m;
  // sealed again for the archive's own pack list (blocks move as they are: a sealed block does not depend on its pack)
  const exported = sealedIfKeys(encodeManifest({ ...rest, packs: packIds }), manifestPath(m.id), reader.keys);
  const segmentsAt = await reader.locateSome(m.packs, m.segments);

  let st;
  try {
    st = statSync(dirname(output));
  } catch {
    throw new CairnError("E_NOT_FOUND", `the folder ${dirname(output)} does not exist`, { hint: "create it first, or give another --output" });
  }
  if (!st.isDirectory()) throw new CairnError("E_NOT_FOUND", `${dirname(output)} is not a folder`);
  // one export to one output at a time (the cron job and a manual run): the second is refused
  const outputLock = FileLock.exclusive(
    join(dirname(output), `.${basename(output)}.cairn-export.lock`),
    (holder) => new CairnError("E_BUSY", `another export to ${output} is running (pid ${holder?.pid ?? "unknown"})`, { hint: "wait for it, or export to another file" }),
    "export",
    { removeOnRelease: true },
  );
  try {
    return await exportLocked(o, output, compression, t0, m, info, exported, packIds, segmentsAt);
  } finally {
    outputLock.release();
  }
}

async function exportLocked(
  o: ExportOptions,
  output: string,
  compression: ArchiveCompression,
  t0: number,
  m: Manifest,
  info: StoreInfo,
  exported: Uint8Array,
  packIds: string[],
  segmentsAt: Map<string, BlockLocation>,
): Promise<ExportResult> {
  const reader = o.reader;
  const root = archiveRoot(m.id);
  const mtime = new Date(m.created);
  const header = (name: string, size: number): EntryHeader => ({ name: `${root}/${name}`, size, mtime, mode: FILE_MODE, type: "file" });
  const tmp = tempNameFor(output);
  const archive = new ArchiveFile(tmp, compression);
  const check = () => {
    archive.check();
    if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "export interrupted");
  };

  let done = 0;
  o.onProgress?.(0, m.db_size_bytes);
  try {
    await archive.entry(header(STORE_FILE, 0), encodeStoreInfo(storeInfoForCopy(info)));
    await archive.entry(header(manifestPath(m.id), exported.length), exported);
    await pausePoint("export:writing");
    const window = windowSegments(m, EXPORT_PACK_SEGMENTS);
    // the location and digest tables are reused by every window
    const loc = new Uint32Array(window * m.segment_blocks * LOC_WORDS);
    const scratch = DigestTable.create(window * m.segment_blocks);
    for (let w0 = 0; w0 < m.segments.length; w0 += window) {
      const nseg = Math.min(window, m.segments.length - w0);
      const list = await reader.segmentEntries(m, segmentsAt, w0, nseg);
      const count = list.length / SEGMENT_ENTRY_BYTES;
      const firstBlock = w0 * m.segment_blocks;
      await reader.locateList(m.packs, list, count, loc, (b) => `checkpoint ${m.id}: block ${firstBlock + b}`, scratch, hintedPacks(m, w0, nseg));
      for (let p0 = w0; p0 < w0 + nseg; p0 += EXPORT_PACK_SEGMENTS) {
        check();
        const k = p0 / EXPORT_PACK_SEGMENTS;
        const segs = Math.min(EXPORT_PACK_SEGMENTS, w0 + nseg - p0);
        done += await writePack(archive, header, reader, m, packIds[k]!, segmentsAt, p0, segs, list, loc, firstBlock, check);
        o.onProgress?.(done, m.db_size_bytes);
        // a pack leaves its read buffers and per-block digests behind: collect them, so that
        // a lazy collector does not let the peak drift up with the database size
        Bun.gc(true);
      }
    }
    // the carried files, as stored (sealed in an encrypted store), in the manifest's order
    for (const f of m.files ?? []) {
      check();
      const data = await reader.source.get(includedPath(f.name), MAX_INCLUDED_STORED_BYTES);
      await archive.entry(header(includedPath(f.name), data.length), data);
    }
    // the shipped log after the checkpoint, on its chain: the archive restores to its last instant
    for (const f of await logFilesAfter(reader, m)) {
      check();
      const data = await reader.source.get(f, MAX_SEGMENT_BYTES);
      await archive.entry(header(f, data.length), data);
    }
    check();
    await archive.finish();
    archive.publish(output);
  } catch (e) {
    const err = archive.error ?? e;
    await archive.destroy();
    if (isDiskFull(err)) {
      throw new CairnError("E_DISK_FULL", `no space left on the device holding ${output}; nothing was written`, { cause: err });
    }
    if (err instanceof CairnError) throw err;
    throw new CairnError("E_IO", `cannot write ${output}: ${errorMessage(err)}`, { cause: err });
  }
  return {
    checkpoint_id: m.id,
    output,
    compression,
    archive_bytes: statSync(output).size,
    size_bytes: m.db_size_bytes,
    packs: packIds.length,
    duration_ms: Math.round(performance.now() - t0),
  };
}

/**
 * One pack of the archive: segments [p0, p0 + segs), each followed by its blocks. Its index
 * is written first (sizes are known from the store's indexes), then its bytes, read in runs.
 * Returns the logical bytes of the blocks it holds.
 */
async function writePack(
  archive: ArchiveFile,
  header: (name: string, size: number) => EntryHeader,
  reader: StoreReader,
  m: Manifest,
  packId: string,
  segmentsAt: Map<string, BlockLocation>,
  p0: number,
  segs: number,
  list: Uint8Array,
  loc: Uint32Array,
  firstBlock: number,
  check: () => void,
): Promise<number> {
  // what the pack holds, in order: a segment (by number), then its blocks (by number in the window)
  type Item = { seg: number } | { block: number };
  const items: Item[] = [];
  for (let s = p0; s < p0 + segs; s++) {
    items.push({ seg: s });
    const b0 = s * m.segment_blocks;
    const b1 = Math.min(m.block_count, b0 + m.segment_blocks);
    for (let b = b0; b < b1; b++) items.push({ block: b - firstBlock });
  }
  // laid out ahead (the sizes are known from the store's indexes): the index goes first
  const layout = new PackLayout();
  let logical = 0;
  for (const it of items) {
    if ("seg" in it) {
      const l = segmentsAt.get(m.segments[it.seg]!)!;
      if (!l) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${it.seg} is in none of its packs`);
      layout.addBytes(l.digest, l.storedLength, l.rawLength, l.flags);
    } else {
      const o = it.block * LOC_WORDS;
      const digest = list.subarray(it.block * SEGMENT_ENTRY_BYTES, it.block * SEGMENT_ENTRY_BYTES + 32);
      layout.addBytes(digest, loc[o + 2]!, loc[o + 3]!, loc[o + 4]!);
      logical += loc[o + 3]!;
    }
  }
  const packBytes = layout.bytes;
  const index = sealedIfKeys(layout.index(), indexPath(packId), reader.keys);
  await archive.entry(header(indexPath(packId), index.length), index);
  await archive.entry(header(packPath(packId), packBytes), async (write) => {
    await write(new TextEncoder().encode(PACK_MAGIC));
    let i = 0;
    while (i < items.length) {
      check();
      const it = items[i]!;
      if ("seg" in it) {
        const l = segmentsAt.get(m.segments[it.seg]!)!;
        const stored = await reader.source.getRange(packPath(l.packId), l.offset, l.storedLength);
        decodeBlock(stored, l, `${reader.location}/${packPath(l.packId)}`, reader.keys);
        await write(stored);
        i++;
        continue;
      }
      // a run of blocks lying back to back in one pack of the store
      const first = it.block * LOC_WORDS;
      const srcPack = loc[first]!;
      const start = loc[first + 1]!;
      let bytes = loc[first + 2]!;
      let j = i + 1;
      while (j < items.length && bytes < READ_RUN_BYTES) {
        const nx = items[j]!;
        if ("seg" in nx) break;
        const o = nx.block * LOC_WORDS;
        if (loc[o] !== srcPack || loc[o + 1] !== start + bytes) break;
        bytes += loc[o + 2]!;
        j++;
      }
      const name = `${reader.location}/${packPath(m.packs[srcPack]!)}`;
      const run = await reader.source.getRange(packPath(m.packs[srcPack]!), start, bytes);
      if (run.length !== bytes) throw new CairnError("E_STORE_DAMAGED", `${name}: truncated (a block at offset ${start + run.length} is cut short)`);
      for (let k = i, at = 0; k < j; k++) {
        const o = (items[k] as { block: number }).block * LOC_WORDS;
        const len = loc[o + 2]!;
        const b = (items[k] as { block: number }).block;
        decodeBlock(run.subarray(at, at + len), {
          digest: list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32),
          offset: loc[o + 1]!,
          storedLength: len,
          rawLength: loc[o + 3]!,
          flags: loc[o + 4]!,
        }, name, reader.keys);
        at += len;
      }
      await write(run);
      i = j;
      // a young collection every few runs frees the runs already written (a full one per pack)
      if (++runsSinceGc >= 16) {
        Bun.gc(false);
        runsSinceGc = 0;
      }
    }
  });
  return logical;
}
