/**
 * Background I/O that gives way to the node's commits. A checkpoint reads and writes as fast as
 * the disk allows while the node is idle; while clients write, every commit waits for its WAL
 * fsync, and on one disk that fsync queues behind whatever the checkpoint has in flight (the
 * device serves them in order; neither I/O priorities nor O_DIRECT change that on the virtual
 * disks measured). So the node publishes how long its commits take (`CommitPressure`, in
 * shared memory), and a checkpoint worker paces its writes by it (`IoPacer`): additive
 * increase, multiplicative decrease, like TCP's congestion window: an interval whose slowest
 * commit is well slower than the usual slowest before the checkpoint started halves the rate;
 * a quiet interval raises it again. Reads are not paced: those the page cache serves cost the
 * disk nothing.
 *
 * Giving way has a cost: the checkpoint's snapshot keeps the WAL from being folded, so the WAL
 * grows by everything clients write for as long as the checkpoint runs. The node publishes the
 * WAL's size too, and once it passes a limit (`maxPacedWalBytes`) the pacer stops giving way
 * for the rest of the work: the checkpoint ends, and its pin with it, as soon as the disk allows.
 */

/**
 * Words of the shared buffer: the last commit's end (Date.now()); the usual slowest commit of
 * an interval (a moving average of each interval's slowest); the slowest commit since the
 * pacer last looked (ms); the WAL's bytes after the last commit; the most the WAL held when a
 * pacer stopped giving way for it (0: none has, since resetWalLimitReached).
 */
const LAST_END = 0;
const USUAL_SLOWEST = 1;
const SLOWEST = 2;
const WAL_BYTES = 3;
const WAL_LIMIT_REACHED = 4;
const WORDS = 5;
/** The interval both sides look at. */
const TICK_MS = 100;

/** The node's side: told of every commit. */
export class CommitPressure {
  readonly buffer = new SharedArrayBuffer(WORDS * 8);
  private readonly w = new Float64Array(this.buffer);
  private bucketStart = 0;
  private bucketSlowest = 0;

  /** The WAL holds `bytes` after a commit. */
  noteWal(bytes: number): void {
    this.w[WAL_BYTES] = bytes;
  }

  note(ms: number): void {
    const w = this.w;
    const now = Date.now();
    w[LAST_END] = now;
    if (ms > w[SLOWEST]!) w[SLOWEST] = ms;
    if (now - this.bucketStart >= TICK_MS) {
      if (this.bucketStart > 0) w[USUAL_SLOWEST] = w[USUAL_SLOWEST] === 0 ? this.bucketSlowest : w[USUAL_SLOWEST]! * 0.9 + this.bucketSlowest * 0.1;
      this.bucketStart = now;
      this.bucketSlowest = 0;
    }
    if (ms > this.bucketSlowest) this.bucketSlowest = ms;
  }
}

/** The WAL's size when a pacer last stopped giving way for it (0: none did since the reset). */
export function walLimitReached(pressure: SharedArrayBuffer): number {
  return new Float64Array(pressure)[WAL_LIMIT_REACHED]!;
}

export function resetWalLimitReached(pressure: SharedArrayBuffer): void {
  new Float64Array(pressure)[WAL_LIMIT_REACHED] = 0;
}

export interface IoPacerOptions {
  /** A fixed ceiling in bytes per second (0: none). */
  maxBytesPerSec: number;
  /** Past this many bytes of WAL, stop giving way to commits (0: never stop). The fixed ceiling still holds. */
  maxPacedWalBytes?: number;
  now?: () => number;
  sleep?: (ms: number) => void;
}

/**
 * Commits within this long, and since the work began, mean clients are writing; the pacer holds
 * back only then (the commits that ended just before it began, such as the writes an operator
 * checkpoints right after, compete with nothing of it).
 */
const ACTIVE_MS = 250;
const MIN_RATE = 32 * 1024 * 1024;
const START_RATE = 64 * 1024 * 1024;
const STEP = 32 * 1024 * 1024;
const MAX_RATE = 4 * 1024 * 1024 * 1024;

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepSync = (ms: number) => void Atomics.wait(sleeper, 0, 0, ms);

/** A worker's side: call `account(bytes)` after each read or write of background I/O; it sleeps as needed. */
export class IoPacer {
  private readonly w?: Float64Array;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => void;
  /** The usual slowest commit of an interval before this work began: what "unhurried" means on this disk. */
  private readonly baselineMs: number;
  private rate = START_RATE;
  private lastTick: number;
  private readonly startedAt: number;
  private active = false;
  /** The WAL passed maxPacedWalBytes: commits are no longer given way to. */
  private walLimitPassed = false;
  /** When the next byte may go (Date.now() ms). */
  private nextFree: number;
  /** Milliseconds slept so far to keep to the rate. */
  sleptMs = 0;

  constructor(
    pressure: SharedArrayBuffer | undefined,
    private readonly opts: IoPacerOptions,
  ) {
    this.w = pressure ? new Float64Array(pressure) : undefined;
    this.now = opts.now ?? Date.now;
    this.sleep = opts.sleep ?? sleepSync;
    this.baselineMs = Math.max(1, this.w?.[USUAL_SLOWEST] ?? 1);
    this.startedAt = this.lastTick = this.nextFree = this.now();
    if (this.w) this.w[SLOWEST] = 0;
  }

  /** The rate it paces at now (bytes per second; Infinity while the node is idle and no ceiling is set). */
  get currentRate(): number {
    const adaptive = this.active && !this.walLimitPassed ? this.rate : Number.POSITIVE_INFINITY;
    return this.opts.maxBytesPerSec > 0 ? Math.min(adaptive, this.opts.maxBytesPerSec) : adaptive;
  }

  account(bytes: number): void {
    const now = this.now();
    if (this.w && now - this.lastTick >= TICK_MS) this.tick(now);
    const rate = this.currentRate;
    if (!Number.isFinite(rate)) {
      this.nextFree = now;
      return;
    }
    // each byte costs 1/rate seconds: wait until what was written so far fits the rate
    this.nextFree = Math.max(this.nextFree, now) + (bytes / rate) * 1000;
    const ahead = this.nextFree - now;
    if (ahead > 1) {
      this.sleep(ahead);
      this.sleptMs += ahead;
    }
  }

  private tick(now: number): void {
    const w = this.w!;
    const wasActive = this.active;
    this.active = w[LAST_END]! > this.startedAt && now - w[LAST_END]! < ACTIVE_MS;
    const slowest = w[SLOWEST]!;
    w[SLOWEST] = 0;
    this.lastTick = now;
    const limit = this.opts.maxPacedWalBytes ?? 0;
    if (!this.walLimitPassed && limit > 0 && w[WAL_BYTES]! > limit) {
      // the snapshot holds the WAL unfolded: from here on, ending it soon matters more
      this.walLimitPassed = true;
      w[WAL_LIMIT_REACHED] = Math.max(w[WAL_LIMIT_REACHED]!, w[WAL_BYTES]!);
    }
    if (!this.active) return;
    if (!wasActive) this.rate = START_RATE;
    if (slowest > 1.5 * this.baselineMs + 2) this.rate = Math.max(MIN_RATE, this.rate / 2);
    else this.rate = Math.min(MAX_RATE, this.rate + STEP);
  }
}
