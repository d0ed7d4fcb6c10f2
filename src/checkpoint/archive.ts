/**
 * Checkpoint archives: one checkpoint as a standard tar file (plain, gzip or zstd), written
 * by export.ts and read here as a stream, never extracted first.
 *
 * An archive is a checkpoint store of its own, under one folder, in an order made for
 * streaming:
 *
 *   cairn-checkpoint-<id>/cairn-store.json
 *   cairn-checkpoint-<id>/manifests/<id>.json        the checkpoint, its packs renamed
 *   cairn-checkpoint-<id>/packs/<xx>/<p>.idx         then, pack by pack, index before pack:
 *   cairn-checkpoint-<id>/packs/<xx>/<p>.pack        segment 0, blocks 0-255, segment 1, ...
 *
 * Every block of the database follows its segment in database order (repeated blocks are
 * stored again), so a reader rebuilds the image front to back while it checks each segment
 * against the manifest and each block against its segment, holding one segment at a time.
 * GNU tar lists and extracts it; extracted, it is a checkpoint directory like any other.
 */
import { createReadStream, closeSync, fstatSync, openSync, readSync } from "node:fs";
import { type Readable, Transform } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import tar from "tar-stream";
import { CairnError, errorMessage } from "../errors.ts";
import {
  BLOCK_KIND_DATA,
  BLOCK_KIND_SEGMENT,
  decodeIndex,
  decodeManifest,
  decodeStoreInfo,
  entryKind,
  equalBytes,
  indexPath,
  type Manifest,
  MANIFEST_NAME_RE,
  PACK_HEADER_BYTES,
  PACK_MAGIC,
  packPath,
  readIndexEntry,
  SEGMENT_ENTRY_BYTES,
  MAX_INDEX_BYTES,
  MAX_MANIFEST_BYTES,
  MAX_STORE_INFO_BYTES,
  STORE_FILE,
  type StoreInfo,
  zstdFrame,
} from "./format.ts";
import { decodeBlock } from "./reader.ts";
import { toHex } from "./hash.ts";

export type ArchiveCompression = "none" | "gzip" | "zstd";

const ARCHIVE_NAME_RE = /\.(tar|tar\.gz|tgz|tar\.zst|tzst)$/i;

/** True if `path` is named like an archive (.tar, .tar.gz, .tgz, .tar.zst, .tzst). */
export function isArchiveName(path: string): boolean {
  return ARCHIVE_NAME_RE.test(path);
}

/** The compression an output name asks for. */
export function compressionForName(path: string): ArchiveCompression {
  const m = ARCHIVE_NAME_RE.exec(path);
  if (!m) {
    throw new CairnError("E_USAGE", `${path}: the output must end in .tar, .tar.gz or .tar.zst`, { exitStatus: 2 });
  }
  const ext = m[1]!.toLowerCase();
  return ext === "tar" ? "none" : ext === "tar.gz" || ext === "tgz" ? "gzip" : "zstd";
}

/** The folder an archive of checkpoint `id` holds everything under. */
export function archiveRoot(id: number): string {
  return `cairn-checkpoint-${id}`;
}

/** What an archive's first bytes say it is compressed with (whatever its name). */
function sniffCompression(path: string): ArchiveCompression {
  const fd = openSync(path, "r");
  try {
    const head = new Uint8Array(4);
    const n = readSync(fd, head, 0, 4, 0);
    if (n >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
    if (n >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
    return "none";
  } finally {
    closeSync(fd);
  }
}

/** Bytes of the tar stream's end kept, to check its end-of-archive blocks (GNU tar pads to 10 KiB). */
const TAIL_BYTES = 16 * 1024;

function concatTail(tail: Uint8Array, chunk: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.min(TAIL_BYTES, tail.length + chunk.length));
  const keep = out.length - chunk.length;
  out.set(tail.subarray(tail.length - keep), 0);
  out.set(chunk, keep);
  return out;
}

/**
 * Walk the frames of a zstd file by their headers (RFC 8878) without decoding them: what is
 * wrong if a frame is cut short or malformed, else undefined.
 */
export function zstdFramesProblem(path: string): string | undefined {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return "the zstd stream is empty";
    const buf = new Uint8Array(8);
    const read = (at: number, n: number) => (at + n <= size && readSync(fd, buf, 0, n, at) === n ? buf.subarray(0, n) : undefined);
    for (let at = 0; at < size; ) {
      const frame = zstdFrame(read, at);
      if (typeof frame === "string") return frame;
      at += frame.bytes;
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Reads exact byte counts from a stream of chunks. */
class ExactReader {
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;

  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** `n` bytes, or fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    if (this.chunk.length - this.pos >= n) {
      const out = this.chunk.subarray(this.pos, this.pos + n);
      this.pos += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    for (;;) {
      const take = Math.min(n - got, this.chunk.length - this.pos);
      out.set(this.chunk.subarray(this.pos, this.pos + take), got);
      got += take;
      this.pos += take;
      if (got === n) return out;
      const next = await this.it.next();
      if (next.done) return out.subarray(0, got);
      this.chunk = next.value;
      this.pos = 0;
    }
  }

  /** True if nothing is left. */
  async atEnd(): Promise<boolean> {
    if (this.pos < this.chunk.length) return false;
    for (;;) {
      const next = await this.it.next();
      if (next.done) return true;
      if (next.value.length > 0) {
        this.chunk = next.value;
        this.pos = 0;
        return false;
      }
    }
  }
}

interface ArchiveEntry {
  /** The path inside the store (the top folder taken off). */
  path: string;
  size: number;
  body: ExactReader;
}

/** What the stream gives each data block: its number in the image, and its bytes. */
export type BlockSink = (block: number, data: Uint8Array) => void | Promise<void>;

export class ArchiveReader {
  readonly kind = "archive" as const;
  private head?: { info: StoreInfo; manifest: Manifest };

  constructor(
    /** The archive file, as the operator named it. */
    readonly location: string,
    private readonly file: string,
  ) {}

  private damaged(why: string, cause?: unknown): CairnError {
    return new CairnError("E_STORE_DAMAGED", `${this.location}: ${why}`, { cause, hint: "the archive is truncated or damaged; export it again" });
  }

  /** The archive's entries, in order, each to be read fully (or not at all) before the next. */
  private async *entries(): AsyncGenerator<ArchiveEntry> {
    const compression = sniffCompression(this.file);
    const input = createReadStream(this.file, { highWaterMark: 1024 * 1024 });
    const extract = tar.extract();
    let failure: unknown;
    const fail = (e: unknown) => {
      failure ??= e;
      extract.destroy(e as Error);
    };
    input.on("error", fail);
    // the tar stream's length and its last bytes, to find its end-of-archive blocks
    let total = 0;
    let tail: Uint8Array = new Uint8Array(0);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        total += chunk.length;
        tail = chunk.length >= TAIL_BYTES ? new Uint8Array(chunk.subarray(chunk.length - TAIL_BYTES)) : concatTail(tail, chunk);
        cb(null, chunk);
      },
    });
    tap.on("error", fail);
    if (compression === "none") input.pipe(tap).pipe(extract as unknown as NodeJS.WritableStream);
    else {
      const z = compression === "gzip" ? createGunzip() : createZstdDecompress();
      z.on("error", fail);
      input.pipe(z).pipe(tap).pipe(extract as unknown as NodeJS.WritableStream);
    }
    let root: string | undefined;
    let lastEnd = 0;
    try {
      for await (const entry of extract as AsyncIterable<Readable & { header: tar.Header; offset: number }>) {
        lastEnd = entry.offset + 512 + Math.ceil((entry.header.size ?? 0) / 512) * 512;
        const name = entry.header.name.replace(/^\.\//, "");
        const slash = name.indexOf("/");
        const top = slash < 0 ? name : name.slice(0, slash);
        root ??= top;
        if (entry.header.type === "directory") {
          entry.resume();
          continue;
        }
        if (top !== root || slash < 0) throw this.damaged(`unexpected entry ${name} (not under ${root}/)`);
        yield { path: name.slice(slash + 1), size: entry.header.size ?? 0, body: new ExactReader(entry[Symbol.asyncIterator]()) };
        entry.resume();
      }
    } catch (e) {
      if (e instanceof CairnError) throw e;
      throw this.damaged(`cannot be read: ${errorMessage(failure ?? e)} (truncated or damaged)`, failure ?? e);
    } finally {
      input.destroy();
      extract.destroy();
    }
    if (failure) throw this.damaged(`cannot be read: ${errorMessage(failure)}`, failure);
    // a tar ends with two zero blocks; without them the archive was cut after its last entry
    const markerAt = tail.length - (total - lastEnd);
    if (total - lastEnd < 1024 || markerAt < 0 || !tail.subarray(markerAt, markerAt + 1024).every((b) => b === 0)) {
      throw this.damaged("the archive's end-of-archive marker is missing (truncated)");
    }
  }

  /** A whole entry, of at most `maxBytes` (the format's limit for what it holds): never more is allocated. */
  private async readWhole(e: ArchiveEntry, maxBytes: number): Promise<Uint8Array> {
    if (e.size > maxBytes) throw this.damaged(`${e.path} is ${e.size} bytes, more than such a file can be (${maxBytes})`);
    const data = await e.body.read(e.size);
    if (data.length !== e.size) throw this.damaged(`${e.path} is cut short (truncated archive)`);
    return data;
  }

  /** Read the store info and the manifest (the first two entries): all that listing needs. */
  private async readHead(it: AsyncGenerator<ArchiveEntry>): Promise<{ info: StoreInfo; manifest: Manifest }> {
    const notExport = () =>
      new CairnError("E_NOT_A_STORE", `${this.location} is not a checkpoint archive written by cairn export-db-checkpoint`, {
        hint: "extract it and give the folder instead",
      });
    let next = await it.next();
    if (next.done) throw this.damaged("the archive is empty or cut short");
    if (next.value.path !== STORE_FILE) throw notExport();
    const info = decodeStoreInfo(await this.readWhole(next.value, MAX_STORE_INFO_BYTES), `${this.location}:${STORE_FILE}`);
    next = await it.next();
    if (next.done) throw this.damaged("the archive ends before its manifest (truncated)");
    const mm = /^manifests\/(.+)$/.exec(next.value.path);
    if (!mm || !MANIFEST_NAME_RE.test(mm[1]!)) throw notExport();
    const manifest = decodeManifest(await this.readWhole(next.value, MAX_MANIFEST_BYTES), `${this.location}:${next.value.path}`);
    return { info, manifest };
  }

  private async ensureHead(): Promise<{ info: StoreInfo; manifest: Manifest }> {
    if (!this.head) {
      const it = this.entries();
      try {
        this.head = await this.readHead(it);
      } finally {
        await it.return(undefined);
      }
    }
    return this.head;
  }

  async info(): Promise<StoreInfo> {
    return (await this.ensureHead()).info;
  }

  async exists(): Promise<boolean> {
    await this.ensureHead();
    return true;
  }

  async manifestIds(): Promise<number[]> {
    return [(await this.ensureHead()).manifest.id];
  }

  async manifest(id: number): Promise<Manifest> {
    const { manifest } = await this.ensureHead();
    if (manifest.id !== id) throw new CairnError("E_STORE_MISSING", `${this.location} holds checkpoint ${manifest.id}, not ${id}`);
    return manifest;
  }

  /**
   * Stream the whole archive: check every index, pack, segment and block, and hand each data
   * block to `sink` in database order.
   */
  async streamBlocks(sink: BlockSink, opts: { signal?: AbortSignal } = {}): Promise<Manifest> {
    // zstd's decoder ends quietly at a frame cut short: walk the frames first
    if (sniffCompression(this.file) === "zstd") {
      const why = zstdFramesProblem(this.file);
      if (why) throw this.damaged(`${why} (truncated or damaged)`);
    }
    const it = this.entries();
    try {
      const { manifest: m } = await this.readHead(it);
      let nextSegment = 0;
      let segment: Uint8Array | undefined;
      let segmentPos = 0;
      let segmentLen = 0;
      for (let p = 0; p < m.packs.length; p++) {
        const packId = m.packs[p]!;
        let e = await it.next();
        if (e.done) throw this.damaged(`ends before ${indexPath(packId)} (truncated)`);
        if (e.value.path !== indexPath(packId)) throw this.damaged(`expected ${indexPath(packId)}, found ${e.value.path}`);
        const idx = decodeIndex(await this.readWhole(e.value, MAX_INDEX_BYTES), `${this.location}:${indexPath(packId)}`);
        e = await it.next();
        if (e.done) throw this.damaged(`ends before ${packPath(packId)} (truncated)`);
        if (e.value.path !== packPath(packId)) throw this.damaged(`expected ${packPath(packId)}, found ${e.value.path}`);
        const pack = e.value;
        const name = `${this.location}:${packPath(packId)}`;
        if (pack.size !== idx.packBytes) throw this.damaged(`${packPath(packId)} is ${pack.size} bytes, its index says ${idx.packBytes}`);
        const magic = await pack.body.read(PACK_HEADER_BYTES);
        if (new TextDecoder().decode(magic) !== PACK_MAGIC) throw this.damaged(`${packPath(packId)} is not a pack (bad magic)`);
        let offset = PACK_HEADER_BYTES;
        for (let i = 0; i < idx.count; i++) {
          if (opts.signal?.aborted) throw new CairnError("E_INTERRUPTED", "interrupted");
          const entry = readIndexEntry(idx, i);
          if (entry.offset !== offset) throw this.damaged(`${packPath(packId)} is not in stream order (entry ${i})`);
          const stored = await pack.body.read(entry.storedLength);
          if (stored.length !== entry.storedLength) throw this.damaged(`${packPath(packId)} is cut short at offset ${offset} (truncated archive)`);
          offset += entry.storedLength;
          const kind = entryKind(entry.flags);
          if (kind === BLOCK_KIND_SEGMENT) {
            if (segment && segmentPos !== segmentLen) throw this.damaged(`segment ${nextSegment - 1} is missing blocks`);
            if (nextSegment >= m.segments.length || toHex(entry.digest) !== m.segments[nextSegment]) {
              throw this.damaged(`segment ${nextSegment} is not the one the manifest names`);
            }
            segment = decodeBlock(stored, entry, name).slice();
            segmentLen = Math.min(m.segment_blocks, m.block_count - nextSegment * m.segment_blocks);
            if (segment.length !== segmentLen * SEGMENT_ENTRY_BYTES) throw this.damaged(`segment ${nextSegment} has the wrong length`);
            segmentPos = 0;
            nextSegment++;
          } else if (kind === BLOCK_KIND_DATA) {
            if (!segment || segmentPos >= segmentLen) throw this.damaged(`a block at offset ${entry.offset} of ${packPath(packId)} has no segment`);
            const block = (nextSegment - 1) * m.segment_blocks + segmentPos;
            const want = segment.subarray(segmentPos * SEGMENT_ENTRY_BYTES, segmentPos * SEGMENT_ENTRY_BYTES + 32);
            if (!equalBytes(entry.digest, want)) throw this.damaged(`block ${block} is not the one its segment names`);
            segmentPos++;
            await sink(block, decodeBlock(stored, entry, name));
          } else throw this.damaged(`unknown block kind ${kind} in ${packPath(packId)}`);
        }
        if (!(await pack.body.atEnd())) throw this.damaged(`${packPath(packId)} has bytes its index does not name`);
      }
      if (nextSegment !== m.segments.length || segmentPos !== segmentLen) throw this.damaged(`holds ${nextSegment} of ${m.segments.length} segments (truncated)`);
      // the tar must end cleanly too: a cut archive fails here even after the last block
      const rest = await it.next();
      if (!rest.done) throw this.damaged(`unexpected entry ${rest.value.path} after the last pack`);
      return m;
    } catch (e) {
      if (e instanceof CairnError) throw e;
      throw this.damaged(`cannot be read: ${errorMessage(e)} (truncated or damaged)`, e);
    } finally {
      await it.return(undefined);
    }
  }
}
