/**
 * Typed errors of the domain: one closed set of codes. Each code carries the exit status the
 * command layer uses (1 = the operation failed, 2 = bad usage or configuration) and the HTTP
 * status the REST API and the admin socket answer with, so that no layer keeps its own table.
 * Every failure an operator can see has one of these codes, a one-line message and optionally
 * a hint ("Try: ..."). Worker threads send the code and hint back with the message, so an
 * error keeps its meaning across the thread boundary.
 */
export type ExitStatus = 1 | 2;

/** code → [exit status, HTTP status, what it means] */
export const ERROR_CODES = {
  // usage and configuration
  E_CONFIG: [2, 400, "the configuration is invalid"],
  E_USAGE: [2, 400, "the command line is invalid"],
  // requests (REST API, admin socket)
  E_BAD_REQUEST: [1, 400, "the request is malformed"],
  E_BAD_ID: [1, 400, "the blob id is not valid"],
  E_NOT_FOUND: [1, 404, "what was asked for does not exist"],
  E_UNKNOWN_REQUEST: [1, 404, "the admin socket has no such request"],
  E_METHOD: [1, 405, "the method is not allowed on this route"],
  E_UNAUTHORIZED: [1, 401, "the request has no valid token"],
  E_FORBIDDEN: [1, 403, "the token does not allow this request"],
  E_TOO_LARGE: [1, 413, "the request body is over the limit"],
  E_OVERLOADED: [1, 503, "too many request bodies are in flight"],
  E_SHUTTING_DOWN: [1, 503, "the node is shutting down"],
  // the node's own database
  E_DB_OPEN: [1, 500, "the database cannot be opened"],
  E_DB_SCHEMA: [1, 500, "the database is not one this cairn can use"],
  E_DB_FILES_LOST: [1, 503, "the database's files were removed or replaced under the node"],
  E_STORAGE: [1, 500, "SQLite failed"],
  E_BLOB_CORRUPT: [1, 500, "a stored blob does not match its digest"],
  E_DISK_FULL: [1, 507, "no space left on the device"],
  E_LOCKED: [1, 409, "a node or a restore holds the storage folder"],
  E_LISTEN: [1, 500, "the REST API cannot listen on its address"],
  E_ADMIN_SOCKET: [1, 500, "the admin socket cannot be served"],
  // checkpoint stores
  E_BUSY: [1, 409, "another operation holds what this one needs"],
  E_NOT_A_STORE: [1, 400, "the location is not a checkpoint store"],
  E_STORE_NOT_EMPTY: [1, 409, "the folder is neither empty nor a checkpoint store"],
  E_FOREIGN_STORE: [1, 409, "the store belongs to another node or another store"],
  E_STORE_FORMAT: [1, 500, "the store was written by a newer cairn"],
  E_STORE_DAMAGED: [1, 500, "a stored file is damaged"],
  E_STORE_MISSING: [1, 500, "a stored file is missing"],
  E_UNSAFE_PATH: [1, 409, "a path another user could have planted was refused"],
  E_IO: [1, 500, "a file could not be read or written"],
  E_REMOTE_UNAVAILABLE: [1, 502, "the remote store did not answer"],
  E_REMOTE_DENIED: [1, 502, "the remote store refused the request"],
  E_KEY_FILE: [1, 400, "a key file cannot be used"],
  E_KEY_NEEDED: [1, 401, "the store is encrypted and no key was given"],
  E_KEY_WRONG: [1, 403, "the key does not open the store"],
  // checkpoints
  E_SNAPSHOT: [1, 500, "a consistent view of the database could not be taken"],
  E_CHECKPOINT: [1, 500, "the checkpoint failed"],
  E_CANCELLED: [1, 409, "the operation was cancelled"],
  E_TIMEOUT: [1, 504, "the operation took longer than allowed"],
  E_SHIPPING_TIMEOUT: [1, 503, "the write is committed but was not shipped to the checkpoint store in time"],
  // restores
  E_EXISTS: [1, 409, "the target already holds a database"],
  E_OTHER_NODE: [1, 409, "the target holds another node's database"],
  E_RESTORE_CHECK: [1, 500, "the restored database fails SQLite's check"],
  E_RESTORE_SWAP: [1, 500, "the restored database could not be put in place"],
  E_INTERRUPTED: [1, 500, "the operation was interrupted"],
  // the admin client
  E_ADMIN: [1, 502, "the admin socket answered something unexpected"],
  E_ADMIN_UNREACHABLE: [1, 502, "the node cannot be reached"],
  E_ADMIN_TIMEOUT: [1, 504, "the node did not answer in time"],
  // anything else
  E_WORKER: [1, 500, "a worker thread failed"],
  E_INTERNAL: [1, 500, "an internal error"],
} as const satisfies Record<string, readonly [ExitStatus, number, string]>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(s: unknown): s is ErrorCode {
  return typeof s === "string" && Object.hasOwn(ERROR_CODES, s);
}

export class CairnError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly exitStatus: ExitStatus;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "CairnError";
    this.code = code;
    this.hint = opts.hint;
    this.exitStatus = ERROR_CODES[code][0];
  }

  /** The HTTP status this error answers with. */
  get httpStatus(): number {
    return ERROR_CODES[this.code][1];
  }
}

/** Bad configuration: exit status 2. */
export class ConfigError extends CairnError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super("E_CONFIG", message, opts);
    this.name = "ConfigError";
  }
}

export function isCairnError(e: unknown): e is CairnError {
  return e instanceof CairnError;
}

/** The message of any thrown value, for logs and wrapped errors. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

/** errno-style code of a Node/Bun system error, if any. */
export function sysCode(e: unknown): string | undefined {
  if (e && typeof e === "object" && "code" in e && typeof (e as { code: unknown }).code === "string") {
    return (e as { code: string }).code;
  }
  return undefined;
}

/** True for "no space left on device" however it surfaced (system error, SQLite, a worker). */
export function isDiskFull(e: unknown): boolean {
  return sysCode(e) === "ENOSPC" || /ENOSPC|no space left on device|database or disk is full/i.test(errorMessage(e));
}

/** An error as it crosses a thread boundary (plain data). */
export interface SerializedError {
  message: string;
  code?: string;
  hint?: string;
}

export function serializeError(e: unknown): SerializedError {
  if (e instanceof CairnError) return { message: e.message, code: e.code, hint: e.hint };
  return { message: errorMessage(e), code: sysCode(e) };
}

/**
 * The error a worker sent, rebuilt on this side with its code and hint. A system error's code
 * (ENOSPC, ...) is kept in the message so isDiskFull still sees it; anything without a code of
 * ours becomes `fallback`.
 */
export function deserializeError(s: SerializedError, fallback: ErrorCode = "E_INTERNAL"): CairnError {
  if (isErrorCode(s.code)) return new CairnError(s.code, s.message, { hint: s.hint });
  const msg = s.code && !s.message.includes(s.code) ? `${s.code}: ${s.message}` : s.message;
  return new CairnError(fallback, msg, { hint: s.hint });
}
