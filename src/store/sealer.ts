/**
 * Sealing an encrypted store's new blocks on a thread of their own, while the checkpoint
 * worker that found them goes on reading and hashing the next ones (checkpoint/range-job.ts):
 * a full checkpoint is bound by that worker's CPU, and sealing (one AES-256-CTR pass and a
 * cipher set up per block) would otherwise add to it. Only a checkpoint with many blocks to
 * seal starts the thread; a small one seals in place (store/crypto.ts's sealBlockParts).
 *
 * The worker lays each block out in its pack at once (PackFile.reserve: its offset, length
 * and index entry are known, a sealed block being 4 bytes longer than what it seals) and
 * hands the block here; after each read chunk it submits the chunk's blocks as one job. Jobs
 * alternate between two slots, each a read chunk, a side buffer (bytes that are not in the
 * chunk: compressed blocks, segments) and an output buffer, all shared with the thread; the
 * thread seals each job's blocks one after another into the slot's output and writes them into
 * their packs at the offsets they were laid out at, itself (the bytes are in its core's cache;
 * the worker copying them out from another core cost as much as sealing them). At most one job
 * is sealed while the next is gathered, so a slot's buffers are free again when the worker
 * reads into them.
 */
import { closeSync, constants, openSync } from "node:fs";
import { CairnError } from "../errors.ts";
import { writeFully } from "../util/fsx.ts";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { BLOCK_SEAL_BYTES, type DataKeys, type KeyringSpec, sealBlockInto, StoreKeys } from "./crypto.ts";
import { type PackFile, WriteBack } from "./pack-writer.ts";

/** Sealed bytes to write: `bytes` of the output, in order, at `offset` of the pack file at `path`. */
interface PackWrite {
  path: string;
  offset: number;
  bytes: number;
}

export type SealJob =
  | { job: "seal"; op: "init"; keys: KeyringSpec; sync: boolean; chunks: SharedArrayBuffer[]; sides: SharedArrayBuffer[]; outs: SharedArrayBuffer[] }
  | { job: "seal"; op: "seal"; slot: number; count: number; ivs: Uint8Array; spans: Uint32Array; writes: PackWrite[] }
  | { job: "seal"; op: "release" };

/** Where a block to seal is: in the slot's chunk (0) or side buffer (1), its offset and length. */
const SPAN_WORDS = 3;
const IV_BYTES = 16;
/** Side room beyond a chunk's worth: segments gathered between chunks. */
const SIDE_EXTRA_BYTES = 1024 * 1024;

// ---- the sealing thread ----------------------------------------------------------------------

let sealKeys: DataKeys | undefined;
let chunks: Uint8Array[] = [];
let sides: Uint8Array[] = [];
let outs: Uint8Array[] = [];
let syncWrites = false;
/** The packs written to: their descriptors (this thread's own) and write-back. */
const files = new Map<string, { fd: number; writeBack: WriteBack }>();

function closeFiles(keep?: Set<string>): void {
  for (const [path, f] of files) {
    if (keep?.has(path)) continue;
    files.delete(path);
    closeSync(f.fd);
  }
}

export function sealJob(msg: SealJob): number | undefined {
  if (msg.op === "init") {
    sealKeys = new StoreKeys(msg.keys).current;
    syncWrites = msg.sync;
    chunks = msg.chunks.map((b) => new Uint8Array(b));
    sides = msg.sides.map((b) => new Uint8Array(b));
    outs = msg.outs.map((b) => new Uint8Array(b));
    // background work, as the checkpoint worker it serves
    lowerThisThreadPriority(10);
    return undefined;
  }
  if (msg.op === "release") {
    closeFiles();
    return undefined;
  }
  const k = sealKeys!;
  const out = outs[msg.slot]!;
  let at = 0;
  for (let i = 0; i < msg.count; i++) {
    const src = msg.spans[i * SPAN_WORDS] === 0 ? chunks[msg.slot]! : sides[msg.slot]!;
    const from = msg.spans[i * SPAN_WORDS + 1]!;
    const plain = src.subarray(from, from + msg.spans[i * SPAN_WORDS + 2]!);
    at += sealBlockInto(k, msg.ivs.subarray(i * IV_BYTES, (i + 1) * IV_BYTES), plain, out, at);
  }
  let from = 0;
  for (const w of msg.writes) {
    let f = files.get(w.path);
    if (!f) {
      // the worker created the pack (exclusively, in the store's tmp/): never through a link
      const fd = openSync(w.path, constants.O_WRONLY | constants.O_NOFOLLOW);
      f = { fd, writeBack: new WriteBack(fd, syncWrites, w.offset) };
      files.set(w.path, f);
    }
    writeFully(f.fd, out.subarray(from, from + w.bytes), w.offset);
    f.writeBack.wrote(w.offset + w.bytes);
    from += w.bytes;
  }
  if (from !== at) throw new CairnError("E_INTERNAL", `${at} bytes sealed, ${from} laid out`);
  // a pack this job did not write to is full and closed
  closeFiles(new Set(msg.writes.map((w) => w.path)));
  return at;
}

// ---- the checkpoint worker's side ----------------------------------------------------------------

interface Gathering {
  count: number;
  sideUsed: number;
  outUsed: number;
  /** Consecutive blocks laid out in the same pack: where in it, and how many bytes of the output it gets. */
  parts: { pack: PackFile; offset: number; bytes: number }[];
}

export class BlockSealer {
  private readonly pool = new WorkerPool(1);
  private readonly started: Promise<unknown>;
  private readonly chunkViews: Uint8Array[];
  private readonly sideViews: Uint8Array[];
  private readonly outViews: Uint8Array[];
  private readonly ivs: Uint8Array;
  private readonly spans: Uint32Array;
  private slot = 0;
  private job: Gathering = { count: 0, sideUsed: 0, outUsed: 0, parts: [] };
  private inFlight?: { done: Promise<number>; job: Gathering };
  /** Blocks added so far. */
  sealed = 0;

  /** Jobs of at most `maxBlocks` blocks, from chunks of `chunkBytes` and as many bytes more from elsewhere. */
  constructor(
    keys: KeyringSpec,
    sync: boolean,
    chunkBytes: number,
    private readonly maxBlocks: number,
  ) {
    const shared = (n: number) => [new SharedArrayBuffer(n), new SharedArrayBuffer(n)];
    const chunks = shared(chunkBytes);
    // a job is at most one chunk's blocks (each sealed from at most its own bytes) and what
    // fits in the side buffer (compressed blocks, segments); pages never written stay unmapped
    const sides = shared(chunkBytes + SIDE_EXTRA_BYTES);
    const outs = shared(2 * chunkBytes + SIDE_EXTRA_BYTES + maxBlocks * BLOCK_SEAL_BYTES);
    this.chunkViews = chunks.map((b) => new Uint8Array(b));
    this.sideViews = sides.map((b) => new Uint8Array(b));
    this.outViews = outs.map((b) => new Uint8Array(b));
    this.ivs = new Uint8Array(maxBlocks * IV_BYTES);
    this.spans = new Uint32Array(maxBlocks * SPAN_WORDS);
    this.started = this.pool.call<undefined, SealJob>(0, { job: "seal", op: "init", keys, sync, chunks, sides, outs });
    // awaited by the first submit; a thread stopped before that must not leave it unhandled
    this.started.catch(() => {});
  }

  /** The buffer to read the next chunk into: blocks added from it are sealed from there. */
  get chunk(): Uint8Array {
    return this.chunkViews[this.slot]!;
  }

  /** Whether `n` more blocks of `bytes` in all (outside the chunk) fit in the job gathered now. */
  fits(n: number, bytes: number): boolean {
    return this.job.count + n <= this.maxBlocks && this.job.sideUsed + bytes <= this.sideViews[this.slot]!.length;
  }

  /**
   * A block laid out in `pack` at `offset` just now (PackFile.reserve), to be sealed: `plain`
   * is at `chunkAt` in `chunk`, or (-1) elsewhere and is copied. `digest` holds its keyed digest.
   */
  add(pack: PackFile, offset: number, digest: Uint8Array, plain: Uint8Array, chunkAt: number): void {
    const j = this.job;
    const fitsOut = j.outUsed + BLOCK_SEAL_BYTES + plain.length <= this.outViews[this.slot]!.length;
    if (!fitsOut || !this.fits(1, chunkAt >= 0 ? 0 : plain.length)) throw new CairnError("E_INTERNAL", "a sealing job is full: submit it first");
    const s = j.count * SPAN_WORDS;
    if (chunkAt >= 0) {
      this.spans[s] = 0;
      this.spans[s + 1] = chunkAt;
    } else {
      this.sideViews[this.slot]!.set(plain, j.sideUsed);
      this.spans[s] = 1;
      this.spans[s + 1] = j.sideUsed;
      j.sideUsed += plain.length;
    }
    this.spans[s + 2] = plain.length;
    this.ivs.set(digest.subarray(0, IV_BYTES), j.count * IV_BYTES);
    j.count++;
    this.sealed++;
    const n = BLOCK_SEAL_BYTES + plain.length;
    j.outUsed += n;
    const last = j.parts[j.parts.length - 1];
    if (last && last.pack === pack && last.offset + last.bytes === offset) last.bytes += n;
    else j.parts.push({ pack, offset, bytes: n });
  }

  /**
   * Send the gathered blocks to be sealed and written, then wait for the job before it. The
   * chunk and side buffers to use next are free on return.
   */
  async submit(): Promise<void> {
    const job = this.job;
    let sent: typeof this.inFlight;
    if (job.count > 0) {
      await this.started;
      const done = this.pool.call<number, SealJob>(0, {
        job: "seal",
        op: "seal",
        slot: this.slot,
        count: job.count,
        ivs: this.ivs.slice(0, job.count * IV_BYTES),
        spans: this.spans.slice(0, job.count * SPAN_WORDS),
        writes: job.parts.map((p) => ({ path: p.pack.path("pack"), offset: p.offset, bytes: p.bytes })),
      });
      // awaited by the next submit or drain, unless the thread is stopped first
      done.catch(() => {});
      sent = { done, job };
      this.slot ^= 1;
      this.job = { count: 0, sideUsed: 0, outUsed: 0, parts: [] };
    }
    const before = this.inFlight;
    this.inFlight = sent;
    if (before) await this.settle(before);
  }

  /** Everything added is sealed and written into its pack. */
  async drain(): Promise<void> {
    await this.submit();
    const last = this.inFlight;
    this.inFlight = undefined;
    if (last) await this.settle(last);
  }

  /** A job sealed and written: its packs told how many of their laid-out bytes are now in them. */
  private async settle(f: { done: Promise<number>; job: Gathering }): Promise<void> {
    const n = await f.done;
    if (n !== f.job.outUsed) throw new CairnError("E_INTERNAL", `the sealing thread wrote ${n} bytes, ${f.job.outUsed} were laid out`);
    for (const p of f.job.parts) p.pack.writtenElsewhere(p.bytes);
  }

  /** Stop the thread, its pack descriptors closed first (what was not written is abandoned with its packs). */
  async close(): Promise<void> {
    try {
      await this.pool.call<undefined, SealJob>(0, { job: "seal", op: "release" });
    } catch {
      // the thread failed: nothing more to close
    } finally {
      this.pool.terminate(new CairnError("E_CANCELLED", "the sealing thread was stopped"));
    }
  }
}
