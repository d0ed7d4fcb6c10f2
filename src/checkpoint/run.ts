/** A checkpoint run as the node reports it (checkpoint status, /v1/status, the admin socket). */
import type { ShippingStatus } from "./shipper.ts";
import type { ExportResult } from "../store/archive/export.ts";
import type { PushResult } from "../store/copy.ts";
import type { TrackingStatus } from "../engine/change-tracker.ts";
import type { CheckpointResult } from "./create.ts";
import type { RemoteStatus } from "./replicator.ts";

export type CheckpointOutcome = "success" | "failed" | "cancelled";

export interface CheckpointRun {
  /** Attempt number within this node process. */
  run: number;
  trigger: "manual" | "periodic";
  dir: string;
  /**
   * waiting: for its delay; running: reading the database; copying: to an s3:// --path, and
   * exporting: to an archive --path (both taken into the local store first); retaining:
   * complete, retention running; done
   */
  state: "waiting" | "running" | "copying" | "exporting" | "retaining" | "done";
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
  /**
   * What the next checkpoint into the configured store will read: only the pages changed since
   * `since_checkpoint` (`lost` null), or the whole database (`lost` says why).
   */
  change_tracking: TrackingStatus | null;
  /** WAL shipping (checkpoint_config.wal_shipping), if on: lag, the chain, failures. */
  wal_shipping: ShippingStatus | null;
}

export const BUSY_MESSAGE = "Backup already in progress";
