/**
 * The node's checkpoint manager: one checkpoint at a time (a second request fails with
 * "Backup already in progress"), manual requests from the admin socket (with an optional
 * delay), the periodic schedule, the task timeout, cancellation, retention after each success,
 * and the status that `checkpoint status`, /v1/status and /metrics report.
 *
 * Its clock and intervals come from config (and a Clock for tests), so tests can drive it.
 */
import { readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { CheckpointConfig } from "../config/config.ts";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import { type CheckpointResult, type StoreCache, takeCheckpoint, type WalPauser, warmStoreCache } from "./create.ts";
import { DirSource } from "./objects.ts";
import { WorkerPool } from "./pool.ts";
import { StoreReader } from "./reader.ts";
import { applyRetention } from "./retention.ts";
import { isArchiveName } from "./archive.ts";
import { type ExportResult, exportCheckpoint } from "./export.ts";
import { pushCheckpoints, type PushResult, RemoteReplicator, type RemoteStatus } from "./remote.ts";
import { isS3Url, resolveS3Settings, S3Source } from "./s3.ts";
import { formatBytes, formatDuration } from "../util/format.ts";
import { type Clock, sleepOn, systemClock } from "../util/clock.ts";

export type { Clock };
export { systemClock };

export type CheckpointOutcome = "success" | "failed" | "cancelled";

export interface CheckpointRun {
  /** Attempt number within this node process. */
  run: number;
  trigger: "manual" | "periodic";
  dir: string;
  /**
   * waiting: for its delay; running: copying; uploading: to an s3:// or archive --path (taken
   * into the local store first); retaining: complete, retention running; done
   */
  state: "waiting" | "running" | "uploading" | "retaining" | "done";
  requested: string;
  started?: string;
  finished?: string;
  outcome?: CheckpointOutcome;
  error?: string;
  result?: CheckpointResult;
  /** For a checkpoint into an s3:// --path: what was uploaded. */
  push?: PushResult;
  /** For a checkpoint into an archive --path (.tar, .tar.gz, .tar.zst): the archive written. */
  export?: ExportResult;
  progress: { done_bytes: number; total_bytes: number };
}

export interface CheckpointStatus {
  running: CheckpointRun | null;
  last: CheckpointRun | null;
  last_success: CheckpointRun | null;
  successes: number;
  failures: number;
  cancellations: number;
  /** Failures since the last success. */
  consecutive_failures: number;
  store_dir: string;
  store_bytes: number;
  periodic: boolean;
  next_periodic: string | null;
  /** Copies to checkpoint_config.remote, if configured. */
  remote: RemoteStatus | null;
}

export interface CheckpointManagerDeps {
  config: CheckpointConfig;
  nodeId: string;
  /** The node's descriptors of its database files (engine/live-files.ts). */
  live: LiveFiles;
  storagePath: string;
  wal: WalPauser;
  logger: Logger;
  clock?: Clock;
}

export const BUSY_MESSAGE = "Backup already in progress";

export class CheckpointManager {
  private current?: { run: CheckpointRun; controller: AbortController; done: Promise<CheckpointRun> };
  private last?: CheckpointRun;
  private lastSuccess?: CheckpointRun;
  private runs = 0;
  private counts = { successes: 0, failures: 0, cancellations: 0, consecutiveFailures: 0 };
  private storeBytes = 0;
  private nextPeriodicAt?: number;
  private periodicTimer?: unknown;
  private stopped = false;
  private readonly clock: Clock;
  /** The configured store, remembered between checkpoints (see StoreCache). */
  private readonly cache: { current?: StoreCache } = {};
  /** Copies every local checkpoint to checkpoint_config.remote, in the background. */
  readonly remote?: RemoteReplicator;
  /** The checkpoint workers, kept warm between checkpoints (see CheckpointOptions.pool). */
  private pool?: WorkerPool;
  /** Loading the configured store into `cache` at start (never rejects); checkpoints wait for it. */
  private warming?: Promise<void>;

  constructor(private readonly deps: CheckpointManagerDeps) {
    this.clock = deps.clock ?? systemClock;
    const r = deps.config.remote;
    if (r) {
      this.remote = new RemoteReplicator({
        localDir: deps.config.dir,
        remote: new S3Source(
          resolveS3Settings({ url: r.url, endpoint: r.endpoint, region: r.region, accessKeyId: r.accessKeyId, secretAccessKey: r.secretAccessKey, requestTimeoutMs: r.requestTimeoutMs }),
        ),
        maxRemote: r.maxRemoteCheckpoints,
        retryBackoffMs: r.retryBackoffMs,
        logger: deps.logger,
        clock: this.clock,
      });
    }
  }

  async start(): Promise<void> {
    const { config, logger } = this.deps;
    this.warnIfSameDevice();
    if (this.remote) {
      logger.info(`checkpoints are copied to ${this.remote.status().url}`);
      // copy whatever an earlier run did not get to
      if ((await latestCheckpointTime(config.dir)) !== undefined) this.remote.notify();
    }
    this.storeBytes = dirBytes(config.dir);
    if ((await latestCheckpointTime(config.dir)) !== undefined) {
      this.warming = warmStoreCache(config.dir, this.workers(), this.cache).catch((e) => {
        logger.debug(`could not preload ${config.dir} for the next checkpoint: ${errorMessage(e)}`);
      });
    }
    if (config.periodic) {
      const first = firstPeriodicRun(await latestCheckpointTime(config.dir), this.clock.now(), config);
      this.schedulePeriodic(first);
      logger.info(`periodic checkpoints every ${formatDuration(config.intervalMs)} into ${config.dir}; next at ${new Date(first).toISOString()}`);
    }
  }

  private warnIfSameDevice(): void {
    const dev = (p: string): number | undefined => {
      for (let d = resolve(p); ; d = dirname(d)) {
        try {
          return statSync(d).dev;
        } catch {
          if (d === dirname(d)) return undefined;
        }
      }
    };
    const a = dev(this.deps.storagePath);
    if (a !== undefined && a === dev(this.deps.config.dir)) {
      this.deps.logger.warn(
        `the checkpoint directory ${this.deps.config.dir} is on the same device as the database: a disk failure would take both; put checkpoints on another volume or ship them off the host`,
      );
    }
  }

  /**
   * Start a checkpoint into `path` (default: the configured directory) after `delaySecs`.
   * Throws E_BUSY ("Backup already in progress") if one is waiting or running.
   */
  request(opts: { path?: string; delaySecs?: number; trigger?: "manual" | "periodic" } = {}): CheckpointRun {
    if (this.stopped) throw new CairnError("E_SHUTTING_DOWN", "the node is shutting down");
    if (this.current) throw new CairnError("E_BUSY", BUSY_MESSAGE, { hint: "wait for it (checkpoint status) or cancel it (checkpoint cancel)" });
    const run: CheckpointRun = {
      run: ++this.runs,
      trigger: opts.trigger ?? "manual",
      dir: opts.path && isS3Url(opts.path) ? opts.path : resolve(opts.path ?? this.deps.config.dir),
      state: "waiting",
      requested: new Date(this.clock.now()).toISOString(),
      progress: { done_bytes: 0, total_bytes: 0 },
    };
    const controller = new AbortController();
    const done = this.execute(run, controller, Math.max(0, (opts.delaySecs ?? 0) * 1000));
    this.current = { run, controller, done };
    return run;
  }

  /** Resolves when the given run has finished (at once if it already has). */
  async wait(run: number): Promise<CheckpointRun | undefined> {
    if (this.current?.run.run === run) return this.current.done;
    return this.last?.run === run ? this.last : undefined;
  }

  /**
   * Stop the waiting or running checkpoint; nothing of it stays listed. A checkpoint that is
   * already complete (its retention running) is not touched. Resolves with the run as it
   * ended: its outcome says whether it was cancelled.
   */
  async cancel(): Promise<CheckpointRun | undefined> {
    const cur = this.current;
    if (!cur) return undefined;
    if (cur.run.state !== "retaining") cur.controller.abort(new CairnError("E_CANCELLED", "checkpoint cancelled"));
    return cur.done;
  }

  status(): CheckpointStatus {
    return {
      running: this.current?.run ?? null,
      last: this.last ?? null,
      last_success: this.lastSuccess ?? null,
      successes: this.counts.successes,
      failures: this.counts.failures,
      cancellations: this.counts.cancellations,
      consecutive_failures: this.counts.consecutiveFailures,
      store_dir: this.deps.config.dir,
      store_bytes: this.storeBytes,
      periodic: this.deps.config.periodic,
      next_periodic: this.nextPeriodicAt !== undefined ? new Date(this.nextPeriodicAt).toISOString() : null,
      remote: this.remote?.status() ?? null,
    };
  }

  /** Shutdown: cancel whatever runs and stop the schedule. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.periodicTimer !== undefined) this.clock.clearTimeout(this.periodicTimer);
    this.nextPeriodicAt = undefined;
    if (this.current) {
      this.deps.logger.info("cancelling the running checkpoint for shutdown");
      await this.cancel();
    }
    await this.remote?.stop();
    this.pool?.terminate();
    this.pool = undefined;
  }

  private workers(): WorkerPool {
    if (!this.pool?.alive) this.pool = new WorkerPool(Math.max(1, this.deps.config.maxBackgroundOperations));
    return this.pool;
  }

  private schedulePeriodic(at: number): void {
    if (this.stopped) return;
    if (this.periodicTimer !== undefined) this.clock.clearTimeout(this.periodicTimer);
    this.nextPeriodicAt = at;
    this.periodicTimer = this.clock.setTimeout(() => void this.periodicTick(), Math.max(0, at - this.clock.now()));
  }

  private async periodicTick(): Promise<void> {
    const { config, logger } = this.deps;
    this.periodicTimer = undefined;
    this.nextPeriodicAt = undefined;
    if (this.stopped) return;
    let run: CheckpointRun;
    try {
      run = this.request({ trigger: "periodic" });
    } catch (e) {
      logger.info(`periodic checkpoint postponed: ${errorMessage(e)}`);
      this.schedulePeriodic(this.clock.now() + config.retryBackoffMs);
      return;
    }
    const done = await this.wait(run.run);
    this.schedulePeriodic(nextPeriodicRun(done, this.clock.now(), config));
    if (done?.outcome !== "success") logger.warn(`periodic checkpoint did not succeed; retrying in ${formatDuration(config.retryBackoffMs)}`);
  }

  private async execute(run: CheckpointRun, controller: AbortController, delayMs: number): Promise<CheckpointRun> {
    const { config, logger } = this.deps;
    // let request() return (and register this run) before anything can finish it
    await Promise.resolve();
    const timeout = this.clock.setTimeout(
      () => controller.abort(new CairnError("E_TIMEOUT", `checkpoint took longer than ${formatDuration(config.taskTimeoutMs)} and was stopped`)),
      config.taskTimeoutMs + delayMs,
    );
    try {
      if (delayMs > 0) await sleepOn(this.clock, delayMs, controller.signal);
      run.state = "running";
      run.started = new Date(this.clock.now()).toISOString();
      logger.info(`checkpoint started (${run.trigger}) into ${run.dir}`);
      // into an S3 prefix or an archive: taken into the local store, then copied there
      const toS3 = isS3Url(run.dir);
      const toArchive = !toS3 && isArchiveName(run.dir);
      const storeDir = toS3 || toArchive ? config.dir : run.dir;
      await this.warming;
      const result = await takeCheckpoint({
        storeDir,
        nodeId: this.deps.nodeId,
        live: this.deps.live,
        wal: this.deps.wal,
        workers: config.maxBackgroundOperations,
        sync: config.sync,
        compression: config.compression,
        writeBytesPerSec: config.maxWriteBytesPerSec,
        logger,
        signal: controller.signal,
        cache: resolve(storeDir) === resolve(config.dir) ? this.cache : undefined,
        pool: this.workers(),
        onProgress: (done, total) => {
          run.progress = { done_bytes: done, total_bytes: total };
        },
      });
      run.result = result;
      if (toS3) {
        run.state = "uploading";
        const same = config.remote && config.remote.url.replace(/\/+$/, "") === run.dir.replace(/\/+$/, "") ? config.remote : undefined;
        run.push = await pushCheckpoints({
          localDir: storeDir,
          remote: new S3Source(
            resolveS3Settings({
              url: run.dir,
              endpoint: same?.endpoint,
              region: same?.region,
              accessKeyId: same?.accessKeyId,
              secretAccessKey: same?.secretAccessKey,
              requestTimeoutMs: same?.requestTimeoutMs,
            }),
          ),
          ids: [result.id],
          maxRemote: same?.maxRemoteCheckpoints ?? 0,
          logger,
          signal: controller.signal,
        });
      }
      if (toArchive) {
        run.state = "uploading";
        run.export = await exportCheckpoint({
          reader: new StoreReader(new DirSource(storeDir)),
          checkpointId: result.id,
          output: run.dir,
          signal: controller.signal,
        });
      }
      run.outcome = "success";
      this.counts.successes++;
      this.counts.consecutiveFailures = 0;
      logger.info(
        `checkpoint ${result.id} created in ${run.dir} in ${(result.durationMs / 1000).toFixed(1)} s ` +
          `(${formatBytes(result.logicalBytes)}, ${formatBytes(result.newBytes)} new)`,
      );
      run.state = "retaining";
      if (resolve(storeDir) === resolve(config.dir)) {
        await this.retain(storeDir);
        this.remote?.notify();
      }
    } catch (e) {
      const err = e instanceof CairnError ? e : new CairnError("E_CHECKPOINT", errorMessage(e), { cause: e });
      run.error = err.message;
      if (err.code === "E_CANCELLED") {
        run.outcome = "cancelled";
        this.counts.cancellations++;
        logger.info(`checkpoint into ${run.dir} cancelled; nothing of it was kept`);
      } else {
        run.outcome = "failed";
        this.counts.failures++;
        this.counts.consecutiveFailures++;
        logger.error(`checkpoint into ${run.dir} failed: ${err.message}`);
      }
    } finally {
      this.clock.clearTimeout(timeout);
      run.state = "done";
      run.finished = new Date(this.clock.now()).toISOString();
      this.storeBytes = dirBytes(config.dir);
    if ((await latestCheckpointTime(config.dir)) !== undefined) {
      this.warming = warmStoreCache(config.dir, this.workers(), this.cache).catch((e) => {
        logger.debug(`could not preload ${config.dir} for the next checkpoint: ${errorMessage(e)}`);
      });
    }
      this.last = run;
      if (run.outcome === "success") this.lastSuccess = run;
      this.current = undefined;
    }
    return run;
  }

  private async retain(dir: string): Promise<void> {
    const { config, logger } = this.deps;
    try {
      const r = await applyRetention(dir, this.deps.nodeId, config.maxCheckpoints, config.sync, logger);
      if (r.skipped) logger.info(`retention postponed: ${r.skipped}`);
      if (r.removed.length > 0) logger.info(`retention removed checkpoint(s) ${r.removed.join(", ")}`);
      if (r.gc && (r.gc.removedPacks > 0 || r.gc.rewrittenPacks > 0)) {
        logger.info(`garbage collection: ${r.gc.removedPacks} pack(s) removed, ${r.gc.rewrittenPacks} rewritten, ${formatBytes(r.gc.freedBytes)} freed`);
      }
    } catch (e) {
      logger.warn(`retention in ${dir} failed: ${errorMessage(e)}`);
    }
  }
}

/** The first periodic run: an interval after the latest checkpoint, but not before the start-up delay. */
export function firstPeriodicRun(latestCreatedMs: number | undefined, nowMs: number, config: Pick<CheckpointConfig, "intervalMs" | "startupDelayMs">): number {
  return Math.max(latestCreatedMs !== undefined ? latestCreatedMs + config.intervalMs : nowMs, nowMs + config.startupDelayMs);
}

/** After a periodic run: an interval after the checkpoint it made, or a back-off after a failure. */
export function nextPeriodicRun(
  done: CheckpointRun | undefined,
  nowMs: number,
  config: Pick<CheckpointConfig, "intervalMs" | "retryBackoffMs">,
): number {
  if (done?.outcome === "success" && done.result) return Math.max(Date.parse(done.result.created) + config.intervalMs, nowMs);
  return nowMs + config.retryBackoffMs;
}

async function latestCheckpointTime(dir: string): Promise<number | undefined> {
  try {
    const reader = new StoreReader(new DirSource(dir));
    const ids = await reader.manifestIds();
    for (const id of ids.reverse()) {
      try {
        return Date.parse((await reader.manifest(id)).created);
      } catch {
        // a damaged manifest: look at the one before
      }
    }
  } catch {
    // no store yet
  }
  return undefined;
}

/** Bytes of every file under `dir` (the store's size on disk). */
export function dirBytes(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          total += statSync(p).size;
        } catch {}
      }
    }
  };
  walk(dir);
  return total;
}
