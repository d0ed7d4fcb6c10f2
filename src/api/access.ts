/**
 * Who may do what on the data API (rest_api): every request needs a token whose scopes cover
 * it (read for GET, HEAD, the listing and /v1/status; write for PUT; delete for DELETE; metrics
 * for /metrics), or the anonymous access the config allows. No token or an unknown one is a
 * 401 with `WWW-Authenticate: Bearer`; a known token without the scope is a 403. Decided from
 * the request line and headers alone, before any of the body is read.
 */
import type { Metrics } from "../util/metrics.ts";
import { FailedAuthLog, type TokenSet } from "./auth.ts";
import { errorReply } from "./http.ts";

export const SCOPES = ["read", "write", "delete", "metrics"] as const;
export type Scope = (typeof SCOPES)[number];

/** What a request without a token may do: nothing, or read (blobs, the listing, status, metrics). */
export type Anonymous = "none" | "read";

const ANONYMOUS_READ: ReadonlySet<string> = new Set<Scope>(["read", "metrics"]);

/** The scope a request needs; undefined for a route none covers (any valid token may be told 404 or 405). */
export function scopeFor(method: string, route: string): Scope | undefined {
  if (route === "metrics") return "metrics";
  if (route === "status") return "read";
  if (route === "blob" || route === "blob_list") {
    if (method === "GET" || method === "HEAD") return "read";
    if (method === "PUT") return "write";
    if (method === "DELETE") return "delete";
  }
  return undefined;
}

/** A refused request's body is never read: the connection is closed rather than parse it as the next request. */
function closeIfBody(req: Request): Record<string, string> {
  const declared = req.headers.get("content-length");
  return (declared !== null && declared !== "0") || req.headers.has("transfer-encoding") ? { connection: "close" } : {};
}

export const AUTH_FAILURES_METRIC = "cairn_http_auth_failures_total";

export function registerAccessMetrics(metrics: Metrics): void {
  metrics.counter(AUTH_FAILURES_METRIC, "REST API requests refused for want of a valid token (no_token, unknown_token) or of its scope (scope).");
}

export class RestAccess {
  private readonly refused: FailedAuthLog;

  constructor(
    /** The current tokens (SIGHUP may replace them) and anonymous access. */
    private readonly current: () => { tokens?: TokenSet; anonymous: Anonymous },
    private readonly metrics: Metrics,
    warn: (msg: string) => void,
  ) {
    this.refused = new FailedAuthLog(warn, "REST API");
  }

  /** undefined if the request may go on, else the refusal to answer with. */
  check(req: Request, route: string, peer: string | undefined): Response | undefined {
    const { tokens, anonymous } = this.current();
    const header = req.headers.get("authorization");
    const need = scopeFor(req.method, route);
    let scopes: ReadonlySet<string> | undefined;
    if (header === null) {
      // anonymous read covers reads only: anything else without a token asks for one (401)
      if (anonymous === "read" && (need === undefined || ANONYMOUS_READ.has(need))) scopes = ANONYMOUS_READ;
    } else {
      scopes = tokens?.match(header);
    }
    if (!scopes) {
      const reason = header === null ? "no_token" : "unknown_token";
      this.metrics.inc(AUTH_FAILURES_METRIC, { reason });
      this.refused.note(peer, header === null ? "no token" : "unknown token");
      return errorReply(401, "E_UNAUTHORIZED", "a valid bearer token is needed", { "www-authenticate": 'Bearer realm="cairn"', ...closeIfBody(req) });
    }
    if (need !== undefined && !scopes.has(need)) {
      this.metrics.inc(AUTH_FAILURES_METRIC, { reason: "scope" });
      this.refused.note(peer, `a token without the ${need} scope (${req.method} ${route})`);
      return errorReply(403, "E_FORBIDDEN", `this token does not have the ${need} scope`, closeIfBody(req));
    }
    return undefined;
  }
}
