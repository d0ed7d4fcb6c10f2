/**
 * The admin socket server. The socket is bound under a umask of 0177, so the file is created
 * with mode 0600 (srw-------) and is never wider, not even for an instant. A stale socket
 * left by a dead node is replaced; any other file at the path is refused. Request bodies are
 * capped, and every malformed, oversized or unknown request gets an error reply.
 */
import { connect } from "node:net";
import { lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import type { Server } from "bun";
import { CairnError, errorMessage, isCairnError, sysCode } from "../errors.ts";
import { isLogLevel, type LevelledLogger, LOG_LEVELS } from "../log.ts";
import { errorReply, json, readBodyCapped } from "../api/http.ts";
import { DIR_MODE } from "../util/fsx.ts";
import { FailedAuthLog, type TokenSet } from "../api/auth.ts";
import { MAX_SOCKET_PATH_BYTES } from "../config/config.ts";
import { ADMIN_MAX_BODY, ADMIN_ROUTES, type HealthReply, type LogLevelReply } from "./protocol.ts";

/** A route the node adds to the admin socket (the checkpoint operations live elsewhere). */
export type AdminRoute = (req: Request, body: unknown) => Promise<Response> | Response;

export interface AdminServerOptions {
  socketPath: string;
  logger: LevelledLogger;
  health: () => HealthReply;
  /** Extra routes keyed by "METHOD /path". */
  routes?: Record<string, AdminRoute>;
}

const MAX_SOCKET_PATH = MAX_SOCKET_PATH_BYTES;

/** The admin routes over HTTP(S) (admin_api): every request needs a token from `tokens()`. */
export interface AdminHttpOptions {
  host: string;
  port: number;
  /** The current tokens (SIGHUP may replace them). */
  tokens: () => TokenSet;
  tls?: { cert: string; key: string };
}

export class AdminServer {
  private server?: Server<unknown>;
  private http?: Server<unknown>;
  /** Requests to the HTTP admin API refused for want of a valid token. */
  readonly refused: FailedAuthLog;

  constructor(private readonly opts: AdminServerOptions) {
    this.refused = new FailedAuthLog((m) => opts.logger.warn(m), "admin API");
  }

  /** Serve the same routes on an HTTP(S) address, for requests with a valid bearer token. */
  listenHttp(o: AdminHttpOptions): void {
    try {
      this.http = Bun.serve({
        hostname: o.host,
        port: o.port,
        maxRequestBodySize: 16 * ADMIN_MAX_BODY,
        // a stalled client holds its connection this long at most
        idleTimeout: 30,
        ...(o.tls ? { tls: o.tls } : {}),
        fetch: (req, server) => {
          // the token is checked before any of the body is read; the reply says nothing more
          if (!o.tokens().match(req.headers.get("authorization"))) {
            this.refused.note(server.requestIP(req)?.address, req.headers.has("authorization") ? "unknown token" : "no token");
            return errorReply(401, "E_UNAUTHORIZED", "unauthorized", { "www-authenticate": "Bearer" });
          }
          return this.handle(req);
        },
        error: (e) => errorReply(500, "E_INTERNAL", errorMessage(e)),
      });
    } catch (e) {
      throw new CairnError("E_LISTEN", `cannot listen on admin_api.address ${o.host}:${o.port}: ${errorMessage(e)}`, {
        hint: "is another process using that address? choose another admin_api.address",
        cause: e,
      });
    }
  }

  /** The port the HTTP admin API listens on (the one chosen when the config says 0). */
  get httpPort(): number | undefined {
    return this.http?.port;
  }

  async start(): Promise<void> {
    const path = this.opts.socketPath;
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
      throw new CairnError(
        "E_ADMIN_SOCKET",
        `admin_socket_path ${path} is ${Buffer.byteLength(path)} bytes long; a Unix socket path may be at most ${MAX_SOCKET_PATH}`,
        { hint: "choose a shorter admin_socket_path" },
      );
    }
    mkdirSync(dirname(path), { recursive: true, mode: DIR_MODE });
    await clearStaleSocket(path);
    const old = process.umask(0o177);
    try {
      this.server = Bun.serve({
        unix: path,
        // Bun's own cap only backs ours up: over it Bun may drop the connection without a
        // reply, so readJsonBody refuses oversized bodies first, with a 413.
        maxRequestBodySize: 16 * ADMIN_MAX_BODY,
        fetch: (req) => this.handle(req),
        error: (e) => errorReply(500, "E_INTERNAL", errorMessage(e)),
      });
    } catch (e) {
      throw new CairnError("E_ADMIN_SOCKET", `cannot listen on admin socket ${path}: ${errorMessage(e)}`, { cause: e });
    } finally {
      process.umask(old);
    }
  }

  async stop(): Promise<void> {
    this.http?.stop(true);
    this.http = undefined;
    if (!this.server) return;
    this.server.stop(true);
    this.server = undefined;
    try {
      unlinkSync(this.opts.socketPath);
    } catch {
      // already gone
    }
  }

  private async handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    try {
      const body = await readJsonBody(req);
      if (path === ADMIN_ROUTES.health && req.method === "GET") return json(this.opts.health());
      if (path === ADMIN_ROUTES.logLevel) {
        if (req.method === "GET") return json({ level: this.opts.logger.level() } satisfies LogLevelReply);
        if (req.method === "PUT" || req.method === "POST") return this.setLogLevel(body);
        return errorReply(405, "E_METHOD", "use GET or PUT", { allow: "GET, PUT" });
      }
      const extra = this.opts.routes?.[`${req.method} ${path}`];
      if (extra) return await extra(req, body);
      return errorReply(404, "E_UNKNOWN_REQUEST", `unknown admin request ${req.method} ${path}`);
    } catch (e) {
      if (isCairnError(e)) {
        const status = e.httpStatus;
        // the rest of an oversized body was never read: close rather than parse it as a request
        return errorReply(status, e.code, e.message, status === 413 ? { connection: "close" } : {});
      }
      this.opts.logger.error(`admin request ${req.method} ${path} failed: ${errorMessage(e)}`);
      return errorReply(500, "E_INTERNAL", errorMessage(e));
    }
  }

  private setLogLevel(body: unknown): Response {
    const level = (body as { level?: unknown } | undefined)?.level;
    if (!isLogLevel(level)) {
      return errorReply(400, "E_BAD_REQUEST", `expected {"level": one of ${LOG_LEVELS.join(" | ")}}, got ${JSON.stringify(level ?? null)}`);
    }
    const previous = this.opts.logger.level();
    this.opts.logger.setLevel(level);
    this.opts.logger.info(`log level changed from ${previous} to ${level} through the admin API`);
    return json({ level, previous } satisfies LogLevelReply);
  }
}

/** Parse a JSON request body (empty → undefined); oversized is a 413, malformed JSON a 400. */
async function readJsonBody(req: Request): Promise<unknown> {
  const text = new TextDecoder().decode(await readBodyCapped(req, ADMIN_MAX_BODY));
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new CairnError("E_BAD_REQUEST", "request body is not valid JSON");
  }
}

/**
 * Make way for the socket: nothing there is fine; a socket nobody listens on (a dead node's)
 * is removed; a live socket or any other kind of file is an error.
 */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if (sysCode(e) === "ENOENT") return;
    throw new CairnError("E_ADMIN_SOCKET", `cannot inspect ${path}: ${errorMessage(e)}`, { cause: e });
  }
  if (!st.isSocket()) {
    throw new CairnError("E_ADMIN_SOCKET", `${path} exists and is not a socket; refusing to replace it`, {
      hint: "remove it or choose another admin_socket_path",
    });
  }
  if (await socketIsLive(path)) {
    throw new CairnError("E_ADMIN_SOCKET", `another process is serving the admin socket ${path}`, {
      hint: "stop it, or give this node its own admin_socket_path",
    });
  }
  unlinkSync(path);
}

function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (live: boolean) => {
      s.destroy();
      resolve(live);
    };
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
    setTimeout(() => done(false), 2000).unref?.();
  });
}
