/**
 * WAL shipping: every transaction the database commits goes into the checkpoint store as it
 * commits, and on to the remote store, so that a lost disk loses at most the last
 * `interval_millis` (nothing, with `synchronous`), and a restore can go to any instant.
 *
 * The node tells the shipper of each of its commits (same thread); the capture
 * (engine/wal-capture.ts) reads the new frames from the WAL and the shipper numbers the
 * transactions in its chain and queues them. At least every interval (at once in synchronous
 * mode) the queue is written as one log segment (store/log.ts) into the store: temp file,
 * fsync, rename, fsync the folder. Only then is a synchronous write acknowledged; group commit
 * and one shipment for everything queued keep that affordable. Segments then go to the remote
 * in order, retried while it is down; that never slows local writes (unless synchronous mode
 * waits for the remote too, with a timeout: then 503, nothing acknowledged that is not shipped).
 *
 * No frame may leave the WAL before it is shipped: before a write that would start the WAL over
 * and before a TRUNCATE fold the node waits for `flush()` (`beforeWalReset`), so after a
 * `kill -9` the WAL still holds everything after the store's last segment and the next start
 * continues the chain from there (`WalCapture.start`). A clean stop records where the chain
 * ends beside the database (`cairn-log-state`); a restore records where the restored state
 * stands (`cairn-log-origin`), and the node's next chain forks from there. Anything else (a
 * first start, a crash after which the WAL no longer holds the chain's end, another program's
 * writes the capture could not follow, a store that could not be written for too long) starts
 * a new chain from an unknown state: it is usable from its first checkpoint, so the shipper asks
 * for one.
 */
import { mkdirSync, readdirSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { WalShippingConfig } from "../config/config.ts";
import { CairnError, errorMessage } from "../errors.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import { type CapturedTxn, WalCapture, type WalMark } from "../engine/wal-capture.ts";
import { readWalIndexHeader } from "../engine/sqlite-files.ts";
import type { Logger } from "../log.ts";
import type { ReadWriteBackend } from "../store/backend.ts";
import {
  type ChainInfo,
  chainPath,
  decodeChain,
  decodeSegmentHeader,
  encodeChain,
  encodeSegment,
  LOG_DIR,
  LOG_FORMAT,
  type DbMark,
  dbMarkOf,
  LOG_ORIGIN_FILE,
  LOG_STATE_FILE,
  type LogOrigin,
  type LogPosition,
  newChainId,
  sameDbMark,
  SEGMENT_HEADER_PREFIX_BYTES,
  segmentOf,
  type SegmentRef,
} from "../store/log.ts";
import { type Clock, every, systemClock } from "../util/clock.ts";
import { crashPoint } from "../util/crash-point.ts";
import { DIR_MODE, fsyncDir, readOwnFile, readOwnFilePrefix, writeFileAtomic, writeFileAtomicAsync } from "../util/fsx.ts";

/** A segment is cut at about this many bytes of pages (before compression). */
const SEGMENT_TARGET_BYTES = 32 * 1024 * 1024;
/** Past this many bytes queued and not written to the store, the chain is given up (memory stays bounded). */
const MAX_QUEUED_BYTES = 512 * 1024 * 1024;

/**
 * Where the chain stands, beside the database: at a clean stop (with the database file's mark);
 * else where in the WAL it goes on (`wal`, written at a start), or that every frame before the WAL
 * generation starting with salt `nextSalt1` is shipped (written before the node starts the WAL over).
 */
interface SavedState {
  chain: string;
  txn: number;
  prev: string | null;
  until: number;
  mark?: DbMark;
  wal?: WalMark;
  nextSalt1?: number;
}

interface QueuedTxn extends CapturedTxn {
  txn: number;
}

export interface ShippingStatus {
  enabled: true;
  synchronous: boolean;
  chain: string;
  /** Where the chain started from, or null (from its first checkpoint on). */
  chain_base: LogPosition | null;
  last_txn: number;
  last_shipped_txn: number;
  last_shipped_at: string | null;
  /** The instant up to which the store holds every transaction. */
  shipped_until: string | null;
  pending_txns: number;
  pending_bytes: number;
  lag_seconds: number;
  segments_written: number;
  failures: number;
  last_error: string | null;
  chains_started: number;
  last_chain_reason: string;
  remote: null | {
    url: string;
    last_shipped_txn: number;
    pending_segments: number;
    pending_txns: number;
    lag_seconds: number;
    failures: number;
    last_error: string | null;
  };
}

export interface ShipperOptions {
  config: WalShippingConfig;
  /** The store's checkpoint_config.compression: segments are stored the same way. */
  compression: "none" | "zstd";
  storeDir: string;
  nodeId: string;
  storagePath: string;
  dbFile: string;
  live: LiveFiles;
  logger: Logger;
  clock?: Clock;
  /** The database file's mark before SQLite opened it. */
  markBeforeOpen: DbMark | undefined;
  /** Make sure the store exists (it must before anything is written into it). */
  ensureStore: () => void;
  /** Ask for a checkpoint (a new chain is usable from its first one). */
  requestCheckpoint: (why: string) => void;
  remote?: { backend: ReadWriteBackend; retryBackoffMs: number };
}

interface Waiter {
  txn: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  timer: unknown;
}

export class Shipper {
  private capture!: WalCapture;
  private chain!: ChainInfo;
  private chainWritten = false;
  private lastTxn = 0;
  private shippedTxn = 0;
  private prevDigest: string | null = null;
  private shippedUntil = 0;
  private lastShippedAt = 0;
  private queue: QueuedTxn[] = [];
  private queuedBytes = 0;
  private shipping?: Promise<void>;
  private again = false;
  private segments = 0;
  private failures = 0;
  private lastError: string | null = null;
  private chainsStarted = 0;
  private chainReason = "";
  private waiters: Waiter[] = [];
  private stopTimer?: () => void;
  private stopped = false;
  private lastWarn = 0;
  private readonly clock: Clock;
  private readonly remote?: RemoteLog;

  constructor(private readonly o: ShipperOptions) {
    this.clock = o.clock ?? systemClock;
    if (o.remote) this.remote = new RemoteLog(o.remote.backend, o.storeDir, o.remote.retryBackoffMs, this.clock, o.logger, () => this.settleWaiters());
  }

  get synchronous(): boolean {
    return this.o.config.synchronous;
  }

  /** The chain being written (retention keeps it whole). */
  get currentChain(): string | undefined {
    return this.chain?.chain;
  }

  /** Decide which chain to ship into (continue, fork or start one) and start the timer. */
  start(): void {
    const o = this.o;
    o.ensureStore();
    const origin = this.takeFile<LogOrigin>(LOG_ORIGIN_FILE);
    const saved = this.takeFile<SavedState>(LOG_STATE_FILE);
    let how: string;
    if (origin && sameDbMark(origin.mark, o.markBeforeOpen)) {
      this.capture = WalCapture.start(o.live).capture;
      this.newChain(origin.position, `the database was restored to ${new Date(origin.position.ms).toISOString()} of chain ${origin.position.chain}: a new timeline forks there`);
      how = "forked";
    } else if (saved && sameDbMark(saved.mark, o.markBeforeOpen) && this.chainEndsAt(saved.chain, saved.txn, saved.prev)) {
      this.capture = WalCapture.start(o.live).capture;
      this.continueChain(saved.chain, saved.txn, saved.prev, saved.until);
      how = `continued after a clean stop at transaction ${saved.txn}`;
    } else {
      // after a crash: the WAL still holds where the chain ends (the last segment's position, the
      // resume point recorded at the start, or the start of the WAL generation the node was
      // about to begin when every frame before it was shipped)
      const end = this.newestChainEnd();
      const hdr = readWalIndexHeader(o.live.shmFd);
      const candidates: { chain: string; txn: number; prev: string | null; until: number; wal: WalMark }[] = [];
      if (end) candidates.push({ ...end, prev: end.digest || null });
      if (saved?.wal) candidates.push({ ...saved, wal: saved.wal });
      if (saved?.nextSalt1 !== undefined && saved.nextSalt1 === hdr.salt1) candidates.push({ ...saved, wal: { salt1: hdr.salt1, salt2: hdr.salt2, frame: 0 } });
      let continued: (typeof candidates)[number] | undefined;
      for (const c of candidates) {
        if (!this.chainEndsAt(c.chain, c.txn, c.prev)) continue;
        const started = WalCapture.start(o.live, c.wal);
        if (started.continued) {
          this.capture = started.capture;
          continued = c;
          break;
        }
      }
      if (continued) {
        this.continueChain(continued.chain, continued.txn, continued.prev, continued.until);
        how = `continued from the WAL after transaction ${continued.txn} (the node had not stopped cleanly)`;
      } else {
        this.capture = WalCapture.start(o.live).capture;
        const why = origin
          ? "the restored database was changed before the node started"
          : saved
            ? "the database changed while the node was stopped"
            : end
              ? "the WAL no longer holds where the chain ends (the node did not stop cleanly)"
              : "no chain to continue";
        this.newChain(null, why);
        how = "started";
      }
    }
    o.logger.info(`WAL shipping into ${o.storeDir}: chain ${this.chain.chain} ${how}${o.config.synchronous ? " (synchronous)" : ""}`);
    // where the chain goes on in this WAL, should the node not stop cleanly
    this.writeState({ wal: this.capture.mark() });
    // what the WAL held after the continued position, and any commit since
    this.take(0);
    this.stopTimer = every(this.clock, o.config.intervalMs, () => {
      this.kick();
      this.warnIfRemoteLags();
    });
    this.remote?.start(this.chain.chain);
    this.kick();
  }

  private takeFile<T>(name: string): T | undefined {
    const file = join(this.o.storagePath, name);
    try {
      const v = JSON.parse(new TextDecoder().decode(readOwnFile(file, 64 * 1024))) as T;
      unlinkSync(file);
      return v;
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") {
        try {
          unlinkSync(file);
        } catch {
          // gone already
        }
      }
      return undefined;
    }
  }

  private chainDir(chain: string): string {
    return join(this.o.storeDir, LOG_DIR, chain);
  }

  private segmentsOf(chain: string): SegmentRef[] {
    return localSegments(this.o.storeDir, chain);
  }

  private readChain(chain: string): ChainInfo {
    return decodeChain(readOwnFile(join(this.o.storeDir, chainPath(chain)), 64 * 1024), chainPath(chain));
  }

  private chainEndsAt(chain: string, txn: number, prev: string | null): boolean {
    const last = this.segmentsOf(chain).at(-1);
    return last ? last.lastTxn === txn && last.digest === prev : txn === 0 && prev === null;
  }

  /** This node's newest chain in the store and where it ends (for a start after a crash). */
  private newestChainEnd(): { chain: string; txn: number; digest: string; until: number; wal: WalMark } | undefined {
    let best: { info: ChainInfo; created: number } | undefined;
    let chains: string[];
    try {
      chains = readdirSync(join(this.o.storeDir, LOG_DIR));
    } catch {
      return undefined;
    }
    for (const c of chains) {
      try {
        const info = this.readChain(c);
        if (info.node_id !== this.o.nodeId) continue;
        const created = Date.parse(info.created);
        if (!best || created > best.created) best = { info, created };
      } catch {
        // not a chain this node can continue
      }
    }
    if (!best) return undefined;
    const last = this.segmentsOf(best.info.chain).at(-1);
    if (!last) return best.info.wal ? { chain: best.info.chain, txn: 0, digest: "", until: 0, wal: best.info.wal } : undefined;
    try {
      // the header is all that is needed: read it, not the segment
      const { header } = decodeSegmentHeader(readOwnFilePrefix(join(this.o.storeDir, last.path), SEGMENT_HEADER_PREFIX_BYTES), last.path);
      return { chain: best.info.chain, txn: last.lastTxn, digest: last.digest, until: last.untilMs, wal: header.wal };
    } catch {
      return undefined;
    }
  }

  private continueChain(chain: string, txn: number, prev: string | null, until: number): void {
    let info: ChainInfo;
    try {
      info = this.readChain(chain);
    } catch {
      this.newChain(null, "the chain record could not be read");
      return;
    }
    this.chain = info;
    this.chainWritten = true;
    this.lastTxn = txn;
    this.shippedTxn = txn;
    this.prevDigest = prev;
    this.shippedUntil = until;
  }

  private newChain(base: LogPosition | null, why: string): void {
    this.chain = { format: LOG_FORMAT, chain: newChainId(), node_id: this.o.nodeId, created: new Date(this.clock.now()).toISOString(), base };
    this.chainWritten = false;
    this.lastTxn = 0;
    this.shippedTxn = 0;
    this.prevDigest = null;
    this.shippedUntil = 0;
    this.chainsStarted++;
    this.chainReason = why;
    this.chain.wal = this.capture?.mark();
    try {
      this.writeChainRecord();
    } catch (e) {
      // written with the first segment instead
      this.lastError = errorMessage(e);
    }
    if (this.chainsStarted > 1 || base === null) this.o.logger.info(`WAL shipping: a new chain ${this.chain.chain} starts (${why})${base ? "" : "; point-in-time restore reaches into it from its first checkpoint, asked for now"}`);
    if (!base) this.o.requestCheckpoint(`a new log chain starts (${why})`);
    this.remote?.start(this.chain.chain);
  }

  /** The chain's record, before anything of it: its folder, fsynced into the log folder. */
  private writeChainRecord(): void {
    mkdirSync(join(this.o.storeDir, LOG_DIR), { recursive: true, mode: DIR_MODE });
    mkdirSync(this.chainDir(this.chain.chain), { recursive: true, mode: DIR_MODE });
    fsyncDir(join(this.o.storeDir, LOG_DIR));
    writeFileAtomic(join(this.o.storeDir, chainPath(this.chain.chain)), encodeChain(this.chain));
    this.chainWritten = true;
  }

  private take(own: 0 | 1): void {
    const now = this.clock.now();
    const txns = this.capture.look(own, now);
    if (this.capture.brokenBecause) {
      const why = this.capture.brokenBecause;
      this.o.logger.warn(`WAL shipping cannot follow the WAL: ${why}; the log has a gap from here, a new chain starts`);
      this.breakChain(why);
      return;
    }
    for (const t of txns) {
      const last = this.queue.at(-1)?.commitMs ?? this.shippedUntil;
      this.queue.push({ ...t, commitMs: Math.max(t.commitMs, last), txn: ++this.lastTxn });
      this.queuedBytes += t.bytes;
    }
    if (this.queuedBytes > MAX_QUEUED_BYTES) {
      this.o.logger.error(`WAL shipping: ${this.queue.length} transactions could not be written to ${this.o.storeDir} (${this.lastError ?? "no answer"}); the log has a gap from here, a new chain starts`);
      this.breakChain("the store could not be written for too long");
    }
  }

  /** The chain ends here (what is queued is dropped): a new one starts from the current state. */
  private breakChain(why: string): void {
    this.queue = [];
    this.queuedBytes = 0;
    this.capture = WalCapture.start(this.o.live).capture;
    for (const w of this.waiters.splice(0)) this.failWaiter(w, new CairnError("E_STORAGE", `the write was committed but could not be shipped: ${why}`));
    this.newChain(null, why);
  }

  /** After each of the node's commits (same thread): take its transaction; in synchronous mode ship at once. */
  noteCommit(): void {
    if (this.stopped) return;
    this.take(1);
    if (this.o.config.synchronous) this.kick();
  }

  /** Resolves once every transaction committed so far is in the store(s) (synchronous mode), or rejects after the timeout. */
  shipped(): Promise<void> {
    const txn = this.lastTxn;
    if (this.isShipped(txn)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w: Waiter = { txn, resolve, reject, timer: undefined };
      w.timer = this.clock.setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new CairnError("E_SHIPPING_TIMEOUT", `the write is committed on this node but was not shipped to the checkpoint store${this.remote ? "s" : ""} within ${this.o.config.synchronousTimeoutMs} ms; it is not acknowledged`));
      }, this.o.config.synchronousTimeoutMs);
      this.waiters.push(w);
    });
  }

  private isShipped(txn: number): boolean {
    return this.shippedTxn >= txn && (!this.remote || this.remote.shippedTxn(this.chain.chain) >= txn);
  }

  private failWaiter(w: Waiter, e: unknown): void {
    this.clock.clearTimeout(w.timer);
    w.reject(e);
  }

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.isShipped(w.txn)) {
        this.clock.clearTimeout(w.timer);
        w.resolve();
      } else keep.push(w);
    }
    this.waiters = keep;
  }

  /**
   * Before the node does something that would take frames out of the WAL (a write that starts it
   * over, a TRUNCATE fold): what is queued must be in the store first. Undefined if nothing is.
   */
  beforeWalReset(): Promise<void> | undefined {
    if (this.stopped) return undefined;
    this.take(0);
    return (async () => {
      await this.flush();
      let h;
      try {
        h = readWalIndexHeader(this.o.live.shmFd);
      } catch {
        return;
      }
      const key = this.restartKey(h.salt1);
      if (this.queue.length > 0 || this.restartNoted === key) return;
      // everything is shipped: the next WAL generation (SQLite adds 1 to salt-1) continues the chain
      await this.writeStateAsync({ nextSalt1: (h.salt1 + 1) >>> 0 });
      this.restartNoted = key;
    })();
  }

  private stateOf(extra: Partial<SavedState>): string {
    return JSON.stringify({ chain: this.chain.chain, txn: this.shippedTxn, prev: this.prevDigest, until: this.shippedUntil, ...extra } satisfies SavedState);
  }

  private writeState(extra: Partial<SavedState>): void {
    try {
      writeFileAtomic(join(this.o.storagePath, LOG_STATE_FILE), this.stateOf(extra));
    } catch (e) {
      this.o.logger.warn(`WAL shipping: where the chain stands was not recorded (${errorMessage(e)})`);
    }
  }

  private async writeStateAsync(extra: Partial<SavedState>): Promise<void> {
    try {
      await writeFileAtomicAsync(join(this.o.storagePath, LOG_STATE_FILE), this.stateOf(extra));
    } catch (e) {
      this.o.logger.warn(`WAL shipping: where the chain stands was not recorded (${errorMessage(e)})`);
    }
  }

  /**
   * Before each of the node's commits: a write into a WAL whose every frame is folded in starts
   * it over, so what is queued must be in the store first. Undefined when nothing need wait.
   */
  beforeWrite(): Promise<void> | undefined {
    if (this.stopped) return undefined;
    let h;
    try {
      h = readWalIndexHeader(this.o.live.shmFd);
    } catch {
      return undefined;
    }
    if (!(h.mxFrame > 0 && h.nBackfill >= h.mxFrame)) return undefined;
    if (this.queue.length === 0 && !this.shipping && this.restartNoted === this.restartKey(h.salt1)) return undefined;
    return this.beforeWalReset();
  }

  /** Which WAL generation's end was last recorded as the chain's (`nextSalt1`), for this chain and transaction. */
  private restartNoted = "";

  private restartKey(salt1: number): string {
    return `${this.chain.chain}:${this.shippedTxn}:${salt1}`;
  }

  /** Where the image a checkpoint pins now stands in the log (call right before the pin, same thread). */
  beforePin(): LogPosition {
    this.take(0);
    return { chain: this.chain.chain, txn: this.lastTxn, ms: this.clock.now() };
  }

  /** Write everything queued now; resolves when it is in the local store. */
  async flush(): Promise<void> {
    this.flushWaiting++;
    try {
      for (let i = 0; i < 1000 && (this.queue.length > 0 || this.shipping); i++) {
        if (this.shipping) await this.shipping;
        else this.kick();
        if (this.shipping) await this.shipping;
        if (this.queue.length > 0 && this.lastError && !this.shipping) throw new CairnError("E_IO", `WAL shipping into ${this.o.storeDir} failed: ${this.lastError}`);
      }
    } finally {
      this.flushWaiting--;
    }
  }

  private kick(): void {
    if (this.stopped && this.queue.length === 0) return;
    if (this.shipping) {
      this.again = true;
      return;
    }
    this.take(0);
    if (this.queue.length === 0) return;
    this.shipping = this.shipLoop().finally(() => {
      this.shipping = undefined;
    });
  }

  private async shipLoop(): Promise<void> {
    do {
      this.again = false;
      // what is queued now; in synchronous mode (or a flush) what comes meanwhile too, so the
      // next shipment starts at once: asynchronous shipping writes one segment a tick, not a
      // stream of small ones competing with the commits' fsyncs
      const upTo = this.lastTxn;
      while (this.queue.length > 0 && (this.o.config.synchronous || this.flushWaiting > 0 || this.queue[0]!.txn <= upTo)) {
        if (!(await this.shipOne())) return;
        this.take(0);
      }
    } while (this.again && this.queue.length > 0 && (this.o.config.synchronous || this.flushWaiting > 0));
  }

  /** Flushes waiting: shipping goes on until nothing is queued. */
  private flushWaiting = 0;

  /** Write one segment of what is queued; false if the store could not be written (retried at the next tick). */
  private async shipOne(): Promise<boolean> {
    const o = this.o;
    let n = 0;
    let bytes = 0;
    while (n < this.queue.length && (n === 0 || bytes + this.queue[n]!.bytes <= SEGMENT_TARGET_BYTES)) bytes += this.queue[n++]!.bytes;
    const batch = this.queue.slice(0, n);
    const all = n === this.queue.length;
    // every commit is taken as it happens (same thread): nothing else was committed up to now
    const until = all ? Math.max(this.clock.now(), batch.at(-1)!.commitMs) : batch.at(-1)!.commitMs;
    const chain = this.chain.chain;
    try {
      if (!this.chainWritten) this.writeChainRecord();
      const seg = encodeSegment(
        {
          chain,
          node_id: o.nodeId,
          first_txn: batch[0]!.txn,
          last_txn: batch.at(-1)!.txn,
          first_ms: batch[0]!.commitMs,
          until_ms: until,
          prev: this.prevDigest,
          page_size: batch[0]!.pages[0]?.data.byteLength ?? 4096,
          wal: batch.at(-1)!.wal,
        },
        o.compression,
        batch,
      );
      crashPoint("shipping:before-segment");
      await writeFileAtomicAsync(join(o.storeDir, seg.path), seg.data);
      crashPoint("shipping:segment-written");
      if (this.chain.chain !== chain) return true; // the chain was given up meanwhile
      this.queue.splice(0, n);
      this.queuedBytes -= bytes;
      this.shippedTxn = batch.at(-1)!.txn;
      this.prevDigest = seg.digest;
      this.shippedUntil = until;
      this.lastShippedAt = this.clock.now();
      this.segments++;
      this.lastError = null;
      this.remote?.enqueue(chain, seg.path, batch.at(-1)!.txn, batch[0]!.commitMs);
      this.settleWaiters();
      return true;
    } catch (e) {
      this.failures++;
      this.lastError = errorMessage(e);
      const now = this.clock.now();
      if (now - this.lastWarn > 60_000) {
        this.lastWarn = now;
        o.logger.warn(`WAL shipping into ${o.storeDir} failed: ${this.lastError}; retrying (${this.queue.length} transaction(s) waiting)`);
      }
      return false;
    }
  }

  /** Age of the oldest transaction not yet in the local store, in seconds (0: all shipped). */
  private localLagSeconds(now: number): number {
    return this.queue.length > 0 ? Math.max(0, now - this.queue[0]!.commitMs) / 1000 : 0;
  }

  private lastLagWarning = 0;

  /** Past remote_lag_warning_secs behind: a warning, at most one a minute. */
  private warnIfRemoteLags(): void {
    if (!this.remote) return;
    const now = this.clock.now();
    const r = this.remote.status(this.chain.chain, now, this.lastTxn);
    const lagMs = Math.max(r.lag_seconds, this.localLagSeconds(now)) * 1000;
    if (lagMs > this.o.config.remoteLagWarningMs && now - this.lastLagWarning >= 60_000) {
      this.lastLagWarning = now;
      this.o.logger.warn(`WAL shipping to ${r.url} is ${Math.round(lagMs / 1000)} s behind (${r.pending_txns} transaction(s) not there yet${r.last_error ? `; ${r.last_error}` : ""}): a lost host would lose them`);
    }
  }

  status(): ShippingStatus {
    const now = this.clock.now();
    const r0 = this.remote?.status(this.chain.chain, now, this.lastTxn);
    const localLag = this.localLagSeconds(now);
    const r = r0 && { ...r0, lag_seconds: Math.max(r0.lag_seconds, localLag) };
    return {
      enabled: true,
      synchronous: this.o.config.synchronous,
      chain: this.chain.chain,
      chain_base: this.chain.base,
      last_txn: this.lastTxn,
      last_shipped_txn: this.shippedTxn,
      last_shipped_at: this.lastShippedAt ? new Date(this.lastShippedAt).toISOString() : null,
      shipped_until: this.shippedUntil ? new Date(this.shippedUntil).toISOString() : null,
      pending_txns: this.queue.length,
      pending_bytes: this.queuedBytes,
      lag_seconds: localLag,
      segments_written: this.segments,
      failures: this.failures,
      last_error: this.lastError,
      chains_started: this.chainsStarted,
      last_chain_reason: this.chainReason,
      remote: r ?? null,
    };
  }

  /** Ship what is queued (to the remote too, for a moment) and stop. */
  async stop(): Promise<void> {
    this.stopTimer?.();
    try {
      await this.flush();
    } catch (e) {
      this.o.logger.warn(`WAL shipping: the last transactions were not shipped (${errorMessage(e)})`);
    }
    this.stopped = true;
    await this.remote?.stop();
    for (const w of this.waiters.splice(0)) this.failWaiter(w, new CairnError("E_SHUTTING_DOWN", "the node is shutting down"));
  }

  /** After the database is closed: record where the chain ends, for the next start. */
  saveState(): void {
    if (this.queue.length > 0) return;
    const mark = dbMarkOf(this.o.dbFile);
    if (!mark) return;
    writeFileAtomic(join(this.o.storagePath, LOG_STATE_FILE), this.stateOf({ mark }));
  }
}

/** Segments on their way to the remote store, in order, retried while it fails. */
class RemoteLog {
  private queue: { chain: string; path: string; txn: number; firstMs: number }[] = [];
  private shipped = new Map<string, number>();
  private running?: Promise<void>;
  private stopped = false;
  private failures = 0;
  private lastError: string | null = null;
  private retryTimer?: unknown;
  private chainsSent = new Set<string>();

  constructor(
    private readonly backend: ReadWriteBackend,
    private readonly storeDir: string,
    private readonly retryBackoffMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly onShipped: () => void,
  ) {}

  /** A chain is being written: send what of it the remote lacks (at a start that continues one). */
  start(chain: string): void {
    if (this.shipped.has(chain)) return;
    this.shipped.set(chain, 0);
    void (async () => {
      try {
        const there = new Set(await this.backend.random.list(`${LOG_DIR}/${chain}/`));
        const local = localSegments(this.storeDir, chain);
        let have = 0;
        for (const s of local) {
          if (there.has(s.path)) have = Math.max(have, s.lastTxn);
          else if (!this.queue.some((q) => q.path === s.path)) this.queue.unshift({ chain, path: s.path, txn: s.lastTxn, firstMs: s.firstMs });
        }
        if (there.has(chainPath(chain))) this.chainsSent.add(chain);
        this.shipped.set(chain, Math.max(this.shipped.get(chain) ?? 0, have));
        this.queue.sort((a, b) => (a.chain === b.chain ? a.txn - b.txn : 0));
        this.kick();
      } catch (e) {
        this.lastError = errorMessage(e);
      }
    })();
  }

  shippedTxn(chain: string): number {
    return this.shipped.get(chain) ?? 0;
  }

  enqueue(chain: string, path: string, txn: number, firstMs: number): void {
    this.queue.push({ chain, path, txn, firstMs });
    this.kick();
  }

  private kick(): void {
    if (this.running || this.stopped || this.retryTimer !== undefined) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  private async loop(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const q = this.queue[0]!;
      try {
        if (!this.chainsSent.has(q.chain)) {
          await this.backend.writes.putFile(chainPath(q.chain), join(this.storeDir, chainPath(q.chain)));
          this.chainsSent.add(q.chain);
        }
        await this.backend.writes.putFile(q.path, join(this.storeDir, q.path));
        this.queue.shift();
        this.shipped.set(q.chain, Math.max(this.shipped.get(q.chain) ?? 0, q.txn));
        this.lastError = null;
        this.onShipped();
      } catch (e) {
        if ((e as { code?: string }).code === "ENOENT") {
          // removed locally by retention before it was sent: nothing needs it
          this.queue.shift();
          continue;
        }
        this.failures++;
        const first = this.lastError === null;
        this.lastError = errorMessage(e);
        if (first) this.logger.warn(`WAL shipping to ${this.backend.location} failed: ${this.lastError}; retrying every ${this.retryBackoffMs} ms`);
        this.retryTimer = this.clock.setTimeout(() => {
          this.retryTimer = undefined;
          this.kick();
        }, this.retryBackoffMs);
        return;
      }
    }
  }

  status(chain: string, now: number, lastTxn: number): NonNullable<ShippingStatus["remote"]> {
    const pending = this.queue.filter((q) => q.chain === chain);
    const shipped = this.shippedTxn(chain);
    return {
      url: this.backend.location,
      last_shipped_txn: shipped,
      pending_segments: this.queue.length,
      pending_txns: Math.max(0, lastTxn - shipped),
      lag_seconds: pending.length > 0 ? Math.max(0, now - pending[0]!.firstMs) / 1000 : 0,
      failures: this.failures,
      last_error: this.lastError,
    };
  }

  async stop(): Promise<void> {
    // a moment for what is in flight; the next start sends the rest
    const deadline = this.clock.now() + 5000;
    while (this.queue.length > 0 && this.running && this.clock.now() < deadline) await this.running;
    this.stopped = true;
    if (this.retryTimer !== undefined) this.clock.clearTimeout(this.retryTimer);
  }
}

/** The segments of `chain` in the local store `storeDir`, in order of their last transaction. */
function localSegments(storeDir: string, chain: string): SegmentRef[] {
  let names: string[];
  try {
    names = readdirSync(join(storeDir, LOG_DIR, chain));
  } catch {
    return [];
  }
  return names
    .map((n) => segmentOf(`${LOG_DIR}/${chain}/${n}`))
    .filter((s): s is SegmentRef => !!s)
    .sort((a, b) => a.lastTxn - b.lastTxn);
}
