/**
 * The node's own WAL checkpointing. Every connection has wal_autocheckpoint=0; instead this
 * runs a PASSIVE checkpoint in a worker once the -wal file passes a size threshold (checked
 * after each commit) and on a timer. PASSIVE never blocks writers, but under a steady write
 * load it may never catch up far enough for SQLite to restart the WAL; past four times the
 * threshold it therefore runs a TRUNCATE checkpoint behind a write barrier: new writes wait
 * (the event loop does not) until the WAL is empty again. So the WAL stays bounded.
 *
 * A database checkpoint pauses all of this while it copies the database file (`pause()`).
 */
import { statSync } from "node:fs";
import type { Logger } from "../log.ts";
import { CairnError, errorMessage } from "../errors.ts";
import { type Clock, every, systemClock } from "../util/clock.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import type { WalCheckpointMode, WalFoldResult, WalJob } from "./wal-job.ts";

export interface WalCheckpointerOptions {
  dbFile: string;
  thresholdBytes: number;
  intervalMs: number;
  logger: Logger;
  clock?: Clock;
  /** Told after every fold, whatever its outcome (engine/change-tracker.ts: the database file as the node left it). */
  onFold?: () => void;
}

export interface WalStats {
  runs: number;
  truncations: number;
  failures: number;
  lastDurationMs: number;
  walHighWaterBytes: number;
}

export class WalCheckpointer {
  readonly stats: WalStats = { runs: 0, truncations: 0, failures: 0, lastDurationMs: 0, walHighWaterBytes: 0 };
  private worker?: WorkerPool;
  private stopTimer?: () => void;
  private running?: Promise<void>;
  private pauses = 0;
  /** Resolves when writes may proceed; set while a TRUNCATE checkpoint holds the barrier. */
  private barrier?: Promise<void>;
  /**
   * After a TRUNCATE found another connection reading (an operator's sqlite3), only PASSIVE
   * checkpoints run until this time, so writes do not wait behind the barrier again and again.
   */
  private truncateHeldOffUntil = 0;
  private stopped = false;

  constructor(private readonly opts: WalCheckpointerOptions) {}

  start(): void {
    this.worker = new WorkerPool(1);
    this.stopTimer = every(this.opts.clock ?? systemClock, this.opts.intervalMs, () => {
      if (this.walSize() > 0) this.trigger();
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

  /** Writers await this before they commit: it is pending only while a TRUNCATE runs. */
  writeBarrier(): Promise<void> | undefined {
    return this.barrier;
  }

  /** Called after every commit: checkpoint if the WAL has grown past the threshold. */
  noteCommit(): void {
    const size = this.walSize();
    if (size > this.stats.walHighWaterBytes) this.stats.walHighWaterBytes = size;
    if (size > this.opts.thresholdBytes) this.trigger();
  }

  /** Start a checkpoint unless one runs, checkpoints are paused, or the node is stopping. */
  trigger(): void {
    if (this.running || this.pauses > 0 || this.stopped || !this.worker) return;
    const mode: WalCheckpointMode = this.walSize() > 4 * this.opts.thresholdBytes && Date.now() >= this.truncateHeldOffUntil ? "TRUNCATE" : "PASSIVE";
    this.running = this.run(mode).finally(() => {
      this.running = undefined;
    });
  }

  private async run(mode: WalCheckpointMode): Promise<void> {
    let release: (() => void) | undefined;
    if (mode === "TRUNCATE") this.barrier = new Promise((r) => (release = r));
    try {
      const reply = await this.request(mode);
      this.stats.runs++;
      if (mode === "TRUNCATE") this.stats.truncations++;
      this.stats.lastDurationMs = reply.ms;
      if (mode === "TRUNCATE" && reply.busy) {
        this.truncateHeldOffUntil = Date.now() + this.opts.intervalMs;
        this.opts.logger.debug("WAL truncation postponed: another connection is reading the database");
      }
      this.opts.logger.debug(`WAL checkpoint (${mode.toLowerCase()}): ${reply.checkpointed}/${reply.log} frames in ${reply.ms.toFixed(1)} ms`);
    } catch (e) {
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
   * Stop checkpointing until the returned function is called; waits for a running one to
   * finish first, so the database file is not written by a checkpoint once this resolves.
   * It does not fold the WAL in first: a database checkpoint finds the WAL's pages through
   * the wal-index and reads only those (wal-format.ts), which costs less than a WAL
   * checkpoint and its fsync (~50 ms after a 1% churn of 1 GB).
   */
  async pause(): Promise<() => void> {
    this.pauses++;
    await this.running;
    let resumed = false;
    return () => {
      if (resumed) return;
      resumed = true;
      this.pauses--;
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
