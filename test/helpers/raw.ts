/**
 * Raw connections to the node, below any HTTP client: bytes go out exactly as given (no path
 * normalisation, no header checks), and whatever comes back is collected until the peer
 * closes or a deadline passes.
 */
import type { Socket } from "bun";

export type Target = { port: number } | { unix: string };

export interface RawReply {
  /** Everything received, as latin1 text. */
  text: string;
  /** HTTP status of the first response line, or undefined if none arrived. */
  status?: number;
  /** The peer closed (or reset) the connection before the deadline. */
  closed: boolean;
  /** Milliseconds from connect to close/deadline. */
  ms: number;
}

function connectTo(target: Target, handlers: Parameters<typeof Bun.connect>[0]["socket"]): Promise<Socket<unknown>> {
  return "port" in target
    ? Bun.connect({ hostname: "127.0.0.1", port: target.port, socket: handlers })
    : Bun.connect({ unix: target.unix, socket: handlers });
}

/**
 * Send `payload` (in pieces, if an array) and collect the reply until the peer closes the
 * connection, or `untilStatus` is set and one full status line has arrived, or `timeoutMs`.
 */
export async function rawExchange(
  target: Target,
  payload: string | Uint8Array | (string | Uint8Array)[],
  opts: { timeoutMs?: number; untilStatus?: boolean } = {},
): Promise<RawReply> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const started = performance.now();
  const chunks: Buffer[] = [];
  let closed = false;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const pending: Uint8Array[] = [];
  let sock: Socket<unknown> | undefined;
  const flush = (s: Socket<unknown>) => {
    while (pending.length) {
      const head = pending[0]!;
      const n = s.write(head);
      if (n < 0) return;
      if (n < head.byteLength) {
        pending[0] = head.subarray(n);
        return;
      }
      pending.shift();
    }
  };
  const pieces = Array.isArray(payload) ? payload : [payload];
  for (const p of pieces) pending.push(typeof p === "string" ? Buffer.from(p, "latin1") : p);
  try {
    sock = await connectTo(target, {
      data(_s, d) {
        chunks.push(Buffer.from(d));
        if (opts.untilStatus && /^HTTP\/1\.[01] \d{3}/.test(Buffer.concat(chunks).toString("latin1"))) resolveDone();
      },
      drain(s) {
        flush(s);
      },
      close() {
        closed = true;
        resolveDone();
      },
      error() {
        closed = true;
        resolveDone();
      },
    });
  } catch {
    return { text: "", closed: true, ms: performance.now() - started };
  }
  flush(sock);
  const timer = setTimeout(resolveDone, timeoutMs);
  await done;
  clearTimeout(timer);
  const ms = performance.now() - started;
  sock.end();
  const text = Buffer.concat(chunks).toString("latin1");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
  return { text, status: m ? Number(m[1]) : undefined, closed, ms };
}

/** One complete request with `Connection: close`; resolves when the server closes. */
export function rawRequest(target: Target, method: string, path: string, body?: string | Uint8Array, timeoutMs = 5000): Promise<RawReply> {
  const len = body === undefined ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength;
  const head = `${method} ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n${body === undefined ? "" : `Content-Length: ${len}\r\n`}\r\n`;
  return rawExchange(target, body === undefined ? head : [head, body], { timeoutMs });
}

/** A connection that sends `payload` and then stalls; close() ends it; closedAt tells when the peer closed. */
export async function stalledConnection(target: Target, payload: string): Promise<{ close(): void; closedAt(): number | undefined; received(): string }> {
  let closedAt: number | undefined;
  let received = "";
  const sock = await connectTo(target, {
    data(_s, d) {
      received += Buffer.from(d).toString("latin1");
    },
    close() {
      closedAt ??= performance.now();
    },
    error() {
      closedAt ??= performance.now();
    },
  });
  sock.write(payload);
  return { close: () => sock.end(), closedAt: () => closedAt, received: () => received };
}

/** VmRSS of a process in KiB, from /proc/<pid>/status. */
export async function vmRssKiB(pid: number): Promise<number> {
  const text = await Bun.file(`/proc/${pid}/status`).text();
  const m = /^VmRSS:\s+(\d+) kB/m.exec(text);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}
