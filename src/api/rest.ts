/**
 * The REST API over the blob store: PUT, GET, HEAD and DELETE of /v1/blobs/{id}, the id
 * listing, /v1/status and /metrics, with the statuses the README documents. A pure request →
 * response function; node.ts binds it to Bun.serve.
 */
import { isCairnError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type BlobStore, isValidBlobId } from "../engine/blobs.ts";
import type { Metrics } from "../util/metrics.ts";
import { type BodyBudget, errorReply, json, readBodyCapped } from "./http.ts";
import type { RestAccess } from "./access.ts";

export interface RestDeps {
  blobs: BlobStore;
  maxBlobSize: number;
  /** Body bytes held across all requests (max_body_bytes_in_flight). */
  bodyBudget: BodyBudget;
  metrics: Metrics;
  logger: Logger;
  status: () => unknown;
  /** rest_api: tokens and scopes, checked before anything else; without it every request is served (loopback). */
  access?: RestAccess;
}

const BLOB_PREFIX = "/v1/blobs/";
const LIST_LIMIT_DEFAULT = 1000;
const LIST_LIMIT_MAX = 10000;

export function registerRestMetrics(metrics: Metrics): void {
  metrics.counter("cairn_http_requests_total", "REST API requests by method, route and status.");
  metrics.counter("cairn_http_request_bytes_total", "Blob bytes received in PUT bodies.");
  metrics.counter("cairn_http_response_bytes_total", "Blob bytes sent in GET bodies.");
}

export function createRestHandler(deps: RestDeps): (req: Request, peer?: string) => Promise<Response> {
  const { metrics } = deps;
  return async (req, peer) => {
    const url = new URL(req.url);
    const route = routeOf(url.pathname);
    let res: Response;
    try {
      res = deps.access?.check(req, route, peer) ?? (await handle(deps, req, url, route));
    } catch (e) {
      res = failure(deps.logger, req, e);
    }
    metrics.inc("cairn_http_requests_total", { method: req.method, route, status: String(res.status) });
    return res;
  };
}

function routeOf(path: string): string {
  if (path.startsWith(BLOB_PREFIX)) return "blob";
  if (path === "/v1/blobs" || path === "/v1/blobs/") return "blob_list";
  if (path === "/v1/status") return "status";
  if (path === "/metrics") return "metrics";
  return "other";
}

async function handle(deps: RestDeps, req: Request, url: URL, route: string): Promise<Response> {
  const method = req.method;
  switch (route) {
    case "blob":
      return blobRoute(deps, req, url.pathname.slice(BLOB_PREFIX.length));
    case "blob_list":
      if (method !== "GET" && method !== "HEAD") return notAllowed("GET, HEAD");
      return listRoute(deps, url);
    case "status":
      if (method !== "GET" && method !== "HEAD") return notAllowed("GET, HEAD");
      return json(deps.status());
    case "metrics":
      if (method !== "GET" && method !== "HEAD") return notAllowed("GET, HEAD");
      return new Response(deps.metrics.render(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    default:
      return errorReply(404, "E_NOT_FOUND", `no route ${method} ${url.pathname}`);
  }
}

async function blobRoute(deps: RestDeps, req: Request, id: string): Promise<Response> {
  if (!isValidBlobId(id)) {
    return errorReply(400, "E_BAD_ID", "blob ids are 1-256 characters of A-Z a-z 0-9 . _ -");
  }
  switch (req.method) {
    case "PUT": {
      const body = await readBodyCapped(req, deps.maxBlobSize, deps.bodyBudget);
      try {
        deps.metrics.inc("cairn_http_request_bytes_total", {}, body.byteLength);
        const { created } = await deps.blobs.put(id, body);
        return new Response(null, { status: created ? 201 : 204 });
      } finally {
        // the body is committed (or refused): its bytes are no longer held for this request
        deps.bodyBudget.release(body.byteLength);
      }
    }
    case "GET": {
      const blob = deps.blobs.get(id);
      if (!blob) return errorReply(404, "E_NOT_FOUND", `no blob ${id}`);
      deps.metrics.inc("cairn_http_response_bytes_total", {}, blob.size);
      return new Response(blob.data, {
        headers: { "content-type": "application/octet-stream", etag: `"${blob.digest}"` },
      });
    }
    case "HEAD": {
      const meta = deps.blobs.head(id);
      if (!meta) return new Response(null, { status: 404 });
      // Bun would compute Content-Length from an empty body; give the blob's own.
      return new Response(null, {
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(meta.size),
          etag: `"${meta.digest}"`,
        },
      });
    }
    case "DELETE": {
      const { existed } = await deps.blobs.delete(id);
      return existed ? new Response(null, { status: 204 }) : errorReply(404, "E_NOT_FOUND", `no blob ${id}`);
    }
    default:
      return notAllowed("GET, HEAD, PUT, DELETE");
  }
}

function listRoute(deps: RestDeps, url: URL): Response {
  const prefix = url.searchParams.get("prefix") ?? "";
  const after = url.searchParams.get("after") ?? "";
  const limitRaw = url.searchParams.get("limit");
  const limit = limitRaw === null ? LIST_LIMIT_DEFAULT : Number(limitRaw);
  if (!Number.isInteger(limit) || limit < 1 || limit > LIST_LIMIT_MAX) {
    return errorReply(400, "E_BAD_REQUEST", `limit must be a whole number from 1 to ${LIST_LIMIT_MAX}`);
  }
  if ((prefix !== "" && !/^[A-Za-z0-9._-]{1,256}$/.test(prefix)) || (after !== "" && !isValidBlobId(after))) {
    return errorReply(400, "E_BAD_REQUEST", "prefix and after must be made of blob id characters");
  }
  const page = deps.blobs.list({ prefix, after, limit });
  return json({ blobs: page.blobs, next_after: page.nextAfter });
}

function notAllowed(allow: string): Response {
  return errorReply(405, "E_METHOD", `method not allowed; allowed: ${allow}`, { allow });
}

function failure(logger: Logger, req: Request, e: unknown): Response {
  if (isCairnError(e)) {
    const status = e.httpStatus;
    // a 503 is a refusal the node has already logged once (shutting down, database files lost)
    if (status >= 500 && status !== 503) logger.error(`${req.method} ${new URL(req.url).pathname}: ${e.message}`);
    // the rest of a refused body was never read: close rather than parse it as a request
    const closing = status === 413 || e.code === "E_OVERLOADED" || e.code === "E_BAD_REQUEST";
    return errorReply(status, e.code, e.message, closing ? { connection: "close", ...(e.code === "E_OVERLOADED" ? { "retry-after": "1" } : {}) } : {});
  }
  logger.error(`${req.method} ${new URL(req.url).pathname}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return errorReply(500, "E_INTERNAL", "internal error; see the node's log");
}
