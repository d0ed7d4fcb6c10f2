/**
 * The node's own WAL checkpointing. Every connection has wal_autocheckpoint=0; instead this
 * runs a PASSIVE checkpoint in a worker once the frames not yet in the database file pass a
 * size threshold (checked after each commit, from the wal-index: the -wal file itself keeps
 * its size when SQLite starts it over, so its size says nothing of what is left to fold) and
 * on a timer while any are left. PASSIVE never blocks writers, but under a steady write load
 * it may never catch up far enough for SQLite to start the WAL over (a writer does that only
 * when it finds every frame folded in). So once a PASSIVE fold has left little behind in a WAL
 * past the threshold, a catch-up (a PASSIVE checkpoint behind a write barrier: new writes wait,
 * the event loop does not; it is short, as little is left) folds the rest, and the first writer
 * after it finds every frame folded in and starts the WAL over;
 * and should the WAL still reach four times the threshold because another connection's read
 * (an operator's sqlite3) held a PASSIVE fold back, a TRUNCATE checkpoint behind the barrier,
 * which waits for that read, empties the file. So the WAL stays bounded.
 * The barrier is held for a short fold: in a WAL past the threshold each PASSIVE fold is
 * followed at once by the next (each has less to fold, as the writes beside it are fewer than
 * it folds), until little is left for the catch-up (should the writes outpace the folds, past
 * four times the threshold the catch-up takes whatever is left). So a WAL that grew while folds
 * were paused (a database checkpoint's pin) is folded beside the writes, not behind the
 * barrier, and started over in place; the file it grew to is emptied (TRUNCATE) once the
 * timer finds no commit since it last looked, as freeing it can take long.
 *
 * A database checkpoint pauses all of this while it copies the database file (`pause()`).
 */
import { statSync } from "node:fs";
import type { Logger } from "../log.ts";
import { CairnError, errorMessage } from "../errors.ts";
import { type Clock, every, systemClock } from "../util/clock.ts";
import { pausePoint } from "../util/crash-point.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import type { WalCheckpointMode, WalFoldResult, WalJob } from "./wal-job.ts";

/** PASSIVE; a PASSIVE behind the write barrier to start the WAL over; TRUNCATE behind it. */
type FoldMode = WalCheckpointMode | "CATCHUP";

export interface WalCheckpointerOptions {
  dbFile: string;
  thresholdBytes: number;
  intervalMs: number;
  logger: Logger;
  clock?: Clock;
  /** Told just before each fold writes the database file (engine/change-tracker.ts: was it as the last fold left it?). */
  beforeFold?: () => void;
  /** Told after every fold, whatever its outcome (engine/change-tracker.ts: the database file as the node left it). */
  onFold?: () => void;
  /** Before a TRUNCATE fold empties the WAL (its writes already wait): WAL shipping ships what is queued first. */
  beforeTruncate?: () => Promise<void> | undefined;
  /** Bytes of WAL frames in all, and not yet in the database file (from the wal-index); else the -wal file's size is used. */
  walBytes?: () => { total: number; pending: number } | undefined;
}

/** What pause() returns: the PASSIVE fold still running beside the pause, if one is, and the way to end the pause. */
export interface PausedFolds {
  folding?: Promise<void>;
  resume: () => void;
}

export interface WalStats {
  runs: number;
  /** Catch-ups: the last frames folded in behind the barrier, so that SQLite starts the WAL over. */
  restarts: number;
  truncations: number;
  failures: number;
  lastDurationMs: number;
  walHighWaterBytes: number;
}

export class WalCheckpointer {
  readonly stats: WalStats = { runs: 0, restarts: 0, truncations: 0, failures: 0, lastDurationMs: 0, walHighWaterBytes: 0 };
  private worker?: WorkerPool;
  private stopTimer?: () => void;
  private running?: Promise<void>;
  /** The mode of the running fold. */
  private runningMode?: FoldMode;
  private pauses = 0;
  /** Resolves when writes may proceed; set while a TRUNCATE checkpoint holds the barrier. */
  private barrier?: Promise<void>;
  /**
   * After a TRUNCATE found another connection reading (an operator's sqlite3), only PASSIVE
   * checkpoints run until this time, so writes do not wait behind the barrier again and again.
   */
  private truncateHeldOffUntil = 0;
  /** The last PASSIVE fold stopped short of the WAL's end: another connection's read held it back. */
  private heldBack = false;
  /** What was left to fold when the last fold started, if it was a PASSIVE one. */
  private passivePending?: number;
  /** The last fold failed: the next one waits for a commit or the timer, not the fold before. */
  private lastFoldFailed = false;
  /** Commits since the timer last looked. */
  private commitsSinceTick = 0;
  private stopped = false;

  private readonly clock: Clock;

  constructor(private readonly opts: WalCheckpointerOptions) {
    this.clock = opts.clock ?? systemClock;
  }

  start(): void {
    this.worker = new WorkerPool(1);
    this.stopTimer = every(this.clock, this.opts.intervalMs, () => {
      const quiet = this.commitsSinceTick === 0;
      this.commitsSinceTick = 0;
      if (this.bytes().pending > 0 || (quiet && this.walSize() > this.truncateAbove)) this.trigger(quiet);
    });
  }

  walFile(): string {
    return `${this.opts.dbFile}-wal`;
  }

  walSize(): number {
    try {
      return statSync(this.walFile()).size;
    } catch {
      return 0;
    }
  }

  /** Writers await this before they commit: it is pending only while a catch-up or a TRUNCATE runs. */
  writeBarrier(): Promise<void> | undefined {
    return this.barrier;
  }

  /** The fold running in the worker now, if any (only the node's thread starts one). */
  foldRunning(): Promise<void> | undefined {
    return this.running;
  }

  /** What the WAL holds: all its frames, and those not folded in yet (bytes); `known`: from the wal-index, not the file's size. */
  private bytes(): { total: number; pending: number; known: boolean } {
    const b = this.opts.walBytes?.();
    if (b) return { ...b, known: true };
    const size = this.walSize();
    return { total: size, pending: size, known: false };
  }

  /** A catch-up (behind the barrier) once this little is left to fold in a WAL past the threshold. */
  private get restartBelow(): number {
    return this.opts.thresholdBytes / 16;
  }

  /** Past this, a reader holding the folds back gets a TRUNCATE, and a -wal file this large is emptied once writes pause. */
  private get truncateAbove(): number {
    return 4 * this.opts.thresholdBytes;
  }

  /**
   * Called after every commit: fold if the frames not yet folded in have passed the threshold,
   * or start the WAL over. Returns the bytes the WAL holds.
   */
  noteCommit(): number {
    this.commitsSinceTick++;
    const b = this.bytes();
    if (b.total > this.stats.walHighWaterBytes) this.stats.walHighWaterBytes = b.total;
    if (b.pending > this.opts.thresholdBytes || (b.total > this.opts.thresholdBytes && b.pending <= this.restartBelow)) this.trigger();
    return b.total;
  }

  /**
   * Start a checkpoint unless one runs, checkpoints are paused, or the node is stopping.
   * `quiet`: no commit since the timer last looked, so emptying a large WAL file (which holds
   * the barrier for as long as the file system takes to free it) keeps no write waiting.
   */
  trigger(quiet = false): void {
    if (this.running || this.pauses > 0 || this.stopped || !this.worker) return;
    const b = this.bytes();
    const barrierAllowed = this.clock.now() >= this.truncateHeldOffUntil;
    const littleLeft = b.pending <= this.restartBelow;
    const big = this.truncateAbove;
    // past four times the threshold, only a fold that waits for readers gets the WAL started
    // over when a reader held the last PASSIVE back (or when the wal-index cannot be read);
    // otherwise catch-ups start it over in place, and the file is emptied once writes pause
    const readerHeldIt = b.total > big && (this.heldBack || !b.known);
    const reclaim = quiet && littleLeft && this.walSize() > big;
    // the writes outpace the folds beside them: past four times the threshold the rest is folded behind the barrier
    const outpaced = b.total > big && this.passivePending !== undefined && b.pending >= this.passivePending;
    const mode: FoldMode =
      barrierAllowed && (readerHeldIt || reclaim)
        ? "TRUNCATE"
        : barrierAllowed && b.total > this.opts.thresholdBytes && (littleLeft || outpaced)
          ? "CATCHUP"
          : "PASSIVE";
    this.passivePending = mode === "PASSIVE" ? b.pending : undefined;
    this.runningMode = mode;
    this.running = this.run(mode).finally(() => {
      this.running = undefined;
      this.runningMode = undefined;
      if (mode !== "PASSIVE" || this.heldBack || this.lastFoldFailed) return;
      const b = this.bytes();
      if (b.known && b.total > this.opts.thresholdBytes && b.pending > 0) this.trigger();
    });
  }

  private async run(mode: FoldMode): Promise<void> {
    let release: (() => void) | undefined;
    if (mode !== "PASSIVE") this.barrier = new Promise((r) => (release = r));
    try {
      if (mode === "TRUNCATE") await this.opts.beforeTruncate?.();
      await pausePoint(`wal:fold:${mode.toLowerCase()}`);
      this.opts.beforeFold?.();
      // the catch-up is a PASSIVE fold behind the barrier, not a RESTART checkpoint: it never
      // waits for a lock (RESTART would, in steps of SQLite's busy handler), and the first
      // writer after it finds every frame folded in and starts the WAL over itself
      const reply = await this.request(mode === "CATCHUP" ? "PASSIVE" : mode);
      this.stats.runs++;
      this.lastFoldFailed = false;
      this.heldBack = reply.checkpointed < reply.log;
      if (mode === "TRUNCATE") this.stats.truncations++;
      if (mode === "CATCHUP") this.stats.restarts++;
      this.stats.lastDurationMs = reply.ms;
      if (mode !== "PASSIVE" && reply.busy) {
        this.truncateHeldOffUntil = this.clock.now() + this.opts.intervalMs;
        this.opts.logger.debug(`WAL ${mode === "TRUNCATE" ? "truncation" : "catch-up"} postponed: another connection is reading the database`);
      }
      this.opts.logger.debug(`WAL checkpoint (${mode.toLowerCase()}): ${reply.checkpointed}/${reply.log} frames in ${reply.ms.toFixed(1)} ms`);
    } catch (e) {
      this.lastFoldFailed = true;
      this.stats.failures++;
      this.opts.logger.warn(`WAL checkpoint failed: ${errorMessage(e)}`);
    } finally {
      this.opts.onFold?.();
      this.barrier = undefined;
      release?.();
    }
  }

  private request(mode: WalCheckpointMode | "CLOSE"): Promise<WalFoldResult> {
    const job: WalJob = { job: "wal", op: mode, file: this.opts.dbFile };
    return this.worker!.call<WalFoldResult>(0, job);
  }

  /**
   * Stop starting folds until `resume` is called, for a database checkpoint, which must read a
   * database file no fold rewrites under it. A PASSIVE fold already running is let finish
   * beside the checkpoint (`folding` settles when it has): it cannot change what a snapshot
   * pinned now reads (snapshot.ts says why). A fold behind the write barrier is waited for:
   * it would wait for the snapshot's read in turn, holding every write.
   * It does not fold the WAL in first: a database checkpoint finds the WAL's pages through
   * the wal-index and reads only those (wal-format.ts), which costs less than a WAL
   * checkpoint and its fsync.
   */
  async pause(): Promise<PausedFolds> {
    this.pauses++;
    if (this.runningMode !== "PASSIVE") await this.running;
    let resumed = false;
    return {
      folding: this.running,
      resume: () => {
        if (resumed) return;
        resumed = true;
        this.pauses--;
      },
    };
  }

  get paused(): boolean {
    return this.pauses > 0;
  }

  /** Stop the timer and the worker. The caller then checkpoints on its own connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopTimer?.();
    await this.running;
    if (this.worker) {
      await this.request("CLOSE").catch(() => {});
      this.worker.terminate(new CairnError("E_SHUTTING_DOWN", "the node is shutting down"));
      this.worker = undefined;
    }
  }
}
