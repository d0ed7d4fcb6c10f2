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
import { closeSync, createWriteStream, fsyncSync, openSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { Writable } from "node:stream";
import { createGzip, createZstdCompress, constants as zlibConstants } from "node:zlib";
import tar from "tar-stream";
import { CairnError, errorMessage, isDiskFull } from "../errors.ts";
import { fsyncDir } from "../util/fsx.ts";
import { type ArchiveCompression, archiveRoot, compressionForName } from "./archive.ts";
import {
  encodeIndex,
  encodeManifest,
  encodeStoreInfo,
  INDEX_ENTRY_BYTES,
  indexPath,
  type Manifest,
  manifestPath,
  PACK_HEADER_BYTES,
  PACK_MAGIC,
  packPath,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  writeIndexEntry,
} from "./format.ts";
import { blockDigest, toHex } from "./hash.ts";
import { type BlockLocation, decodeBlock, LOC_WORDS, type StoreReader } from "./reader.ts";

/** Segments per pack of an archive: 8,192 blocks, 64 MiB of 8 KiB blocks. */
export const EXPORT_PACK_SEGMENTS = 32;
/** Segments whose blocks are located together: bounds the memory of a window. */
const WINDOW_SEGMENTS = EXPORT_PACK_SEGMENTS * 16;
/** Adjacent stored blocks are read from the store in runs of at most this. */
const READ_RUN_BYTES = 4 * 1024 * 1024;

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

/** The names of the packs of an archive of `m`: derived from the manifest, so re-exports match. */
function exportPackIds(m: Manifest): string[] {
  const n = Math.ceil(m.segments.length / EXPORT_PACK_SEGMENTS);
  return Array.from({ length: n }, (_, k) => toHex(blockDigest(new TextEncoder().encode(`${m.checksum}/${k}`))).slice(0, 32));
}

type EntryHeader = Partial<tar.Header> & Pick<tar.Header, "name">;

/** A tar entry written with backpressure. */
async function writeEntry(pack: tar.Pack, header: EntryHeader, body: Uint8Array | ((write: (chunk: Uint8Array) => Promise<void>) => Promise<void>)): Promise<void> {
  if (body instanceof Uint8Array) {
    await new Promise<void>((res, rej) => pack.entry(header, Buffer.from(body.buffer, body.byteOffset, body.byteLength), (e) => (e ? rej(e) : res())));
    return;
  }
  let done!: Promise<void>;
  const entry = (() => {
    let s!: Writable;
    done = new Promise<void>((res, rej) => {
      s = pack.entry(header, (e) => (e ? rej(e) : res())) as unknown as Writable;
    });
    return s;
  })();
  await body(async (chunk) => {
    if (!entry.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) await new Promise((r) => entry.once("drain", r));
  });
  entry.end();
  await done;
}

export async function exportCheckpoint(o: ExportOptions): Promise<ExportResult> {
  const t0 = performance.now();
  const output = resolve(o.output);
  const compression = compressionForName(output);
  const reader = o.reader;
  const info = await reader.info();
  const m = await reader.manifest(o.checkpointId);
  const packIds = exportPackIds(m);
  const { checksum: _old, ...rest } = m;
  const exported = encodeManifest({ ...rest, packs: packIds });
  const segmentsAt = await reader.locateSome(m.packs, m.segments);
  const root = archiveRoot(m.id);
  const mtime = new Date(m.created);
  const header = (name: string, size: number): EntryHeader => ({ name: `${root}/${name}`, size, mtime, mode: 0o644, type: "file" });

  const tmp = join(dirname(output), `.${basename(output)}.partial`);
  const pack = tar.pack();
  const file = createWriteStream(tmp, { mode: 0o600, highWaterMark: 1024 * 1024 });
  let failure: unknown;
  const fail = (e: unknown) => {
    failure ??= e;
  };
  file.on("error", fail);
  const written = new Promise<void>((res) => file.on("close", () => res()));
  if (compression === "none") pack.pipe(file);
  else {
    const z =
      compression === "gzip"
        ? createGzip({ level: 6, chunkSize: 256 * 1024 })
        : createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: 3 }, chunkSize: 256 * 1024 });
    z.on("error", fail);
    pack.pipe(z as unknown as Writable).pipe(file);
  }
  const check = () => {
    if (failure) throw failure;
    if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "export interrupted");
  };

  let done = 0;
  o.onProgress?.(0, m.db_size_bytes);
  try {
    await writeEntry(pack, header(STORE_FILE, 0), encodeStoreInfo(info));
    await writeEntry(pack, header(manifestPath(m.id), exported.length), exported);
    for (let w0 = 0; w0 < m.segments.length; w0 += WINDOW_SEGMENTS) {
      const nseg = Math.min(WINDOW_SEGMENTS, m.segments.length - w0);
      const list = await reader.segmentEntries(m, segmentsAt, w0, nseg);
      const count = list.length / SEGMENT_ENTRY_BYTES;
      const firstBlock = w0 * m.segment_blocks;
      const loc = new Uint32Array(count * LOC_WORDS);
      await reader.locateList(m.packs, list, count, loc, (b) => `checkpoint ${m.id}: block ${firstBlock + b}`);
      for (let p0 = w0; p0 < w0 + nseg; p0 += EXPORT_PACK_SEGMENTS) {
        check();
        const k = p0 / EXPORT_PACK_SEGMENTS;
        const segs = Math.min(EXPORT_PACK_SEGMENTS, w0 + nseg - p0);
        done += await writePack(pack, header, reader, m, packIds[k]!, segmentsAt, p0, segs, list, loc, firstBlock, check);
        o.onProgress?.(done, m.db_size_bytes);
      }
    }
    check();
    pack.finalize();
    await written;
    check();
    const fd = openSync(tmp, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, output);
    fsyncDir(dirname(output));
  } catch (e) {
    pack.destroy();
    file.destroy();
    rmSync(tmp, { force: true });
    const err = failure ?? e;
    if (isDiskFull(err)) {
      throw new CairnError("E_DISK_FULL", `no space left on the device holding ${output}; nothing was written`, { cause: err });
    }
    if (err instanceof CairnError) throw err;
    throw new CairnError("E_EXPORT", `cannot write ${output}: ${errorMessage(err)}`, { cause: err });
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
  pack: tar.Pack,
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
  const entries = new Uint8Array(items.length * INDEX_ENTRY_BYTES);
  let offset = PACK_HEADER_BYTES;
  let logical = 0;
  items.forEach((it, i) => {
    if ("seg" in it) {
      const l = segmentsAt.get(m.segments[it.seg]!)!;
      if (!l) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${it.seg} is in none of its packs`);
      writeIndexEntry(entries, i, { digest: l.digest, offset, storedLength: l.storedLength, rawLength: l.rawLength, flags: l.flags });
      offset += l.storedLength;
    } else {
      const o = it.block * LOC_WORDS;
      const digest = list.subarray(it.block * SEGMENT_ENTRY_BYTES, it.block * SEGMENT_ENTRY_BYTES + 32);
      writeIndexEntry(entries, i, { digest, offset, storedLength: loc[o + 2]!, rawLength: loc[o + 3]!, flags: loc[o + 4]! });
      offset += loc[o + 2]!;
      logical += loc[o + 3]!;
    }
  });
  const packBytes = offset;
  const index = encodeIndex(packBytes, entries, items.length);
  await writeEntry(pack, header(indexPath(packId), index.length), index);
  await writeEntry(pack, header(packPath(packId), packBytes), async (write) => {
    await write(new TextEncoder().encode(PACK_MAGIC));
    let i = 0;
    while (i < items.length) {
      check();
      const it = items[i]!;
      if ("seg" in it) {
        const l = segmentsAt.get(m.segments[it.seg]!)!;
        const stored = await reader.source.getRange(packPath(l.packId), l.offset, l.storedLength);
        decodeBlock(stored, l, `${reader.location}/${packPath(l.packId)}`);
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
        }, name);
        at += len;
      }
      await write(run);
      i = j;
    }
  });
  return logical;
}
