/**
 * The node's background copier: after each local checkpoint (and at start) it copies what the
 * remote store lacks (store/copy.ts), one push at a time, retried after a back-off when it
 * fails, never in the way of local checkpoints. Its status is what `checkpoint status`,
 * /v1/status and /metrics show of the remote.
 */
import type { RetentionPolicy } from "../store/retention.ts";
import { errorMessage } from "../errors.ts";
import type { KeyFile } from "../store/crypto.ts";
import type { Logger } from "../log.ts";
import { pushCheckpoints } from "../store/copy.ts";
import type { ReadWriteBackend } from "../store/backend.ts";
import type { Clock } from "../util/clock.ts";
import { formatBytes, formatDuration } from "../util/display.ts";

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
  remote: ReadWriteBackend;
  remoteRetention: RetentionPolicy;
  retryBackoffMs: number;
  logger: Logger;
  clock: Clock;
  /** An encrypted local store's key file. */
  keyFile?: KeyFile;
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
          remoteRetention: this.deps.remoteRetention,
          logger,
          signal: this.controller.signal,
          keyFile: this.deps.keyFile,
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
