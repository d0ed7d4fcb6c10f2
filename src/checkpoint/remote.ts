/**
 * Copying checkpoints from the local store to a remote one (an S3 prefix), and keeping the
 * remote's retention.
 *
 * A push uploads only the stored files the remote lacks (packs are immutable and named by a
 * random id, so a file of the same name and size is the same file), a few at a time, each
 * pack before its index and every pack before the manifest that needs it: a checkpoint
 * becomes visible remotely only when everything it needs is there. The remote store records
 * the node that owns it, like a local one; another node's store is refused.
 *
 * RemoteReplicator runs pushes in the node's background after each local checkpoint: one at
 * a time, retried after a back-off when they fail, never in the way of local checkpoints.
 */
import { join } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FileLock } from "../engine/lock.ts";
import { formatBytes, formatDuration } from "../util/format.ts";
import { encodeStoreInfo, indexPath, type Manifest, manifestPath, MAX_MANIFEST_BYTES, packFileOf, packPath, sameStore, STORE_FILE, storeInfoForCopy } from "./format.ts";
import { STORE_READERS_LOCK_FILE } from "./local-store.ts";
import type { Clock } from "../util/clock.ts";
import { DirSource } from "./objects.ts";
import { StoreReader } from "./reader.ts";
import type { S3Source } from "./s3.ts";

/** Files uploaded at once. */
const UPLOAD_PARALLEL = 4;

export interface PushResult {
  /** Checkpoints copied by this push. */
  pushed: number[];
  uploaded_files: number;
  uploaded_bytes: number;
  /** Files the remote already held. */
  skipped_files: number;
  /** Checkpoints removed from the remote by its retention. */
  removed: number[];
  /** Checkpoints on the remote afterwards. */
  remote_checkpoints: number[];
  duration_ms: number;
}

export interface PushOptions {
  localDir: string;
  remote: S3Source;
  /** Which local checkpoints to copy (default: every one newer than the remote's newest). */
  ids?: number[];
  /** Keep this many on the remote (0 keeps all). */
  maxRemote: number;
  logger: Logger;
  signal?: AbortSignal;
  onProgress?: (uploadedBytes: number) => void;
}

/** Copy checkpoints of the local store in `localDir` to `remote`, then apply its retention. */
export async function pushCheckpoints(o: PushOptions): Promise<PushResult> {
  const t0 = performance.now();
  const local = new StoreReader(new DirSource(o.localDir));
  const info = await local.info();
  const remote = o.remote;
  const check = () => {
    if (o.signal?.aborted) throw new CairnError("E_CANCELLED", "push cancelled");
  };

  // the remote's owner, or a new remote store (read like any store)
  const remoteStore = new StoreReader(remote);
  if (await remoteStore.exists()) {
    const theirs = await remoteStore.info();
    if (theirs.node_id !== info.node_id) {
      throw new CairnError("E_FOREIGN_STORE", `${remote.location} holds the checkpoints of node ${theirs.node_id}, not of this node (${info.node_id}); refusing to write into it`, {
        hint: "give each node its own remote prefix",
      });
    }
    if (!sameStore(theirs, info)) {
      throw new CairnError("E_FOREIGN_STORE", `${remote.location} was made from another local store of node ${info.node_id}; refusing to mix them`, {
        hint: "give the new store its own remote prefix",
      });
    }
    // a remote made by an older cairn holds the quick-hash seed itself: keep only its digest there
    if (theirs.quick_hash_seed !== undefined) await remote.put(STORE_FILE, encodeStoreInfo(storeInfoForCopy(info)));
  } else await remote.put(STORE_FILE, encodeStoreInfo(storeInfoForCopy(info)));

  // hold the local readers lock: retention and collection wait until the files are uploaded
  const hold = FileLock.shared(join(o.localDir, STORE_READERS_LOCK_FILE));
  if (!hold) throw new CairnError("E_STORE_BUSY", `the node is collecting garbage in ${o.localDir}`, { hint: "the push is retried later" });
  const result: PushResult = { pushed: [], uploaded_files: 0, uploaded_bytes: 0, skipped_files: 0, removed: [], remote_checkpoints: [], duration_ms: 0 };
  try {
    const remoteIds = await remoteStore.manifestIds();
    const newestRemote = remoteIds.at(-1) ?? 0;
    const localIds = await local.manifestIds();
    const ids = (o.ids ?? localIds.filter((id) => id > newestRemote)).filter((id) => !remoteIds.includes(id));
    if (ids.length > 0) {
      const have = await remote.listSizes("packs/");
      for (const id of ids) {
        check();
        const m = await local.manifest(id);
        // every pack and index the checkpoint needs, pack first; only what the remote lacks
        const files: string[] = [];
        for (const p of m.packs) files.push(packPath(p), indexPath(p));
        const todo: string[] = [];
        for (const f of files) {
          const size = (await local.source.size(f)) ?? -1;
          if (size < 0) throw new CairnError("E_STORE_MISSING", `${o.localDir}/${f} is missing; checkpoint ${id} cannot be pushed`);
          if (have.get(f) === size) result.skipped_files++;
          else todo.push(f);
        }
        let next = 0;
        await Promise.all(
          Array.from({ length: Math.min(UPLOAD_PARALLEL, todo.length) }, async () => {
            while (next < todo.length) {
              check();
              const f = todo[next++]!;
              const bytes = await remote.putFile(f, join(o.localDir, f));
              have.set(f, bytes);
              result.uploaded_files++;
              result.uploaded_bytes += bytes;
              o.onProgress?.(result.uploaded_bytes);
            }
          }),
        );
        check();
        // the manifest last: only now does the checkpoint exist remotely
        const manifest = await local.source.get(manifestPath(id), MAX_MANIFEST_BYTES);
        await remote.put(manifestPath(id), manifest);
        result.uploaded_files++;
        result.uploaded_bytes += manifest.length;
        result.pushed.push(id);
      }
    }
  } finally {
    hold.release();
  }
  const retained = await applyRemoteRetention(remote, o.maxRemote, o.logger);
  result.removed = retained.removed;
  result.remote_checkpoints = retained.kept;
  result.duration_ms = Math.round(performance.now() - t0);
  return result;
}

/**
 * Keep the newest `keep` checkpoints on the remote (0 keeps all): their manifests go first,
 * then every pack no remaining manifest needs. A pack uploaded by a push that failed before
 * its manifest is needed by none and goes too (the next push uploads it again if needed).
 */
export async function applyRemoteRetention(remote: S3Source, keep: number, logger: Logger): Promise<{ removed: number[]; kept: number[] }> {
  const store = new StoreReader(remote);
  const ids = await store.manifestIds();
  const removed = keep > 0 ? ids.slice(0, Math.max(0, ids.length - keep)) : [];
  for (const id of removed) await remote.delete(manifestPath(id));
  const kept = ids.filter((id) => !removed.includes(id));
  if (removed.length === 0) return { removed, kept };
  const needed = new Set<string>();
  for (const id of kept) {
    let m: Manifest;
    try {
      m = await store.manifest(id);
    } catch (e) {
      // without knowing what a checkpoint needs, nothing may be collected
      logger.warn(`remote retention: cannot read checkpoint ${id} (${errorMessage(e)}); not collecting packs`);
      return { removed, kept };
    }
    for (const p of m.packs) needed.add(p);
  }
  for (const f of await remote.list("packs/")) {
    const pf = packFileOf(f);
    if (pf && !needed.has(pf.packId)) await remote.delete(f);
  }
  return { removed, kept };
}

// ---- the node's background copier ------------------------------------------------------------

export interface RemoteStatus {
  url: string;
  state: "idle" | "pushing" | "waiting-retry";
  /** The newest checkpoint known to be on the remote. */
  last_pushed_id: number | null;
  last_success: string | null;
  last_attempt: string | null;
  last_error: string | null;
  last_uploaded_bytes: number;
  uploaded_bytes_total: number;
  successes: number;
  failures: number;
  consecutive_failures: number;
  /** Requests that failed or timed out, each retried (a push fails only once its retries are spent). */
  request_failures: number;
  next_retry: string | null;
  remote_checkpoints: number[];
}

export interface RemoteReplicatorDeps {
  localDir: string;
  remote: S3Source;
  maxRemote: number;
  retryBackoffMs: number;
  logger: Logger;
  clock: Clock;
}

export class RemoteReplicator {
  private running?: Promise<void>;
  private again = false;
  private retryTimer?: unknown;
  private stopped = false;
  private controller = new AbortController();
  private s: RemoteStatus;

  /** When a failed request was last logged: at most one warning a minute while requests fail. */
  private lastAttemptWarning = 0;

  constructor(private readonly deps: RemoteReplicatorDeps) {
    deps.remote.onAttemptFailed = (what, err) => {
      this.s.request_failures++;
      this.s.last_error = `${what}: ${errorMessage(err)} (retrying)`;
      const now = deps.clock.now();
      if (now - this.lastAttemptWarning >= 60_000) {
        this.lastAttemptWarning = now;
        deps.logger.warn(`${what} failed: ${errorMessage(err)}; retrying`);
      }
    };
    this.s = {
      url: deps.remote.location,
      state: "idle",
      last_pushed_id: null,
      last_success: null,
      last_attempt: null,
      last_error: null,
      last_uploaded_bytes: 0,
      uploaded_bytes_total: 0,
      successes: 0,
      failures: 0,
      consecutive_failures: 0,
      request_failures: 0,
      next_retry: null,
      remote_checkpoints: [],
    };
  }

  status(): RemoteStatus {
    return { ...this.s, remote_checkpoints: [...this.s.remote_checkpoints] };
  }

  /** A local checkpoint was made (or the node started): copy what the remote lacks, soon. */
  notify(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.retryTimer !== undefined) {
      this.deps.clock.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.s.next_retry = null;
    }
    this.running = this.pushLoop().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when no push is running (for shutdown and tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer !== undefined) this.deps.clock.clearTimeout(this.retryTimer);
    this.controller.abort();
    await this.running?.catch(() => {});
  }

  private async pushLoop(): Promise<void> {
    const { logger } = this.deps;
    do {
      this.again = false;
      this.s.state = "pushing";
      this.s.last_attempt = new Date(this.deps.clock.now()).toISOString();
      try {
        const r = await pushCheckpoints({
          localDir: this.deps.localDir,
          remote: this.deps.remote,
          maxRemote: this.deps.maxRemote,
          logger,
          signal: this.controller.signal,
        });
        this.s.successes++;
        this.s.consecutive_failures = 0;
        this.s.last_error = null;
        this.s.last_success = new Date(this.deps.clock.now()).toISOString();
        this.s.last_uploaded_bytes = r.uploaded_bytes;
        this.s.uploaded_bytes_total += r.uploaded_bytes;
        this.s.remote_checkpoints = r.remote_checkpoints;
        this.s.last_pushed_id = r.remote_checkpoints.at(-1) ?? null;
        this.s.state = "idle";
        if (r.pushed.length > 0) {
          logger.info(
            `copied checkpoint(s) ${r.pushed.join(", ")} to ${this.deps.remote.location}: ${r.uploaded_files} file(s), ${formatBytes(r.uploaded_bytes)} uploaded, ${r.skipped_files} already there, in ${(r.duration_ms / 1000).toFixed(1)} s` +
              (r.removed.length > 0 ? `; remote retention removed ${r.removed.join(", ")}` : ""),
          );
        }
      } catch (e) {
        if (this.stopped) {
          this.s.state = "idle";
          return;
        }
        this.s.failures++;
        this.s.consecutive_failures++;
        this.s.last_error = errorMessage(e);
        this.s.state = "waiting-retry";
        const at = this.deps.clock.now() + this.deps.retryBackoffMs;
        this.s.next_retry = new Date(at).toISOString();
        logger.warn(`copying checkpoints to ${this.deps.remote.location} failed: ${errorMessage(e)}; retrying in ${formatDuration(this.deps.retryBackoffMs)}`);
        this.retryTimer = this.deps.clock.setTimeout(() => {
          this.retryTimer = undefined;
          this.s.next_retry = null;
          this.notify();
        }, this.deps.retryBackoffMs);
        return;
      }
    } while (this.again && !this.stopped);
  }
}
