/**
 * The archive file being written by export.ts: tar-stream, then gzip or zstd (node:zlib), into
 * a new temp file beside the output (created exclusively, never through a link), fsynced, and
 * published by a rename checked to have put the file written in place.
 */
import { closeSync, createWriteStream, fstatSync, fsyncSync, openSync, renameSync, rmSync, statSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";
import type { Transform, Writable } from "node:stream";
import { createGzip, createZstdCompress, constants as zlibConstants } from "node:zlib";
import tar from "tar-stream";
import { CairnError } from "../../errors.ts";
import { FILE_MODE, fsyncDir, READ_NO_FOLLOW } from "../../util/fsx.ts";
import type { ArchiveCompression } from "./names.ts";

export type EntryHeader = Partial<tar.Header> & Pick<tar.Header, "name">;

/**
 * The archive file being written: tar-stream → gzip/zstd → a temp file. Any stream's error
 * fails every pending write at once (no write waits for a drain that will not come), and
 * tearing it down never leaves an error unheard.
 */
export class ArchiveFile {
  private readonly pack = tar.pack();
  private readonly file: WriteStream;
  private readonly z?: Transform;
  private readonly closed: Promise<void>;
  private failure: unknown;
  /** Waits in progress, failed at once if a stream fails. */
  private readonly waiting = new Set<(e: unknown) => void>();

  /** The temp file as it was created (its inode), so that what is published is known to be it. */
  private created?: { dev: number; ino: number };
  /** The temp file reopened for its fsync, kept open until the archive is in place. */
  private fd: number | undefined;

  constructor(readonly tmp: string, compression: ArchiveCompression) {
    // "wx" is O_CREAT|O_EXCL: a new file of its own, never an existing one, never through a
    // planted symlink (O_EXCL does not follow one)
    this.file = createWriteStream(tmp, { flags: "wx", mode: FILE_MODE, highWaterMark: 1024 * 1024 });
    this.file.on("open", (fd: number) => {
      const st = fstatSync(fd);
      this.created = { dev: st.dev, ino: st.ino };
    });
    this.closed = new Promise<void>((res) => this.file.on("close", () => res()));
    const fail = (e: unknown) => this.fail(e);
    this.file.on("error", fail);
    this.pack.on("error", fail);
    if (compression === "none") this.pack.pipe(this.file);
    else {
      this.z =
        compression === "gzip"
          ? createGzip({ level: 6, chunkSize: 256 * 1024 })
          : createZstdCompress({ params: { [zlibConstants.ZSTD_c_compressionLevel]: 3 }, chunkSize: 256 * 1024 });
      this.z.on("error", fail);
      this.pack.pipe(this.z as unknown as Writable).pipe(this.file);
    }
  }

  private fail(e: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = e ?? new Error("the archive stream failed");
    for (const reject of this.waiting) reject(this.failure);
    this.waiting.clear();
  }

  /** Throws what failed, if anything did. */
  check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  /** Wait for `p`, unless the streams fail first (no reaction is left behind either way). */
  private guard<T>(p: Promise<T>): Promise<T> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<T>((res, rej) => {
      this.waiting.add(rej);
      p.then(
        (v) => {
          this.waiting.delete(rej);
          res(v);
        },
        (e) => {
          this.waiting.delete(rej);
          rej(e);
        },
      );
    });
  }

  /** One entry: its whole body, or a function writing it in chunks (with backpressure). */
  async entry(header: EntryHeader, body: Uint8Array | ((write: (chunk: Uint8Array) => Promise<void>) => Promise<void>)): Promise<void> {
    this.check();
    if (body instanceof Uint8Array) {
      await this.guard(
        new Promise<void>((res, rej) => this.pack.entry({ ...header, size: body.length }, Buffer.from(body.buffer, body.byteOffset, body.byteLength), (e) => (e ? rej(e) : res()))),
      );
      return;
    }
    let entry!: Writable;
    const done = new Promise<void>((res, rej) => {
      entry = this.pack.entry(header, (e) => (e ? rej(e) : res())) as unknown as Writable;
    });
    done.catch(() => {});
    entry.on("error", (e) => this.fail(e));
    await body(async (chunk) => {
      this.check();
      if (!entry.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) await this.guard(new Promise((r) => entry.once("drain", r)));
    });
    entry.end();
    await this.guard(done);
  }

  /** The end-of-archive blocks, everything flushed and fsynced. */
  async finish(): Promise<void> {
    this.pack.finalize();
    await this.guard(this.closed);
    this.check();
    this.fd = openSync(this.tmp, READ_NO_FOLLOW);
    if (!this.isCreated(fstatSync(this.fd))) {
      this.closeFd();
      throw new CairnError("E_UNSAFE_PATH", `${this.tmp} was replaced by another file while the export wrote it`, {
        hint: "export into a folder only this user can write",
      });
    }
    fsyncSync(this.fd);
  }

  private isCreated(st: { dev: number; ino: number }): boolean {
    return this.created !== undefined && st.dev === this.created.dev && st.ino === this.created.ino;
  }

  /**
   * Rename the finished archive to `output`, make that durable, and check that what is now at
   * `output` is the file written (another user who can write the folder could have swapped it).
   */
  publish(output: string): void {
    renameSync(this.tmp, output);
    fsyncDir(dirname(output));
    const st = statSync(output);
    this.closeFd();
    if (!this.isCreated(st)) {
      throw new CairnError("E_UNSAFE_PATH", `${output} was replaced by another file while the export published it`, {
        hint: "export into a folder only this user can write",
      });
    }
  }

  private closeFd(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  /** Stop everything and remove the temp file. */
  async destroy(): Promise<void> {
    this.fail(new CairnError("E_INTERRUPTED", "export stopped"));
    this.pack.destroy();
    this.z?.destroy();
    this.file.destroy();
    await Promise.race([this.closed, Bun.sleep(1000)]);
    this.closeFd();
    rmSync(this.tmp, { force: true });
  }

  get error(): unknown {
    return this.failure;
  }
}

