/**
 * Client side of the admin socket, used by `cairn local-admin`. Turns connection failures
 * into messages an operator can act on.
 */
import { CairnError, errorMessage, isErrorCode } from "../errors.ts";
import type { AdminErrorReply } from "./protocol.ts";

export class AdminClient {
  constructor(readonly socketPath: string) {}

  async request<T>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`http://localhost${path}`, {
        unix: this.socketPath,
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: body === undefined ? undefined : { "content-type": "application/json" },
        signal: opts.signal ?? (opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined),
      } as RequestInit);
    } catch (e) {
      throw connectionError(this.socketPath, e);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new CairnError("E_ADMIN", `the admin socket ${this.socketPath} answered with something other than JSON`);
    }
    if (!res.ok) {
      const err = (parsed as AdminErrorReply | undefined)?.error;
      throw new CairnError(isErrorCode(err?.code) ? err.code : "E_ADMIN", err?.message ?? `admin request failed with HTTP ${res.status}`);
    }
    return parsed as T;
  }
}

function connectionError(socketPath: string, e: unknown): CairnError {
  const msg = errorMessage(e);
  const code = (e as { code?: string })?.code ?? "";
  if (/ENOENT|FailedToOpenSocket|no such file/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_UNREACHABLE", `cannot reach the node: no admin socket at ${socketPath}`, {
      hint: "is the node running, and is this its admin_socket_path?",
      cause: e,
    });
  }
  if (/EACCES|permission/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_UNREACHABLE", `permission denied on ${socketPath}`, {
      hint: "run the command as the node's user (sudo -u cairn ...)",
      cause: e,
    });
  }
  if (/ECONNREFUSED|ConnectionRefused/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_UNREACHABLE", `no node is listening on ${socketPath} (a stale socket?)`, {
      hint: "start the node",
      cause: e,
    });
  }
  if (/timeout|abort/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_TIMEOUT", `the node did not answer on ${socketPath} in time`, { cause: e });
  }
  return new CairnError("E_ADMIN_UNREACHABLE", `cannot reach the node on ${socketPath}: ${msg}`, { cause: e });
}
