/**
 * An archive file as a store backend: its files in stored order (tar, plain, gzip or zstd),
 * read as a stream and never extracted first. The tar stream must end with its end-of-archive
 * blocks, and a zstd file's frames are walked by their headers before it is streamed (zstd's
 * decoder ends quietly at a frame cut short), so a cut archive is always found out.
 *
 * What the files hold (store info, manifest, indexes before packs, in database order) is read
 * and checked by the store's stream reader (../stream-reader.ts); export.ts writes archives.
 */
import { closeSync, createReadStream, fstatSync, openSync, readSync } from "node:fs";
import { type Readable, Transform } from "node:stream";
import { createGunzip, createZstdDecompress } from "node:zlib";
import tar from "tar-stream";
import { CairnError, errorMessage } from "../../errors.ts";
import type { Backend, BackendSpec, StreamEntry, StreamReads } from "../backend.ts";
import { zstdFrame } from "../pack.ts";
import { sniffCompression } from "./names.ts";

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
function zstdFramesProblem(path: string): string | undefined {
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

export class ArchiveBackend implements Backend, StreamReads {
  constructor(
    /** The archive file, as the operator named it. */
    readonly location: string,
    private readonly file: string,
  ) {}

  get stream(): StreamReads {
    return this;
  }

  spec(): BackendSpec {
    return { kind: "archive", file: this.file };
  }

  private damaged(why: string, cause?: unknown): CairnError {
    return new CairnError("E_STORE_DAMAGED", `${this.location}: ${why}`, { cause, hint: "the archive is truncated or damaged; export it again" });
  }

  async checkWhole(): Promise<void> {
    if (sniffCompression(this.file) !== "zstd") return;
    const why = zstdFramesProblem(this.file);
    if (why) throw this.damaged(`${why} (truncated or damaged)`);
  }

  /** The archive's entries, in order, each to be read fully (or not at all) before the next. */
  async *entries(): AsyncGenerator<StreamEntry> {
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
        const body = new ExactReader(entry[Symbol.asyncIterator]());
        // an archive cut inside an entry fails while its body is read: that is damage too
        const damagedBody = (e: unknown): never => {
          throw e instanceof CairnError ? e : this.damaged(`cannot be read: ${errorMessage(failure ?? e)} (truncated or damaged)`, failure ?? e);
        };
        yield {
          path: name.slice(slash + 1),
          size: entry.header.size ?? 0,
          read: (n) => body.read(n).catch(damagedBody),
          atEnd: () => body.atEnd().catch(damagedBody),
        };
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

}
