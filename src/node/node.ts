/**
 * A running cairn node: the storage lock, the database and its WAL checkpointer, the blob
 * store, the REST API and the admin socket, started in that order and stopped in reverse.
 */
import type { Server } from "bun";
import type { NodeConfig } from "../config/config.ts";
import { CairnError, errorMessage } from "../errors.ts";
import type { LevelledLogger } from "../log.ts";
import { VERSION } from "../version.ts";
import { AdminServer } from "../admin/server.ts";
import { createRestHandler, registerRestMetrics } from "../api/rest.ts";
import { BodyBudget, errorReply } from "../api/http.ts";
import { BlobStore } from "../engine/blobs.ts";
import { DB_FILE, dbPathIn, openNodeDatabase, pageSizeOf } from "../engine/database.ts";
import { LOCK_FILE, StorageLock } from "../engine/lock.ts";
import type { FileLock } from "../util/file-lock.ts";
import { ChangeTracker } from "../engine/change-tracker.ts";
import { LiveFiles } from "../engine/live-files.ts";
import { WalCheckpointer } from "../engine/wal.ts";
import { walFrameBytes } from "../engine/sqlite-files.ts";
import { CommitPressure } from "../util/io-pressure.ts";
import { Metrics } from "../util/metrics.ts";
import { CRASH_POINT_ENV, TRACKER_FORGETS_ENV } from "../util/crash-point.ts";
import { assertTrustedDir, fileSizeOrZero, tightenModes } from "../util/fsx.ts";
import { checkpointRoutes } from "./admin-routes.ts";
import { CheckpointManager } from "../checkpoint/manager.ts";
import type { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_BLOCK_SIZE, STORE_FILE } from "../store/format.ts";
import { Shipper } from "../checkpoint/shipper.ts";
import { dbMarkOf } from "../store/log.ts";
import { type KeyFile, readKeyFile } from "../store/crypto.ts";
import { LocalStore } from "../store/dir/writer.ts";
import { openTarget } from "../store/open.ts";
import { isReadWrite } from "../store/backend.ts";
import { readTls, type TokenFileOptions, TokenSet } from "../api/auth.ts";
import { RestAccess, registerAccessMetrics, SCOPES } from "../api/access.ts";
import { isLoopback } from "../util/net.ts";
import { describePolicy } from "../store/retention.ts";

/** How long shutdown waits for in-flight requests before closing their connections. */
const DRAIN_TIMEOUT_MS = 15_000;

export interface NodeStatus {
  node_id: string;
  version: string;
  pid: number;
  uptime_secs: number;
  storage_path: string;
  database_path: string;
  blob_count: number;
  blob_bytes: number;
  db_size_bytes: number;
  /** The database's page size (db_page_size when the node created it). */
  db_page_size: number;
  wal_size_bytes: number;
  /** Why writes are refused (the database's WAL or wal-index was unlinked or replaced), or null. */
  writes_refused: string | null;
  wal_checkpoints: {
    runs: number;
    restarts: number;
    truncations: number;
    failures: number;
    last_duration_ms: number;
    wal_high_water_bytes: number;
  };
  last_checkpoint: null | {
    id: number | null;
    time: string;
    started: string | null;
    duration_secs: number;
    result: string;
    error?: string;
    logical_bytes: number | null;
    new_bytes: number | null;
    dir: string;
  };
  checkpoints: ReturnType<CheckpointManager["status"]>;
}

export class CairnNode {
  readonly metrics = new Metrics();
  /** Request body bytes held across all REST requests (max_body_bytes_in_flight). */
  private readonly bodyBudget: BodyBudget;
  readonly startedAt = Date.now();
  private rest?: Server<unknown>;
  private restServe?: (tls: { cert: string; key: string } | undefined) => Server<unknown>;
  /** The data API's tokens (rest_api.tokens_file), re-read on SIGHUP. */
  private restTokens?: TokenSet;
  private admin?: AdminServer;
  /** The HTTP admin API's tokens (admin_api.token_file), re-read on SIGHUP. */
  private adminTokens?: TokenSet;
  /** The claim on the configured checkpoint store (LocalStore.claim), released at stop. */
  private storeClaim?: FileLock;
  private stopping?: Promise<void>;

  private constructor(
    readonly config: NodeConfig,
    readonly logger: LevelledLogger,
    readonly nodeId: string,
    private readonly lock: FileLock,
    private readonly db: Database,
    /** The node's descriptors of its database files, held until the database is closed. */
    readonly live: LiveFiles,
    /** Which pages changed since the store's last checkpoint (engine/change-tracker.ts). */
    private readonly tracker: ChangeTracker,
    readonly wal: WalCheckpointer,
    readonly blobs: BlobStore,
    readonly checkpoints: CheckpointManager,
    /** WAL shipping (checkpoint_config.wal_shipping), when it is on. */
    readonly shipper: Shipper | undefined,
  ) {
    this.bodyBudget = new BodyBudget(config.maxBodyBytesInFlight);
  }

  /** Start a node on `config`. Everything acquired is released again if a later step fails. */
  static async start(config: NodeConfig, logger: LevelledLogger): Promise<CairnNode> {
    // the HTTP admin API's token file and certificate, read before anything is opened: a bad one is a config error
    const adminTokens = config.adminApi ? TokenSet.read(config.adminApi.tokenFile, { key: "admin_api.token_file" }) : undefined;
    const adminTls = config.adminApi?.tls ? readTls(config.adminApi.tls, "admin_api.tls") : undefined;
    const restTokens = config.restAccess?.tokensFile ? TokenSet.read(config.restAccess.tokensFile, { key: "rest_api.tokens_file", scopes: SCOPES }) : undefined;
    const restTls = config.restAccess?.tls ? readTls(config.restAccess.tls, "rest_api.tls") : undefined;
    // SQLite follows a symlinked cairn.db: a storage folder another user can write into is refused
    assertTrustedDir(config.storagePath);
    const lock = StorageLock.acquire(config.storagePath, "node");
    // an installation made before cairn kept its files owner-only: tighten, and say so
    const storageFiles = [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`, LOCK_FILE];
    for (const [dir, only] of [[config.storagePath, storageFiles], [config.checkpoint.dir, existsSync(join(config.checkpoint.dir, STORE_FILE)) ? undefined : []]] as const) {
      const n = tightenModes(dir, only);
      if (n > 0) logger.warn(`${dir}: ${n} file(s) or folder(s) were open to other users; made owner-only (files 0600, folders 0700)`);
    }
    let db: Database | undefined;
    let live: LiveFiles | undefined;
    let node: CairnNode | undefined;
    let storeClaim: FileLock | undefined;
    try {
      const dbFile = dbPathIn(config.storagePath);
      // what a clean stop left, before SQLite opens the file: the saved changes must describe it
      const markBeforeOpen = ChangeTracker.markBeforeOpen(dbFile);
      const shippingMark = dbMarkOf(dbFile);
      const opened = openNodeDatabase(config.storagePath, { pageSize: config.dbPageSize });
      if (config.dbPageSize !== undefined && opened.pageSize !== config.dbPageSize) {
        logger.info(`${dbFile} has pages of ${opened.pageSize} bytes; db_page_size (${config.dbPageSize}) applies only to a database created from now on`);
      } else if (config.dbPageSize === undefined && opened.pageSize < DEFAULT_BLOCK_SIZE) {
        // (an operator who chose the smaller pages says so with db_page_size, and is not told again)
        logger.info(
          `${dbFile} has pages of ${opened.pageSize} bytes, smaller than a checkpoint's blocks (${DEFAULT_BLOCK_SIZE}): an incremental checkpoint also reads each changed block's unchanged pages; ` +
            `to keep them, set db_page_size: ${opened.pageSize}; to change them, see the README (Page size)`,
        );
      }
      db = opened.db;
      live = LiveFiles.open(dbFile);
      const tracker = ChangeTracker.resume(config.storagePath, live, markBeforeOpen);
      const cc = config.checkpoint;
      const keyFile = cc.keyFile ? configuredKey(cc.keyFile) : undefined;
      // refused now, not at the first checkpoint: another node's store, a copy, and an encrypted
      // store without the key or a plaintext one with it (never a mix)
      LocalStore.assertWritableBy(cc.dir, opened.nodeId, keyFile);
      // the store is claimed now if it exists, else once the first checkpoint has made it
      if (existsSync(cc.dir)) storeClaim = claimStore(cc.dir);
      let checkpointWanted: string | undefined;
      let requestCheckpoint = (why: string) => {
        checkpointWanted = why;
      };
      const remote = cc.remote ? openTarget(cc.remote.url, { endpoint: cc.remote.endpoint, region: cc.remote.region, accessKeyId: cc.remote.accessKeyId, secretAccessKey: cc.remote.secretAccessKey, requestTimeoutMs: cc.remote.requestTimeoutMs }) : undefined;
      const shipper = cc.walShipping.enabled
        ? new Shipper({
            config: cc.walShipping,
            compression: cc.compression,
            storeDir: cc.dir,
            nodeId: opened.nodeId,
            storagePath: config.storagePath,
            dbFile,
            live,
            logger,
            markBeforeOpen: shippingMark,
            ensureStore: () => LocalStore.openForWrite(cc.dir, opened.nodeId, logger, keyFile).release(),
            requestCheckpoint: (why) => requestCheckpoint(why),
            remote: remote && isReadWrite(remote) ? { backend: remote, retryBackoffMs: Math.min(cc.remote!.retryBackoffMs, 5000) } : undefined,
          })
        : undefined;
      const wal = new WalCheckpointer({
        dbFile,
        thresholdBytes: config.walCheckpoint.thresholdBytes,
        intervalMs: config.walCheckpoint.intervalMs,
        logger,
        beforeFold: () => tracker.beforeFold(),
        onFold: () => tracker.noteFold(),
        beforeTruncate: () => shipper?.beforeWalReset(),
        walBytes: () => walFrameBytes(live!.shmFd),
      });
      const pressure = new CommitPressure();
      const blobs = new BlobStore(db, wal, logger, live, tracker, pressure, shipper);
      const checkpoints = new CheckpointManager({
        config: config.checkpoint,
        nodeId: opened.nodeId,
        live,
        tracker,
        shipper,
        commitPressure: pressure.buffer,
        storagePath: config.storagePath,
        wal,
        logger,
        keyFile,
      });
      node = new CairnNode(config, logger, opened.nodeId, lock, db, live, tracker, wal, blobs, checkpoints, shipper);
      node.storeClaim = storeClaim;
      checkpoints.onStoreWritten = () => node!.claimStoreOnce();
      if (opened.created) logger.info(`created a new database ${dbFile} (node id ${opened.nodeId})`);
      // before the first commit of the node's: which chain the log continues
      shipper?.start();
      wal.start();
      node.registerMetrics();
      node.restTokens = restTokens;
      node.listenRest(restTls);
      node.admin = new AdminServer({
        socketPath: config.adminSocketPath,
        logger,
        health: () => ({ ok: true, node_id: opened.nodeId, pid: process.pid, version: VERSION }),
        routes: checkpointRoutes(checkpoints),
      });
      await node.admin.start();
      if (config.adminApi && adminTokens) {
        node.adminTokens = adminTokens;
        node.admin.listenHttp({ host: config.adminApi.host, port: config.adminApi.port, tls: adminTls, tokens: () => node!.adminTokens! });
        logger.info(
          `admin API serving ${adminTls ? "https" : "http"}://${hostForUrl(config.adminApi.host)}:${node.admin.httpPort} ` +
            `(${adminTokens.size} token(s) from ${config.adminApi.tokenFile})`,
        );
      }
      await checkpoints.start();
      requestCheckpoint = (why) => {
        if (checkpoints.status().running) return;
        logger.info(`checkpoint requested: ${why}`);
        try {
          checkpoints.request({});
        } catch (e) {
          logger.warn(`the checkpoint could not be started: ${errorMessage(e)}`);
        }
      };
      if (checkpointWanted) requestCheckpoint(checkpointWanted);
      if (process.env[TRACKER_FORGETS_ENV]) logger.warn(`${TRACKER_FORGETS_ENV} is set: this node's change tracking forgets every change (a test setting)`);
      if (process.env[CRASH_POINT_ENV]) logger.warn(`${CRASH_POINT_ENV} is set: this node will kill itself at crash point ${process.env[CRASH_POINT_ENV]} (a test setting)`);
      logger.info(
        `cairn ${VERSION} node ${opened.nodeId} serving ${restTls ? "https" : "http"}://${hostForUrl(config.restApi.host)}:${config.restApi.port} ` +
          `(storage ${config.storagePath}, admin socket ${config.adminSocketPath})`,
      );
      return node;
    } catch (e) {
      if (node) await node.stop().catch(() => {});
      else {
        db?.close();
        live?.closeAfterDatabase();
        storeClaim?.release();
        lock.release();
      }
      throw e;
    }
  }

  /** Claim the configured store if it was made since the start (LocalStore.claim). */
  private claimStoreOnce(): void {
    if (this.storeClaim || this.stopping) return;
    try {
      this.storeClaim = claimStore(this.config.checkpoint.dir);
    } catch (e) {
      this.logger.warn(errorMessage(e));
    }
  }

  private listenRest(tls: { cert: string; key: string } | undefined): void {
    const { host, port } = this.config.restApi;
    const access = this.config.restAccess;
    const handler = createRestHandler({
      blobs: this.blobs,
      maxBlobSize: this.config.maxBlobSize,
      bodyBudget: this.bodyBudget,
      metrics: this.metrics,
      logger: this.logger,
      status: () => this.status(),
      access: access ? new RestAccess(() => ({ tokens: this.restTokens, anonymous: access.anonymous }), this.metrics, (m) => this.logger.warn(m)) : undefined,
    });
    if (tls) {
      // a certificate renewed on SIGHUP is served by a second listener on the same port
      // (SO_REUSEPORT), so no connection is refused meanwhile; first, a plain bind makes sure
      // no other process listens there already (reusePort alone would share the port with it)
      try {
        Bun.listen({ hostname: host, port, socket: { data() {} } }).stop(true);
      } catch (e) {
        throw new CairnError("E_LISTEN", `cannot listen on ${host}:${port}: ${errorMessage(e)}`, { hint: "is another process using rest_api_address? choose another one in the config", cause: e });
      }
    }
    this.restServe = (t) =>
      Bun.serve({
        hostname: host,
        port: this.rest?.port ?? port,
        // one byte over the limit so that our own check answers 413 with a JSON reason
        maxRequestBodySize: this.config.maxBlobSize + 1,
        idleTimeout: 60,
        ...(t ? { tls: t, reusePort: true } : {}),
        fetch: (req, server) => {
          if (this.stopping) return errorReply(503, "E_SHUTTING_DOWN", "the node is shutting down", { connection: "close" });
          return handler(req, server.requestIP(req)?.address);
        },
        error: (e) => {
          this.logger.error(`REST API: ${errorMessage(e)}`);
          return errorReply(500, "E_INTERNAL", "internal error; see the node's log");
        },
      });
    try {
      this.rest = this.restServe(tls);
    } catch (e) {
      throw new CairnError("E_LISTEN", `cannot listen on ${host}:${port}: ${errorMessage(e)}`, {
        hint: "is another process using rest_api_address? choose another one in the config",
        cause: e,
      });
    }
    if (!isLoopback(host) && !tls) {
      this.logger.warn(`the REST API listens on ${host}, beyond this host, without TLS: bearer tokens and blobs cross the network in clear (set rest_api.tls)`);
    }
  }

  /** SIGHUP: the REST API's certificate read again and served by a new listener; the old one finishes its requests. */
  private renewRestTls(tls: { cert: string; key: string }): void {
    const old = this.rest;
    this.rest = this.restServe!(tls);
    void old?.stop(false);
  }

  private registerMetrics(): void {
    const m = this.metrics;
    registerRestMetrics(m);
    if (this.config.restAccess) registerAccessMetrics(m);
    m.collect("cairn_info", "Node identity; always 1.", () => [{ labels: { version: VERSION, node_id: this.nodeId }, value: 1 }]);
    m.collect("cairn_uptime_seconds", "Seconds since the node started.", () => (Date.now() - this.startedAt) / 1000);
    m.collect("cairn_blobs", "Blobs stored.", () => this.blobs.totals().count);
    m.collect("cairn_blob_bytes", "Bytes of blob content stored.", () => this.blobs.totals().bytes);
    m.collect("cairn_db_size_bytes", "Size of the database file.", () => fileSizeOrZero(dbPathIn(this.config.storagePath)));
    m.collect("cairn_wal_size_bytes", "Size of the database's -wal file.", () => this.wal.walSize());
    m.collect("cairn_wal_high_water_bytes", "Largest -wal file size seen after a commit.", () => this.wal.stats.walHighWaterBytes);
    m.collect("cairn_wal_checkpoints_total", "WAL checkpoints run by the node.", () => this.wal.stats.runs, "counter");
    m.collect("cairn_wal_restarts_total", "WAL catch-ups run by the node (the last frames folded in behind the write barrier, so that SQLite starts the WAL over).", () => this.wal.stats.restarts, "counter");
    m.collect("cairn_wal_truncations_total", "WAL checkpoints run by the node that truncated the WAL (TRUNCATE, behind the write barrier).", () => this.wal.stats.truncations, "counter");
    m.collect("cairn_changes_tracked_pages", "Database pages changed since the configured store's last checkpoint, as tracked.", () => this.tracker.status().changed_pages);
    m.collect(
      "cairn_changes_tracking_lost",
      "1 if the next checkpoint into the configured store must read the whole database (checkpoint status says why).",
      () => (this.tracker.status().lost ? 1 : 0),
    );
    const sh = this.shipper;
    if (sh) {
      const st = () => sh.status();
      m.collect("cairn_shipping_lag_seconds", "Age of the oldest committed transaction not yet shipped, by store (0: all shipped).", () => {
        const s = st();
        return [{ labels: { store: "local" }, value: s.lag_seconds }, ...(s.remote ? [{ labels: { store: "remote" }, value: Math.max(s.remote.lag_seconds, s.lag_seconds) }] : [])];
      });
      m.collect("cairn_shipping_pending_transactions", "Committed transactions not yet shipped, by store.", () => {
        const s = st();
        return [{ labels: { store: "local" }, value: s.pending_txns }, ...(s.remote ? [{ labels: { store: "remote" }, value: s.remote.pending_txns }] : [])];
      });
      m.collect("cairn_shipping_failures_total", "Shipments that failed (each retried), by store.", () => {
        const s = st();
        return [{ labels: { store: "local" }, value: s.failures }, ...(s.remote ? [{ labels: { store: "remote" }, value: s.remote.failures }] : [])];
      }, "counter");
      m.collect("cairn_shipping_last_shipped_timestamp_seconds", "The instant up to which the local store holds every committed transaction.", () => {
        const u = st().shipped_until;
        return u ? Date.parse(u) / 1000 : 0;
      });
      m.collect("cairn_shipping_segments_total", "Log segments written to the local store.", () => st().segments_written, "counter");
      m.collect("cairn_shipping_chains_started_total", "Log chains started (a gap in the log, a restore, a first start).", () => st().chains_started, "counter");
      m.collect("cairn_write_unshipped_total", "Writes committed but answered 503 because synchronous shipping did not complete in time.", () => this.blobs.stats.unshippedOps, "counter");
    }
    m.collect("cairn_wal_checkpoint_failures_total", "WAL checkpoints that failed.", () => this.wal.stats.failures, "counter");
    m.collect("cairn_write_commits_total", "Group commits of blob writes.", () => this.blobs.stats.commits, "counter");
    m.collect("cairn_write_ops_total", "Blob writes (PUT and DELETE) committed.", () => this.blobs.stats.committedOps, "counter");
    m.collect("cairn_write_commit_failures_total", "Group commits that failed.", () => this.blobs.stats.failedCommits, "counter");
    m.collect("cairn_http_body_bytes_in_flight", "Request body bytes held in memory now (max_body_bytes_in_flight caps it).", () => this.bodyBudget.inUse);
    m.collect("cairn_writes_refused", "1 once the database's files were unlinked or replaced under the node: writes are refused until a restart.", () => (this.blobs.refused ? 1 : 0));
    const cs = () => this.checkpoints.status();
    const lastResult = () => cs().last_success?.result;
    m.collect("cairn_checkpoint_running", "1 while a checkpoint runs (or waits for its delay).", () => (cs().running ? 1 : 0));
    m.collect("cairn_checkpoints_total", "Checkpoints finished, by result.", () => {
      const s = cs();
      return [
        { labels: { result: "success" }, value: s.successes },
        { labels: { result: "failed" }, value: s.failures },
        { labels: { result: "cancelled" }, value: s.cancellations },
      ];
    }, "counter");
    m.collect("cairn_checkpoint_consecutive_failures", "Checkpoints failed since the last success.", () => cs().consecutive_failures);
    m.collect("cairn_checkpoint_last_id", "Id of the last successful checkpoint (0: none).", () => lastResult()?.id ?? 0);
    m.collect("cairn_checkpoint_last_success_timestamp_seconds", "When the last successful checkpoint was created.", () => {
      const r = lastResult();
      return r ? Date.parse(r.created) / 1000 : 0;
    });
    m.collect("cairn_checkpoint_last_duration_seconds", "Duration of the last successful checkpoint.", () => (lastResult()?.durationMs ?? 0) / 1000);
    m.collect("cairn_checkpoint_last_logical_bytes", "Database bytes the last successful checkpoint covers.", () => lastResult()?.logicalBytes ?? 0);
    m.collect("cairn_checkpoint_last_new_bytes", "Bytes the last successful checkpoint added to its store.", () => lastResult()?.newBytes ?? 0);
    m.collect("cairn_checkpoint_store_bytes", "Size of the checkpoint directory.", () => cs().store_bytes);
    const rs = () => cs().remote;
    if (this.config.checkpoint.remote) {
      m.collect("cairn_remote_pushes_total", "Copies of checkpoints to the remote store, by result.", () => {
        const r = rs();
        return [
          { labels: { result: "success" }, value: r?.successes ?? 0 },
          { labels: { result: "failed" }, value: r?.failures ?? 0 },
        ];
      }, "counter");
      m.collect("cairn_remote_consecutive_failures", "Copies to the remote failed since the last success.", () => rs()?.consecutive_failures ?? 0);
      m.collect("cairn_remote_request_failures_total", "Requests to the remote store that failed or timed out (each retried).", () => rs()?.request_failures ?? 0, "counter");
      m.collect("cairn_remote_last_checkpoint_id", "Newest checkpoint on the remote store (0: none).", () => rs()?.last_pushed_id ?? 0);
      m.collect("cairn_remote_last_success_timestamp_seconds", "When a copy to the remote last succeeded.", () => {
        const t = rs()?.last_success;
        return t ? Date.parse(t) / 1000 : 0;
      });
      m.collect("cairn_remote_uploaded_bytes_total", "Bytes uploaded to the remote store.", () => rs()?.uploaded_bytes_total ?? 0, "counter");
    }
  }


  status(): NodeStatus {
    const totals = this.blobs.totals();
    const dbFile = dbPathIn(this.config.storagePath);
    const w = this.wal.stats;
    return {
      node_id: this.nodeId,
      version: VERSION,
      pid: process.pid,
      uptime_secs: Math.round((Date.now() - this.startedAt) / 1000),
      storage_path: this.config.storagePath,
      database_path: dbFile,
      blob_count: totals.count,
      blob_bytes: totals.bytes,
      db_size_bytes: fileSizeOrZero(dbFile),
      db_page_size: pageSizeOf(this.db),
      wal_size_bytes: this.wal.walSize(),
      writes_refused: this.blobs.refused ?? null,
      wal_checkpoints: {
        runs: w.runs,
        restarts: w.restarts,
        truncations: w.truncations,
        failures: w.failures,
        last_duration_ms: Math.round(w.lastDurationMs * 10) / 10,
        wal_high_water_bytes: w.walHighWaterBytes,
      },
      last_checkpoint: this.lastCheckpoint(),
      checkpoints: this.checkpoints.status(),
    };
  }

  private lastCheckpoint(): NodeStatus["last_checkpoint"] {
    const last = this.checkpoints.status().last;
    if (!last) return null;
    const ms = last.started && last.finished ? Date.parse(last.finished) - Date.parse(last.started) : 0;
    return {
      id: last.result?.id ?? null,
      time: last.finished ?? last.requested,
      started: last.started ?? null,
      duration_secs: Math.round(ms) / 1000,
      result: last.outcome ?? "unknown",
      ...(last.error ? { error: last.error } : {}),
      logical_bytes: last.result?.logicalBytes ?? null,
      new_bytes: last.result?.newBytes ?? null,
      dir: last.dir,
    };
  }

  /**
   * Apply a re-read config (SIGHUP): what can change while the node runs is applied at once
   * (the log level); anything else that differs is named as needing a restart.
   */
  reload(next: NodeConfig): void {
    const log = this.logger;
    const applied: string[] = [];
    if (next.logLevel !== this.logger.level()) {
      applied.push(`log_level ${this.logger.level()} → ${next.logLevel}`);
      this.logger.setLevel(next.logLevel);
    }
    // a token file read again (same path): a file that became unreadable or unsafe keeps the previous tokens
    const reread = (file: string, opts: TokenFileOptions, what: string, api: string): TokenSet | undefined => {
      try {
        const tokens = TokenSet.read(file, opts);
        applied.push(`${what} tokens re-read (${tokens.size})`);
        return tokens;
      } catch (e) {
        log.error(`SIGHUP: the ${api} keeps its previous tokens: ${errorMessage(e)}`);
        return undefined;
      }
    };
    const aa = this.config.adminApi;
    if (aa && this.adminTokens && next.adminApi?.tokenFile === aa.tokenFile) {
      this.adminTokens = reread(aa.tokenFile, { key: "admin_api.token_file" }, "admin_api", "admin API") ?? this.adminTokens;
    }
    const ra = this.config.restAccess;
    if (ra?.tokensFile && next.restAccess?.tokensFile === ra.tokensFile) {
      this.restTokens = reread(ra.tokensFile, { key: "rest_api.tokens_file", scopes: SCOPES }, "rest_api", "REST API") ?? this.restTokens;
    }
    if (ra?.tls && JSON.stringify(next.restAccess?.tls) === JSON.stringify(ra.tls)) {
      try {
        this.renewRestTls(readTls(ra.tls, "rest_api.tls"));
        applied.push("rest_api.tls certificate re-read");
      } catch (e) {
        log.error(`SIGHUP: the REST API keeps its previous certificate: ${errorMessage(e)}`);
      }
    }
    if (JSON.stringify(next.checkpoint.retention) !== JSON.stringify(this.config.checkpoint.retention)) {
      // the checkpoint manager reads this object at each retention
      applied.push(`checkpoint_config.retention (${describePolicy(next.checkpoint.retention)})`);
      this.config.checkpoint.retention = next.checkpoint.retention;
    }
    const { logLevel: _a, configFile: _b, ...nowRest } = this.config;
    const { logLevel: _c, configFile: _d, ...nextRest } = next;
    const restart = (Object.keys(nowRest) as (keyof typeof nowRest)[]).filter((k) => JSON.stringify(nowRest[k]) !== JSON.stringify(nextRest[k]));
    log.info(
      `SIGHUP received: config re-read; ${applied.length > 0 ? `applied ${applied.join(", ")}` : "nothing to apply"}` +
        (restart.length > 0 ? `; changes to ${restart.join(", ")} take effect at the next start` : ""),
    );
  }

  /**
   * Shut down cleanly: stop accepting requests and let in-flight ones finish, commit queued
   * writes, stop the admin socket (removing it), checkpoint the WAL into the database file,
   * close the database, release the lock. Safe to call more than once.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const log = this.logger;
    if (this.rest) {
      const server = this.rest;
      const drained = server.stop(false);
      const timedOut = await Promise.race([
        Promise.resolve(drained).then(() => false),
        new Promise<boolean>((r) => setTimeout(() => r(true), DRAIN_TIMEOUT_MS).unref?.()),
      ]);
      if (timedOut) {
        log.warn(`in-flight requests did not finish within ${DRAIN_TIMEOUT_MS / 1000} s; closing their connections`);
        server.stop(true);
      }
    }
    await this.checkpoints.stop();
    this.blobs.close();
    await this.blobs.flushed();
    await this.shipper?.stop();
    await this.admin?.stop();
    await this.wal.stop();
    try {
      const r = this.db.query<{ busy: number; log: number; checkpointed: number }, []>("PRAGMA wal_checkpoint(TRUNCATE)").get();
      if (r?.busy) log.warn("final WAL checkpoint was incomplete; SQLite will finish it on next open");
    } catch (e) {
      log.warn(`final WAL checkpoint failed: ${errorMessage(e)}`);
    }
    this.db.close();
    // only now: closing these while a connection was open would drop SQLite's locks
    this.live.closeAfterDatabase();
    try {
      this.tracker.save(this.config.storagePath, dbPathIn(this.config.storagePath));
    } catch (e) {
      log.warn(`the record of changes since the last checkpoint was not saved (${errorMessage(e)}); the next checkpoint reads the whole database`);
    }
    try {
      this.shipper?.saveState();
    } catch (e) {
      log.warn(`where the shipped log ends was not recorded (${errorMessage(e)}); the next start continues it from the WAL if it can`);
    }
    this.storeClaim?.release();
    this.lock.release();
    log.info("node stopped cleanly");
  }
}

function claimStore(dir: string): FileLock {
  return LocalStore.claim(dir, (holder) =>
    new CairnError("E_BUSY", `another node (pid ${holder?.pid ?? "unknown"}) uses the checkpoint directory ${dir}`, { hint: "give each node its own checkpoint_config.db_checkpoint_dir" }),
  );
}

function hostForUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** The configured key file, or E_CONFIG naming the key (never the key itself). */
function configuredKey(path: string): KeyFile {
  try {
    return readKeyFile(path);
  } catch (e) {
    throw new CairnError("E_CONFIG", `checkpoint_config.encryption.key_file: ${errorMessage(e)}`, { hint: (e as CairnError).hint ?? "create one with: cairn key generate --output FILE" });
  }
}
