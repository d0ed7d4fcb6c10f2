/**
 * The node's checkpoint manager: one checkpoint at a time (a second request fails with
 * "Backup already in progress"), manual requests from the admin socket (with an optional
 * delay), the periodic schedule (scheduler.ts), the task timeout, cancellation, retention
 * after each success, and the status that `checkpoint status`, /v1/status and /metrics report.
 *
 * A checkpoint goes into a local store; into an s3:// prefix or an archive it is taken into the
 * configured store first, then copied or exported there (the target's capabilities say which).
 * Its clock and intervals come from config (and a Clock for tests), so tests can drive it.
 */
import { readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { CheckpointConfig, RemoteConfig } from "../config/config.ts";
import type { ChangeTracker } from "../engine/change-tracker.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { exportCheckpoint } from "../store/archive/export.ts";
import { type Backend, isReadWrite } from "../store/backend.ts";
import { pushCheckpoints } from "../store/copy.ts";
import { DirBackend } from "../store/dir/backend.ts";
import { locationOf, openTarget } from "../store/open.ts";
import type { KeyFile } from "../store/crypto.ts";
import { LocalStore } from "../store/dir/writer.ts";
import { remapSegmentPacks } from "../store/format.ts";
import { StoreReader } from "../store/reader.ts";
import { applyLocalRetention, keepLast } from "../store/retention.ts";
import { type Clock, sleepOn, systemClock } from "../util/clock.ts";
import { formatBytes, formatDuration } from "../util/display.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { takeCheckpoint, type WalPauser } from "./create.ts";
import { RemoteReplicator } from "./replicator.ts";
import { BUSY_MESSAGE, type CheckpointRun, type CheckpointStatus } from "./run.ts";
import { PeriodicSchedule } from "./scheduler.ts";
import type { Shipper } from "./shipper.ts";
import { locateSegments, type PreviousCheckpoint, relocateAfterRewrite } from "./segments.ts";

/** Garbage collection looks for dead blocks once the store has gained this share of its size since it last did. */
const DEAD_BLOCK_SEARCH_FRACTION = 0.05;

export interface CheckpointManagerDeps {
  config: CheckpointConfig;
  nodeId: string;
  /** The node's descriptors of its database files (engine/live-files.ts). */
  live: LiveFiles;
  /** The pages changed since the configured store's last checkpoint (engine/change-tracker.ts). */
  tracker?: ChangeTracker;
  /** How long the node's commits take (util/io-pressure.ts): the checkpoint's I/O gives way to them. */
  commitPressure?: SharedArrayBuffer;
  storagePath: string;
  /** WAL shipping into the configured store (checkpoint/shipper.ts), when it is on. */
  shipper?: Shipper;
  wal: WalPauser;
  logger: Logger;
  clock?: Clock;
  /** checkpoint_config.encryption: every store the node writes is encrypted with it. */
  keyFile?: KeyFile;
}

export class CheckpointManager {
  /** Called after each successful checkpoint into the configured store (the node claims it then, if it had not yet). */
  onStoreWritten?: () => void;
  private current?: { run: CheckpointRun; controller: AbortController; done: Promise<CheckpointRun> };
  private last?: CheckpointRun;
  private lastSuccess?: CheckpointRun;
  private runs = 0;
  private counts = { successes: 0, failures: 0, cancellations: 0, consecutiveFailures: 0 };
  private storeBytes = 0;
  private schedule?: PeriodicSchedule;
  private stopped = false;
  private readonly clock: Clock;
  /** The configured store's newest checkpoint, remembered between checkpoints (checkpoint/segments.ts). */
  private readonly cache: { current?: PreviousCheckpoint } = {};
  /** Copies every local checkpoint to checkpoint_config.remote, in the background. */
  readonly remote?: RemoteReplicator;
  /** The checkpoint workers, kept warm between checkpoints (see CheckpointOptions.pool). */
  private pool?: WorkerPool;
  /**
   * Bytes the configured store gained since garbage collection last looked for dead blocks
   * (undefined: not since the node started). About as many die as are added, so the search,
   * which reads every checkpoint's segments and every index, runs once this is a fair share of
   * the store rather than after every checkpoint: its cost stays in step with the change.
   */
  private addedSinceCollection?: number;
  /** Loading the configured store into `cache` (never rejects); checkpoints wait for it. */
  private warming?: Promise<void>;

  constructor(private readonly deps: CheckpointManagerDeps) {
    this.clock = deps.clock ?? systemClock;
    const r = deps.config.remote;
    if (r) {
      const remote = openTarget(r.url, this.remoteSettings());
      if (!isReadWrite(remote)) throw new CairnError("E_CONFIG", `checkpoint_config.remote.url: ${r.url} is not a store checkpoints can be copied into`);
      this.remote = new RemoteReplicator({
        localDir: deps.config.dir,
        remote,
        remoteRetention: r.retention,
        retryBackoffMs: r.retryBackoffMs,
        logger: deps.logger,
        clock: this.clock,
        keyFile: deps.keyFile,
      });
    }
  }

  /** checkpoint_config.remote if `url` names it (then its endpoint, credentials and retention apply). */
  private configuredRemote(url?: string): RemoteConfig | undefined {
    const r = this.deps.config.remote;
    return r && (url === undefined || r.url.replace(/\/+$/, "") === url.replace(/\/+$/, "")) ? r : undefined;
  }

  private remoteSettings(url?: string) {
    const r = this.configuredRemote(url);
    return r ? { endpoint: r.endpoint, region: r.region, accessKeyId: r.accessKeyId, secretAccessKey: r.secretAccessKey, requestTimeoutMs: r.requestTimeoutMs } : {};
  }

  async start(): Promise<void> {
    const { config, logger } = this.deps;
    this.warnIfSameDevice();
    const latest = await latestCheckpointTime(config.dir, this.deps.keyFile);
    if (this.remote) {
      logger.info(`checkpoints are copied to ${this.remote.status().url}`);
      // copy whatever an earlier run did not get to
      if (latest !== undefined) this.remote.notify();
    }
    this.storeBytes = dirBytes(config.dir);
    if (latest !== undefined) this.warm();
    if (config.periodic) {
      this.schedule = new PeriodicSchedule({
        config,
        clock: this.clock,
        logger,
        run: async () => this.wait(this.request({ trigger: "periodic" }).run),
      });
      const first = this.schedule.start(latest);
      logger.info(`periodic checkpoints every ${formatDuration(config.intervalMs)} into ${config.dir}; next at ${new Date(first).toISOString()}`);
    }
  }

  /** Find where the configured store's newest checkpoint's segments are, in the background, for the next checkpoint. */
  private warm(): void {
    const { config, logger } = this.deps;
    this.warming = (async () => {
      const ids = await new StoreReader(new DirBackend(config.dir)).manifestIds();
      const id = ids.at(-1);
      if (id === undefined || this.cache.current?.manifest.id === id) return;
      this.cache.current = await locateSegments(this.workers(), config.dir, id, LocalStore.keysOf(config.dir, this.deps.keyFile)?.spec);
    })().catch((e) => {
      logger.debug(`could not preload ${config.dir} for the next checkpoint: ${errorMessage(e)}`);
    });
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
      dir: locationOf(opts.path ?? this.deps.config.dir),
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
    if (cur.run.state === "retaining") {
      this.deps.logger.info(`cancel asked while checkpoint ${cur.run.result?.id} applies retention: the checkpoint is complete and kept; nothing to cancel`);
    } else {
      this.deps.logger.info(`cancel asked: stopping the checkpoint into ${cur.run.dir}`);
      cur.controller.abort(new CairnError("E_CANCELLED", "checkpoint cancelled"));
    }
    return cur.done;
  }

  status(): CheckpointStatus {
    const next = this.schedule?.next;
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
      next_periodic: next !== undefined ? new Date(next).toISOString() : null,
      remote: this.remote?.status() ?? null,
      change_tracking: this.deps.tracker?.status() ?? null,
      wal_shipping: this.deps.shipper?.status() ?? null,
    };
  }

  /** Shutdown: cancel whatever runs and stop the schedule. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.schedule?.stop();
    if (this.current) {
      this.deps.logger.info("cancelling the running checkpoint for shutdown");
      await this.cancel();
    }
    await this.remote?.stop();
    this.pool?.terminate(new CairnError("E_SHUTTING_DOWN", "the node is shutting down"));
    this.pool = undefined;
  }

  private workers(): WorkerPool {
    if (!this.pool?.alive) this.pool = new WorkerPool(Math.max(1, this.deps.config.maxBackgroundOperations));
    return this.pool;
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
      // a folder is written into; anything else (s3://, an archive) is taken into the local store first
      const target = openTarget(run.dir, this.remoteSettings(run.dir));
      const storeDir = target.localDir ?? config.dir;
      const configured = resolve(storeDir) === resolve(config.dir);
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
        maxPacedWalBytes: config.maxPacedWalBytes,
        commitPressure: this.deps.commitPressure,
        logger,
        signal: controller.signal,
        keyFile: this.deps.keyFile,
        includeFiles: config.includeFiles,
        cache: configured ? this.cache : undefined,
        // the changes are tracked for the configured store only: a checkpoint elsewhere leaves them be
        tracker: configured ? this.deps.tracker : undefined,
        shipper: configured ? this.deps.shipper : undefined,
        pool: this.workers(),
        onProgress: (done, total) => {
          run.progress = { done_bytes: done, total_bytes: total };
        },
      });
      run.result = result;
      await this.deliver(run, target, storeDir, controller.signal);
      run.outcome = "success";
      this.counts.successes++;
      this.counts.consecutiveFailures = 0;
      logger.info(
        `checkpoint ${result.id} created in ${run.dir} in ${(result.durationMs / 1000).toFixed(1)} s ` +
          `(${formatBytes(result.logicalBytes)}, ${formatBytes(result.newBytes)} new; ` +
          `${result.scan === "changes" ? "read only the changes" : "read the whole database"}, ${formatBytes(result.bytesRead)})`,
      );
      run.state = "retaining";
      if (configured) {
        this.onStoreWritten?.();
        this.addedSinceCollection = this.addedSinceCollection === undefined ? undefined : this.addedSinceCollection + result.newBytes;
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
      // (warm finds the newest checkpoint itself, and does nothing where there is none: no manifest need be read here)
      this.warm();
      this.last = run;
      if (run.outcome === "success") this.lastSuccess = run;
      this.current = undefined;
      // a checkpoint leaves its results, lists and the requests served meanwhile behind as
      // garbage; collected now (a quiet point) the node's memory stays flat from one to the
      // next instead of rising in steps until the collector's own pacing catches up
      Bun.gc(true);
    }
    return run;
  }

  /** A checkpoint taken into the local store for another target: copied (s3://) or exported (an archive) there. */
  private async deliver(run: CheckpointRun, target: Backend, storeDir: string, signal: AbortSignal): Promise<void> {
    const id = run.result!.id;
    if (target.localDir) return;
    if (isReadWrite(target)) {
      run.state = "copying";
      run.push = await pushCheckpoints({
        localDir: storeDir,
        remote: target,
        ids: [id],
        remoteRetention: this.configuredRemote(run.dir)?.retention ?? keepLast(0),
        logger: this.deps.logger,
        signal,
        keyFile: this.deps.keyFile,
      });
    } else if (target.archiveOutput) {
      run.state = "exporting";
      run.export = await exportCheckpoint({ reader: new StoreReader(new DirBackend(storeDir), LocalStore.keysOf(storeDir, this.deps.keyFile)), checkpointId: id, output: target.archiveOutput, signal });
    }
  }

  private async retain(dir: string): Promise<void> {
    const { config, logger } = this.deps;
    try {
      const added = this.addedSinceCollection;
      const lookForDeadBlocks = added === undefined || added >= this.storeBytes * DEAD_BLOCK_SEARCH_FRACTION;
      const r = await applyLocalRetention(dir, this.deps.nodeId, config.retention, config.sync, logger, lookForDeadBlocks, this.workers(), this.deps.shipper?.currentChain, this.deps.keyFile);
      if (lookForDeadBlocks && r.removed.length > 0 && r.gc) this.addedSinceCollection = 0;
      if (r.skipped) logger.info(`retention postponed: ${r.skipped}`);
      if (r.removed.length > 0) logger.info(`retention removed checkpoint(s) ${r.removed.join(", ")}`);
      const cached = this.cache.current;
      if (r.gc?.renamed?.length && cached && resolve(cached.dir) === resolve(dir)) {
        // the cached checkpoint's segments and blocks are in the rewritten packs now
        const renamed = new Map(r.gc.renamed);
        const backend = new DirBackend(dir);
        try {
          await relocateAfterRewrite(cached, renamed, new StoreReader(backend, LocalStore.keysOf(dir, this.deps.keyFile)));
          const packs = cached.manifest.packs.map((p) => renamed.get(p) ?? p).sort();
          cached.manifest.segment_packs = remapSegmentPacks(cached.manifest, packs, renamed);
          cached.manifest.packs = packs;
        } catch (e) {
          // the next checkpoint finds them itself
          this.cache.current = undefined;
          logger.warn(`after garbage collection: ${errorMessage(e)}; the next checkpoint locates the previous one again`);
        } finally {
          backend.close();
        }
      }
      if (r.gc && (r.gc.removedPacks > 0 || r.gc.rewrittenPacks > 0)) {
        logger.info(`garbage collection: ${r.gc.removedPacks} pack(s) removed, ${r.gc.rewrittenPacks} rewritten, ${formatBytes(r.gc.freedBytes)} freed`);
      }
    } catch (e) {
      logger.warn(`retention in ${dir} failed: ${errorMessage(e)}`);
    }
  }
}

async function latestCheckpointTime(dir: string, keyFile: KeyFile | undefined): Promise<number | undefined> {
  try {
    const reader = new StoreReader(new DirBackend(dir), LocalStore.keysOf(dir, keyFile));
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
