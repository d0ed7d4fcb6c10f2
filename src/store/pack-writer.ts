/**
 * The one pack writer. PackLayout lays a pack out: each block added gets the next offset and
 * an index entry, and the index is encoded from them. PackFile writes a laid-out pack to a
 * file in a folder cairn owns (a store's tmp/), then its index beside it: a checkpoint's
 * workers and garbage collection write packs this way; export lays packs out the same way and
 * streams them into an archive (its index must come first there).
 */
import { closeSync, fdatasyncSync, fsyncSync, openSync } from "node:fs";
import { open as openAsync } from "node:fs/promises";
import { windowDone } from "../util/writeback.ts";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { crashPoint } from "../util/crash-point.ts";
import { CREATE_EXCLUSIVE, FILE_MODE, writeFully } from "../util/fsx.ts";
import type { StoreKeys } from "./crypto.ts";
import { indexPath } from "./format.ts";
import { toHex } from "./hash.ts";
import { encodeIndex, INDEX_ENTRY_BYTES, PACK_HEADER_BYTES, PACK_MAGIC, PACK_MAX_ENTRIES } from "./pack.ts";

const ENTRY_WORDS = INDEX_ENTRY_BYTES / 4;
const MAGIC = new TextEncoder().encode(PACK_MAGIC);

export function newPackId(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/** Offsets and index entries of a pack being laid out. */
export class PackLayout {
  private entries = new Uint8Array(INDEX_ENTRY_BYTES * 1024);
  private words = new Uint32Array(this.entries.buffer);
  count = 0;
  /** Bytes of the pack so far, its magic included. */
  bytes = PACK_HEADER_BYTES;

  /**
   * Add a block whose digest is the 8 words of `digest` from word `at` (little-endian words,
   * as a Uint32Array over digest bytes reads them); returns the block's offset in the pack.
   */
  add(digest: Uint32Array, at: number, storedLength: number, rawLength: number, flags: number): number {
    if ((this.count + 1) * INDEX_ENTRY_BYTES > this.entries.length) {
      const grown = new Uint8Array(this.entries.length * 2);
      grown.set(this.entries);
      this.entries = grown;
      this.words = new Uint32Array(grown.buffer);
    }
    const e = this.count++ * ENTRY_WORDS;
    const w = this.words;
    for (let k = 0; k < 8; k++) w[e + k] = digest[at + k]!;
    const offset = this.bytes;
    w[e + 8] = offset;
    w[e + 9] = storedLength;
    w[e + 10] = rawLength;
    w[e + 11] = flags;
    this.bytes += storedLength;
    return offset;
  }

  /** add() for a digest held as bytes. */
  addBytes(digest: Uint8Array, storedLength: number, rawLength: number, flags: number): number {
    const words = new Uint32Array(8);
    new Uint8Array(words.buffer).set(digest.subarray(0, 32));
    return this.add(words, 0, storedLength, rawLength, flags);
  }

  /** Whether the pack should be closed: `targetBytes` reached, or as many entries as an index may hold. */
  full(targetBytes: number): boolean {
    return this.bytes >= targetBytes || this.count >= PACK_MAX_ENTRIES;
  }

  index(): Uint8Array {
    return encodeIndex(this.bytes, this.entries, this.count);
  }
}

export interface PackWritten {
  packId: string;
  packBytes: number;
  indexBytes: number;
  blocks: number;
}

export interface PackFileOptions {
  /** fsync the pack and its index when closed, and fdatasync the pack every SYNC_EVERY bytes. */
  sync: boolean;
  /**
   * With `sync`: leave the fsync at close to the caller (`syncPackFiles`, for several packs at
   * once, when their write-back has long begun) rather than waiting for it at each pack.
   */
  deferSync?: boolean;
  /** Called after every write with its length (an I/O rate limit sleeps there). */
  onWrite?: (bytes: number) => void;
  /** Names crash points "<prefix>:pack-written" and "<prefix>:index-written" (tests). */
  crashPrefix?: string;
  /** An encrypted store's keys: the index is sealed (the caller seals the blocks). */
  keys?: StoreKeys;
}

/**
 * With `sync`, a pack's write-back is started every SYNC_EVERY bytes and the window before
 * waited for (util/writeback.ts), rather than all of it flushed at the end, so that no single
 * large flush queues ahead of the node's own commit fsyncs; the fsync at close makes it durable.
 */
const SYNC_EVERY = 2 * 1024 * 1024;
const WINDOWS_IN_FLIGHT = 8;
const WRITE_BUFFER_BYTES = 1024 * 1024;

/** With `sync`, the write-back of a file written front to back from `from`, a window at a time. */
export class WriteBack {
  /** Where the window being written starts. */
  private start: number;

  constructor(
    private readonly fd: number,
    private readonly sync: boolean,
    from = 0,
  ) {
    this.start = from;
  }

  /** The file is written up to `end`. */
  wrote(end: number): void {
    if (!this.sync || end - this.start < SYNC_EVERY) return;
    // the disk works on the last WINDOWS_IN_FLIGHT windows while the writer goes on
    if (!windowDone(this.fd, this.start, end, Math.max(0, this.start - (WINDOWS_IN_FLIGHT - 1) * SYNC_EVERY))) fdatasyncSync(this.fd);
    this.start = end;
  }
}

/**
 * A pack written to `<dir>/<id>.pack` (created exclusively, never through a link), its index
 * to `<dir>/<id>.idx` on close. Bytes are either copied into a write buffer (append) or, when
 * they already sit in a buffer of the caller's that stays put until flushRun (a checkpoint's
 * read chunk), written from there without a copy (appendRun): runs of adjacent bytes of the
 * same buffer become one write.
 */
export class PackFile {
  readonly packId = newPackId();
  readonly layout = new PackLayout();
  private readonly fd: number;
  private readonly writeBack: WriteBack;
  /** Bytes written so far. */
  private written = 0;
  private readonly buffer = new Uint8Array(WRITE_BUFFER_BYTES);
  private buffered = 0;
  private run?: { buf: Uint8Array; start: number; end: number };
  /** Bytes laid out by reserve() and not yet written. */
  private reserved = 0;
  /** Blocks are laid out for another thread to write (reserve). */
  private elsewhere = false;

  constructor(
    readonly dir: string,
    private readonly opts: PackFileOptions,
  ) {
    this.fd = openSync(this.path("pack"), CREATE_EXCLUSIVE, FILE_MODE);
    this.writeBack = new WriteBack(this.fd, opts.sync);
    this.buffer.set(MAGIC, 0);
    this.buffered = MAGIC.length;
  }

  path(ext: "pack" | "idx"): string {
    return join(this.dir, `${this.packId}.${ext}`);
  }

  private write(data: Uint8Array): void {
    writeFully(this.fd, data);
    this.opts.onWrite?.(data.length);
    this.written += data.length;
    this.writeBack.wrote(this.written);
  }

  /** Write what waits in the caller's buffer: call before that buffer changes. */
  flushRun(): void {
    const r = this.run;
    if (!r) return;
    this.run = undefined;
    this.write(r.buf.subarray(r.start, r.end));
  }

  private flushBuffer(): void {
    if (this.buffered === 0) return;
    this.write(this.buffer.subarray(0, this.buffered));
    this.buffered = 0;
  }

  /** Once blocks are written by another thread (reserve), this one writes none: its own would land at its end of the file. */
  private assertWrittenHere(): void {
    if (this.elsewhere) throw new CairnError("E_INTERNAL", `pack ${this.packId}: a block appended here after blocks laid out for another thread to write`);
  }

  /** Whether bytes laid out by reserve() are still to be written. */
  get writesPending(): boolean {
    return this.reserved > 0;
  }

  /**
   * Lay out a block whose stored bytes another thread writes at its offset (a block sealed
   * on the sealing thread, store/sealer.ts): its offset and index entry now. From the first
   * such block on, every block of the pack is written that way.
   */
  reserve(digest: Uint32Array, at: number, storedLength: number, rawLength: number, flags: number): number {
    if (!this.elsewhere) {
      this.flushRun();
      this.flushBuffer();
      this.elsewhere = true;
    }
    this.reserved += storedLength;
    return this.layout.add(digest, at, storedLength, rawLength, flags);
  }

  /** The next `bytes` laid out by reserve() were written (by the thread that sealed them). */
  writtenElsewhere(bytes: number): void {
    if (bytes > this.reserved) throw new CairnError("E_INTERNAL", `pack ${this.packId}: ${bytes} bytes written for ${this.reserved} laid out`);
    this.reserved -= bytes;
    this.opts.onWrite?.(bytes);
  }

  private copyIn(payload: Uint8Array): void {
    this.flushRun();
    if (this.buffered + payload.length > this.buffer.length) this.flushBuffer();
    if (payload.length > this.buffer.length) this.write(payload);
    else {
      this.buffer.set(payload, this.buffered);
      this.buffered += payload.length;
    }
  }

  /** Add a block's stored bytes, copied. */
  append(digest: Uint32Array, at: number, payload: Uint8Array, rawLength: number, flags: number): number {
    this.assertWrittenHere();
    this.copyIn(payload);
    return this.layout.add(digest, at, payload.length, rawLength, flags);
  }

  /** Add a block's stored bytes given in two parts (a sealed block's header and ciphertext), copied one after the other. */
  appendParts(digest: Uint32Array, at: number, head: Uint8Array, body: Uint8Array, rawLength: number, flags: number): number {
    this.assertWrittenHere();
    this.copyIn(head);
    this.copyIn(body);
    return this.layout.add(digest, at, head.length + body.length, rawLength, flags);
  }

  /** Add a block's stored bytes, `buf[start, end)`, written from `buf` itself at the next flushRun. */
  appendRun(digest: Uint32Array, at: number, buf: Uint8Array, start: number, end: number, rawLength: number, flags: number): number {
    this.assertWrittenHere();
    this.flushBuffer();
    if (this.run && (this.run.buf !== buf || this.run.end !== start)) this.flushRun();
    if (this.run) this.run.end = end;
    else this.run = { buf, start, end };
    return this.layout.add(digest, at, end - start, rawLength, flags);
  }

  /** Finish the pack (fsynced with `sync`), then write its index beside it. */
  close(): PackWritten {
    if (this.reserved > 0) throw new CairnError("E_INTERNAL", `pack ${this.packId}: closed with ${this.reserved} laid-out bytes not written`);
    this.flushRun();
    this.flushBuffer();
    const syncNow = this.opts.sync && !this.opts.deferSync;
    if (syncNow) fsyncSync(this.fd);
    closeSync(this.fd);
    if (this.opts.crashPrefix) crashPoint(`${this.opts.crashPrefix}:pack-written`);
    const idx = this.opts.keys ? this.opts.keys.sealObject(indexPath(this.packId), this.layout.index()) : this.layout.index();
    const fd = openSync(this.path("idx"), CREATE_EXCLUSIVE, FILE_MODE);
    try {
      writeFully(fd, idx);
      this.opts.onWrite?.(idx.length);
      if (syncNow) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (this.opts.crashPrefix) crashPoint(`${this.opts.crashPrefix}:index-written`);
    return { packId: this.packId, packBytes: this.layout.bytes, indexBytes: idx.length, blocks: this.layout.count };
  }

  /** Give up the pack: the descriptor is closed; the caller removes the files (tmp/ is emptied). */
  abandon(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/**
 * fsync the packs (and their indexes) written to `dir` with `deferSync`, all at once, off the
 * calling thread: their write-back began as they were written, so this mostly waits for the
 * last of it, and the waits overlap.
 */
export async function syncPackFiles(dir: string, packIds: string[]): Promise<void> {
  await Promise.all(
    packIds.flatMap((id) =>
      (["pack", "idx"] as const).map(async (ext) => {
        const fh = await openAsync(join(dir, `${id}.${ext}`), "r");
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }),
    ),
  );
}
