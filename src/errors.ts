/**
 * Typed errors of the domain. Every failure an operator can see carries a stable `code`,
 * a one-line message, optionally a hint ("Try: ...") and the exit status the command layer
 * should use (1 = the operation failed, 2 = bad usage or configuration).
 */
export type ExitStatus = 1 | 2;

export class CairnError extends Error {
  readonly code: string;
  readonly hint?: string;
  readonly exitStatus: ExitStatus;

  constructor(
    code: string,
    message: string,
    opts: { hint?: string; cause?: unknown; exitStatus?: ExitStatus } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "CairnError";
    this.code = code;
    this.hint = opts.hint;
    this.exitStatus = opts.exitStatus ?? 1;
  }
}

/** Bad configuration or usage: exit status 2. */
export class ConfigError extends CairnError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super("E_CONFIG", message, { ...opts, exitStatus: 2 });
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
