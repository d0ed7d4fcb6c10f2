/**
 * Client side of the admin socket, used by `cairn local-admin`. Turns connection failures
 * into messages an operator can act on.
 */
import { CairnError, errorMessage, isErrorCode } from "../errors.ts";
import type { AdminErrorReply } from "./protocol.ts";

/** The HTTP admin API (admin_api) instead of the socket: its URL, a token, and optionally the CA that signed its certificate. */
export interface AdminHttpTarget {
  url: string;
  token: string;
  /** PEM of the certificate authority to trust (a self-signed certificate itself). */
  ca?: string;
}

export class AdminClient {
  /** What error messages call the node's end: the socket path or the URL. */
  readonly where: string;

  constructor(
    readonly socketPath: string | undefined,
    private readonly http?: AdminHttpTarget,
  ) {
    this.where = http ? http.url : socketPath!;
  }

  async request<T>(method: string, path: string, body?: unknown, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T> {
    let res: Response;
    const headers: Record<string, string> = body === undefined ? {} : { "content-type": "application/json" };
    if (this.http) headers.authorization = `Bearer ${this.http.token}`;
    try {
      res = await fetch(this.http ? `${this.http.url.replace(/\/+$/, "")}${path}` : `http://localhost${path}`, {
        ...(this.http ? (this.http.ca ? { tls: { ca: this.http.ca } } : {}) : { unix: this.socketPath }),
        method,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers,
        signal: opts.signal ?? (opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined),
      } as RequestInit);
    } catch (e) {
      throw connectionError(this.where, e);
    }
    const text = await res.text();
    if (res.status === 401 && this.http) {
      throw new CairnError("E_UNAUTHORIZED", `the admin API at ${this.where} refused the token`, { hint: "check --token-file against the node's admin_api.token_file (and send the node SIGHUP after editing it)" });
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      throw new CairnError("E_ADMIN", `the admin API at ${this.where} answered with something other than JSON`);
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
  if (/certificate|self.signed|UNABLE_TO_VERIFY|DEPTH_ZERO|ERR_TLS|SSL/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_UNREACHABLE", `the TLS certificate of ${socketPath} is not trusted: ${msg}`, {
      hint: "give the certificate (or the authority that signed it) with --ca-file",
      cause: e,
    });
  }
  if (/timeout|abort/i.test(`${code} ${msg}`)) {
    return new CairnError("E_ADMIN_TIMEOUT", `the node did not answer on ${socketPath} in time`, { cause: e });
  }
  return new CairnError("E_ADMIN_UNREACHABLE", `cannot reach the node on ${socketPath}: ${msg}`, { cause: e });
}
