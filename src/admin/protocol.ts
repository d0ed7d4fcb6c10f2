/**
 * The admin socket's protocol: HTTP/1.1 over the Unix socket at admin_socket_path, JSON bodies.
 * Shared by the server (admin/server.ts) and the client (admin/client.ts), and usable with
 * `curl --unix-socket`:
 *
 *   GET  /v1/health                  → HealthReply
 *   GET  /v1/log-level               → LogLevelReply
 *   PUT  /v1/log-level  {"level"}    → LogLevelReply
 *   POST /v1/checkpoints {"path"?, "delay_secs"?}   → 202 CheckpointRun; 409 if one runs
 *   GET  /v1/checkpoints/status      → CheckpointStatus
 *   POST /v1/checkpoints/cancel      → {"cancelled": CheckpointRun | null}
 *
 * Errors: a non-2xx status with {"error": {"code", "message"}}.
 */
import type { LogLevel } from "../log.ts";

/** Request bodies above this are refused (413) before they are read. */
export const ADMIN_MAX_BODY = 64 * 1024;

export const ADMIN_ROUTES = {
  health: "/v1/health",
  logLevel: "/v1/log-level",
} as const;

export interface HealthReply {
  ok: true;
  node_id: string;
  pid: number;
  version: string;
}

export interface LogLevelRequest {
  level: LogLevel;
}

export interface LogLevelReply {
  level: LogLevel;
  previous?: LogLevel;
}

export interface AdminErrorReply {
  error: { code: string; message: string };
}

/** Checkpoint operations (see checkpoint/manager.ts for the shapes of runs and status). */
export const CHECKPOINT_ROUTES = {
  create: "/v1/checkpoints",
  status: "/v1/checkpoints/status",
  cancel: "/v1/checkpoints/cancel",
} as const;

export interface CheckpointCreateRequest {
  path?: string;
  delay_secs?: number;
}
