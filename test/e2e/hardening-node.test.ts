/**
 * The running node under conditions an adversarial pass found it mishandled (and their fixes):
 * durations longer than a platform timer holds (24.8 days), an S3 endpoint that accepts
 * connections and never answers, SIGHUP, and request bodies held in memory by stalled
 * uploads. Last, what cairn guarantees for pipelined requests, which Bun's HTTP server does
 * not serve (documented, not a fix).
 *
 * Raw sockets on 127.0.0.1 where a client library would tidy the bytes up.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { admin, checkpointStatus, createCheckpoint, listJson, putAll } from "../helpers/checkpoint.ts";
import { waitFor } from "../helpers/wait.ts";
import { type NodeHandle, pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import { rawExchange, vmRssKiB } from "../helpers/raw.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

// Every node is stopped in a `finally`; its exit code is checked only when the test body got to
// its end (`ok`), so that a failure in the body is the one reported, not a masking exit code.

const MiB = 1024 * 1024;
const DAY_MS = 86_400_000;

/** SIGTERM, and SIGKILL if the node has not exited after `ms`; the exit code (null if killed). */
async function stopWithin(node: NodeHandle, ms = 20_000): Promise<number | null> {
  if (node.proc.exitCode !== null || node.proc.signalCode !== null) return node.proc.exitCode;
  node.proc.kill("SIGTERM");
  const timer = setTimeout(() => node.proc.kill("SIGKILL"), ms);
  await node.proc.exited;
  clearTimeout(timer);
  return node.proc.signalCode ? null : node.proc.exitCode;
}

/** `local-admin checkpoint status --json`, parsed. */
// biome-ignore lint: tests read arbitrary fields
function statusCli(node: NodeHandle): any {
  const r = admin(node, ["checkpoint", "status", "--json"]);
  if (r.code !== 0) throw new Error(`checkpoint status --json: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function metricsText(node: NodeHandle): Promise<string> {
  return (await fetch(`${node.url}/metrics`)).text();
}

/** A metric's value in a /metrics text (undefined if it is not there). */
function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
}

const portOf = (node: NodeHandle) => Number(new URL(node.url).port);

// ---- 3. timers longer than 24.8 days -----------------------------------------------------------

describe("durations past 24.8 days", () => {
  test("a 30-day periodic interval with 3 checkpoints and max 3: no checkpoint at start, the next ~30 days ahead", async () => {
    const dir = tmpDir();
    let node = await startNode(dir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 3\n  sync: false\n" });
    let ok = false;
    try {
      await putAll(node.url, Array.from({ length: 10 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 10_000) })));
      for (let i = 1; i <= 3; i++) expect(createCheckpoint(node)).toBe(i);
      ok = true;
    } finally {
      const code = await node.stop();
      if (ok) expect(code).toBe(0);
    }
    const before = listJson(join(dir, "checkpoints"));
    expect(before.map((c) => c.id)).toEqual([1, 2, 3]);
    const newest = Date.parse(before[2]!.created);

    node = await startNode(dir, {
      extraYaml:
        "checkpoint_config:\n  max_db_checkpoints: 3\n  sync: false\n  periodic_db_checkpoints: true\n  db_checkpoint_interval_secs: 2592000\n  db_checkpoint_startup_delay_secs: 0\n",
    });
    ok = false;
    try {
      const started = Date.now();
      // an observation window (the claim is that nothing happens): the code before the fix
      // fired the 30-day timer after 1 ms and took checkpoints back to back, retention
      // deleting the history they replaced
      let polls = 0;
      while (Date.now() - started < 3_000) {
        const s = await checkpointStatus(node);
        polls++;
        expect({ running: s.running?.state ?? null, successes: s.successes, failures: s.failures }).toEqual({ running: null, successes: 0, failures: 0 });
        await Bun.sleep(100);
      }
      const s = statusCli(node);
      console.log(`after ${polls} polls over ${Date.now() - started} ms: next_periodic ${s.next_periodic}, successes ${s.successes}`);
      expect(s.successes + s.failures + s.cancellations).toBe(0);
      expect(s.running).toBeNull();
      const next = Date.parse(s.next_periodic);
      expect(Math.abs(next - (newest + 30 * DAY_MS))).toBeLessThan(5_000);
      expect(next - Date.now()).toBeGreaterThan(29 * DAY_MS);
      expect(listJson(join(dir, "checkpoints")).map((c) => c.id)).toEqual([1, 2, 3]);
      expect(node.logs()).not.toContain("checkpoint started");
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 60_000);

  test("db_checkpoint_task_timeout_secs of a year: a checkpoint succeeds", async () => {
    const node = await startNode(tmpDir(), { extraYaml: "checkpoint_config:\n  sync: false\n  db_checkpoint_task_timeout_secs: 31536000\n" });
    let ok = false;
    try {
      await putAll(node.url, Array.from({ length: 10 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 10_000) })));
      // (the code before the fix: fails at once, "checkpoint took longer than 8760 h and was stopped")
      const r = admin(node, ["checkpoint", "create"]);
      console.log(`checkpoint create with a 1-year timeout: exit ${r.code}; ${r.stdout.trim()} ${r.stderr.trim()}`);
      expect(r.code).toBe(0);
      expect(r.stdout).toStartWith("Checkpoint 1 created");
      const s = statusCli(node);
      expect({ outcome: s.last?.outcome, successes: s.successes, failures: s.failures }).toEqual({ outcome: "success", successes: 1, failures: 0 });
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 60_000);

  test("checkpoint create --delay-secs 2200000 --detach: still waiting after 2 s; checkpoint cancel cancels it", async () => {
    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  sync: false\n" });
    let ok = false;
    try {
      await putAll(node.url, [{ id: "a", body: pseudoRandomBytes(1, 10_000) }]);
      const c = admin(node, ["checkpoint", "create", "--delay-secs", "2200000", "--detach"]);
      console.log(`create --delay-secs 2200000 --detach: exit ${c.code}; ${c.stdout.trim()} ${c.stderr.trim()}`);
      expect(c.code).toBe(0);
      const t0 = Date.now();
      // an observation window (the claim is that nothing happens): the code before the fix
      // ran it after 1 ms and its timeout (1 h + the delay) stopped it at once
      while (Date.now() - t0 < 2_000) {
        const s = await checkpointStatus(node);
        expect({ state: s.running?.state ?? null, failures: s.failures, successes: s.successes }).toEqual({ state: "waiting", failures: 0, successes: 0 });
        await Bun.sleep(100);
      }
      const s = statusCli(node);
      expect(s.running?.state).toBe("waiting");
      const x = admin(node, ["checkpoint", "cancel"]);
      console.log(`cancel: exit ${x.code}; ${x.stdout.trim()} ${x.stderr.trim()}`);
      expect(x.code).toBe(0);
      expect(x.stdout).toContain("cancelled");
      const after = statusCli(node);
      expect({ running: after.running, cancellations: after.cancellations, successes: after.successes, failures: after.failures }).toEqual({
        running: null,
        cancellations: 1,
        successes: 0,
        failures: 0,
      });
      const manifests = join(dir, "checkpoints", "manifests");
      expect(existsSync(manifests) ? readdirSync(manifests) : []).toEqual([]);
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 60_000);
});

// ---- 4. an S3 endpoint that never answers ------------------------------------------------------

/** A TCP server on 127.0.0.1 that accepts connections, reads everything and never answers. */
function blackHole() {
  const sockets = new Set<Socket<unknown>>();
  const seen = { connections: 0, bytes: 0 };
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        seen.connections++;
        sockets.add(s);
      },
      data(_s, d) {
        seen.bytes += d.byteLength;
      },
      close(s) {
        sockets.delete(s);
      },
      error(s) {
        sockets.delete(s);
      },
    },
  });
  return {
    port: server.port,
    seen,
    /** Connections the node still holds open to it. */
    open: () => sockets.size,
    stop() {
      for (const s of sockets) s.end();
      server.stop(true);
    },
  };
}

const blackHoleYaml = (port: number) =>
  `checkpoint_config:\n  sync: false\n  remote:\n    url: s3://b/p\n    endpoint: http://127.0.0.1:${port}\n    request_timeout_secs: 1\n    retry_backoff_secs: 1\n`;
const s3Env = { S3_ACCESS_KEY_ID: "AKIDEXAMPLE", S3_SECRET_ACCESS_KEY: "secret-example", S3_REGION: "us-east-1" };

describe("a remote S3 endpoint that accepts connections and never answers", () => {
  test("requests time out and count, the copy fails and is retried, metrics and the log say so", async () => {
    const hole = blackHole();
    const node = await startNode(tmpDir(), { extraYaml: blackHoleYaml(hole.port), env: s3Env });
    let ok = false;
    try {
      await putAll(node.url, [{ id: "a", body: pseudoRandomBytes(1, 10_000) }]);
      expect(createCheckpoint(node)).toBe(1);
      // (the code before the fix: "copying now", request_failures absent and failures 0, forever)
      await waitFor(async () => ((await checkpointStatus(node)).remote?.request_failures ?? 0) > 0, { timeoutMs: 20_000, what: "a request to the remote to time out and be counted" });
      await waitFor(async () => ((await checkpointStatus(node)).remote?.failures ?? 0) >= 1, { timeoutMs: 25_000, what: "the copy to the remote to fail once its retries are spent" });
      const r = statusCli(node).remote;
      console.log(`remote status: ${JSON.stringify(r)}; the endpoint saw ${hole.seen.connections} connection(s), ${hole.seen.bytes} bytes`);
      expect(hole.seen.connections).toBeGreaterThan(0);
      expect(r.request_failures).toBeGreaterThan(0);
      expect(r.failures).toBeGreaterThanOrEqual(1);
      expect(r.last_error).toMatch(/no answer|timed? ?out/i);
      expect(r.successes).toBe(0);
      const m = await metricsText(node);
      expect(metric(m, "cairn_remote_request_failures_total")).toBeGreaterThan(0);
      expect(node.logs()).toMatch(/WARN .*(no answer|timed? ?out)/i);
      // the node itself is not held up
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      ok = true;
    } finally {
      hole.stop();
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 90_000);

  // A request past its deadline is abandoned, not aborted: Bun's S3Client takes no AbortSignal,
  // so its socket stays open until Bun's own client timeout closes it (measured: 360 s). So at
  // most one connection per abandoned request, and never more than a few minutes' worth; and
  // the node must still exit at once on SIGTERM while they are open.
  test("SIGTERM exits 0 promptly while timed-out requests still hold connections to a silent endpoint; one at most per abandoned request", async () => {
    const hole = blackHole();
    const node = await startNode(tmpDir(), { extraYaml: blackHoleYaml(hole.port), env: s3Env });
    try {
      await putAll(node.url, [{ id: "a", body: pseudoRandomBytes(1, 10_000) }]);
      expect(createCheckpoint(node)).toBe(1);
      await waitFor(async () => ((await checkpointStatus(node)).remote?.failures ?? 0) >= 2, { timeoutMs: 40_000, what: "two failed copies" });
      const failed = (await checkpointStatus(node)).remote.request_failures;
      const open = hole.open();
      const t0 = Date.now();
      const code = await stopWithin(node, 20_000);
      console.log(`${failed} timed-out requests, ${open} connection(s) left open to the endpoint; SIGTERM: exit ${code} after ${Date.now() - t0} ms (null: SIGKILLed after 20 s)`);
      expect(code).toBe(0);
      expect(open).toBeLessThanOrEqual(failed);
    } finally {
      hole.stop();
      await stopWithin(node, 1_000);
    }
  }, 90_000);
});

// ---- 5. SIGHUP -----------------------------------------------------------------------------------

describe("SIGHUP", () => {
  test("the node stays up and re-reads its config: a new log_level applies; SIGTERM then exits 0", async () => {
    const node = await startNode(tmpDir(), { extraYaml: "checkpoint_config:\n  sync: false\n" });
    let ok = false;
    try {
      node.proc.kill("SIGHUP");
      // (the code before the fix died of it: killed by SIGHUP, exit status 129 in a shell)
      await waitFor(() => node.logs().includes("SIGHUP received") || node.proc.exitCode !== null || node.proc.signalCode !== null, { timeoutMs: 10_000, what: "the node to log SIGHUP" });
      expect({ exitCode: node.proc.exitCode, signal: node.proc.signalCode }).toEqual({ exitCode: null, signal: null });
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);

      const mark = node.logs().length;
      await putAll(node.url, [{ id: "a", body: pseudoRandomBytes(1, 10_000) }]);
      expect(createCheckpoint(node)).toBe(1);
      expect(node.logs().slice(mark)).not.toMatch(/ DEBUG /);

      writeFileSync(node.configFile, readFileSync(node.configFile, "utf8").replace("log_level: info", "log_level: debug"));
      node.proc.kill("SIGHUP");
      await waitFor(() => /SIGHUP received.*log_level info → debug/.test(node.logs()) || node.proc.exitCode !== null, { timeoutMs: 10_000, what: "the node to apply log_level debug" });
      expect(node.proc.exitCode).toBeNull();
      const mark2 = node.logs().length;
      expect(createCheckpoint(node)).toBe(2);
      await waitFor(() => / DEBUG /.test(node.logs().slice(mark2)), { timeoutMs: 10_000, what: "DEBUG lines in the node's log" });
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
    expect(existsSync(node.socket)).toBe(false);
  }, 60_000);
});

// ---- 6. request bodies in flight ------------------------------------------------------------------

interface Upload {
  /** Body bytes handed to the kernel so far. */
  written(): number;
  /** Resolves once the whole payload is written, or the peer closed first. */
  settled: Promise<void>;
  received(): string;
  status(): number | undefined;
  closed(): boolean;
  close(): void;
}

/** A PUT declaring `declared` bytes that sends `body` (all of it, waiting for drains) and then stalls. */
async function stalledUpload(port: number, id: string, declared: number, body: Uint8Array): Promise<Upload> {
  const head = Buffer.from(`PUT /v1/blobs/${id} HTTP/1.1\r\nHost: x\r\nContent-Length: ${declared}\r\n\r\n`, "latin1");
  const pending: Uint8Array[] = [head, body];
  let written = 0;
  let received = "";
  let closed = false;
  let settle!: () => void;
  const settled = new Promise<void>((r) => (settle = r));
  const flush = (s: Socket<unknown>) => {
    while (pending.length > 0) {
      const chunk = pending[0]!;
      const n = s.write(chunk);
      if (n <= 0) return;
      if (chunk !== head) written += n;
      if (n < chunk.byteLength) {
        pending[0] = chunk.subarray(n);
        return;
      }
      pending.shift();
    }
    settle();
  };
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        received += Buffer.from(d).toString("latin1");
      },
      drain(s) {
        flush(s);
      },
      close() {
        closed = true;
        settle();
      },
      error() {
        closed = true;
        settle();
      },
    },
  });
  flush(sock);
  return {
    written: () => written,
    settled,
    received: () => received,
    status: () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(received);
      return m ? Number(m[1]) : undefined;
    },
    closed: () => closed,
    close: () => sock.end(),
  };
}

describe("request bodies held by stalled uploads", () => {
  test("past the budget a large upload gets 503 while small requests still work; the budget frees when they go", async () => {
    // 16 MiB for all bodies at once; large ones (past 1 MiB) may hold 12 MiB of it, 4 MiB stay for small ones
    const node = await startNode(tmpDir(), { extraYaml: "max_blob_size: 4194304\nmax_body_bytes_in_flight: 16777216\n" });
    const port = portOf(node);
    const uploads: Upload[] = [];
    let ok = false;
    try {
      const body = pseudoRandomBytes(5, 3.5 * MiB);
      for (let i = 0; i < 3; i++) {
        const u = await stalledUpload(port, `big${i}`, 4 * MiB, body);
        uploads.push(u);
        await u.settled;
        expect(u.closed()).toBe(false);
      }
      // all three bodies have arrived and are held: 10.5 MiB
      await waitFor(async () => (metric(await metricsText(node), "cairn_http_body_bytes_in_flight") ?? -1) >= 3 * 3.5 * MiB, { timeoutMs: 10_000, what: "10.5 MiB of bodies in flight" });
      // a fourth declaring 4 MiB does not fit under the 12 MiB large bodies may hold
      const fourth = await rawExchange({ port }, `PUT /v1/blobs/big3 HTTP/1.1\r\nHost: x\r\nContent-Length: ${4 * MiB}\r\n\r\n`, { timeoutMs: 10_000, untilStatus: true });
      console.log(`fourth large upload: ${JSON.stringify(fourth.text.slice(0, 400))}`);
      expect(fourth.status).toBe(503);
      expect(fourth.text).toContain("E_OVERLOADED");
      expect(fourth.text).toMatch(/^retry-after: *\d+/im);

      // meanwhile a small body fits in the reserve, and reads are served
      const small = pseudoRandomBytes(6, 1024);
      const put = await fetch(`${node.url}/v1/blobs/small`, { method: "PUT", body: small });
      expect(put.status).toBe(201);
      const get = await fetch(`${node.url}/v1/blobs/small`);
      expect(get.status).toBe(200);
      expect(sha256(await get.arrayBuffer())).toBe(sha256(small));

      // the stalled uploads go: their bytes are released, and a full-size upload fits again
      for (const u of uploads) u.close();
      await waitFor(async () => metric(await metricsText(node), "cairn_http_body_bytes_in_flight") === 0, { timeoutMs: 10_000, what: "the bytes in flight to return to 0" });
      const full = pseudoRandomBytes(7, 4 * MiB);
      const put4 = await fetch(`${node.url}/v1/blobs/full`, { method: "PUT", body: full });
      expect(put4.status).toBe(201);
      const get4 = await fetch(`${node.url}/v1/blobs/full`);
      expect(sha256(await get4.arrayBuffer())).toBe(sha256(full));
      expect(metric(await metricsText(node), "cairn_http_body_bytes_in_flight")).toBe(0);
      for (const id of ["big0", "big1", "big2", "big3"]) {
        const r = await fetch(`${node.url}/v1/blobs/${id}`);
        await r.arrayBuffer();
        expect(r.status).toBe(404);
      }
      expect(node.proc.exitCode).toBeNull();
      ok = true;
    } finally {
      for (const u of uploads) u.close();
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 60_000);

  test("40 stalled uploads of 15 of 16 MiB each: the node's RSS stays under 400 MB", async () => {
    // 64 MiB for bodies in flight, 48 MiB of it for large ones. (The code before the fix refuses
    // the key; without it, the same uploads held all 600 MiB sent: peak RSS ~670 MB. The default
    // budget, 256 MiB, would allow ~400-470 MB here: too close to tell apart.)
    const node = await startNode(tmpDir(), { extraYaml: "max_blob_size: 16777216\nmax_body_bytes_in_flight: 67108864\n" });
    const port = portOf(node);
    const uploads: Upload[] = [];
    let peak = 0;
    const sample = async () => {
      peak = Math.max(peak, await vmRssKiB(node.proc.pid));
    };
    let ok = false;
    try {
      const body = pseudoRandomBytes(9, 15 * MiB);
      for (let i = 0; i < 40; i++) {
        uploads.push(await stalledUpload(port, `s${i}`, 16 * MiB, body));
        if (i % 4 === 3) await sample();
      }
      // every upload has sent all it will, or was refused and closed
      const t0 = Date.now();
      await Promise.race([Promise.all(uploads.map((u) => u.settled)), Bun.sleep(30_000)]);
      // a short sampling window after the last byte: the RSS the held bodies settle at
      for (let i = 0; i < 10; i++) {
        await sample();
        await Bun.sleep(50);
      }
      const refused = uploads.filter((u) => u.status() === 503).length;
      const sent = uploads.reduce((n, u) => n + u.written(), 0);
      const inFlight = metric(await metricsText(node), "cairn_http_body_bytes_in_flight");
      console.log(
        `40 stalled uploads: ${(sent / MiB).toFixed(0)} MiB sent in ${Date.now() - t0} ms, ${refused} refused with 503, ${((inFlight ?? 0) / MiB).toFixed(1)} MiB in flight, node peak RSS ${(peak / 1024).toFixed(0)} MB`,
      );
      // (the code before the fix held every byte sent: > 600 MB)
      expect(peak).toBeLessThan(400 * 1024);
      expect(refused).toBeGreaterThan(0);
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      ok = true;
    } finally {
      for (const u of uploads) u.close();
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 90_000);
});

// ---- 8. pipelined requests (what cairn guarantees; not a fix) --------------------------------------

/** A keep-alive connection that reads whole responses (status line, headers, Content-Length body). */
class RawConnection {
  private buf = Buffer.alloc(0);
  private closedFlag = false;
  private wake?: () => void;
  private constructor(private sock?: Socket<unknown>) {}

  static async open(port: number): Promise<RawConnection> {
    const c = new RawConnection();
    c.sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data: (_s, d) => {
          c.buf = Buffer.concat([c.buf, Buffer.from(d)]);
          c.wake?.();
        },
        close: () => {
          c.closedFlag = true;
          c.wake?.();
        },
        error: () => {
          c.closedFlag = true;
          c.wake?.();
        },
      },
    });
    return c;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  write(data: string | Uint8Array): void {
    const b = typeof data === "string" ? Buffer.from(data, "latin1") : data;
    const n = this.sock!.write(b);
    if (n !== b.byteLength) throw new Error(`short write (${n} of ${b.byteLength})`);
  }

  /** The next whole response, or undefined if the connection closed (or `timeoutMs` passed) first. */
  async response(timeoutMs = 5_000): Promise<{ status: number; headers: string; body: Buffer } | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end >= 0) {
        const headers = this.buf.subarray(0, end).toString("latin1");
        const len = Number(/^content-length: *(\d+)/im.exec(headers)?.[1] ?? 0);
        if (this.buf.length >= end + 4 + len) {
          const body = Buffer.from(this.buf.subarray(end + 4, end + 4 + len));
          this.buf = this.buf.subarray(end + 4 + len);
          return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(headers)?.[1]), headers, body };
        }
      }
      if (this.closedFlag || Date.now() > deadline) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.wake = r;
        timer = setTimeout(r, Math.max(1, deadline - Date.now()));
      });
      clearTimeout(timer);
    }
  }

  close(): void {
    this.sock?.end();
  }
}

const putRequest = (id: string, body: string) => `PUT /v1/blobs/${id} HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe("pipelined PUTs on one connection", () => {
  // Bun 1.4.5's HTTP server (uWS) closes a connection when a pipelined request arrives while an
  // async response is pending (upstream: oven-sh/bun PR #35036 / #38128); cairn cannot fix that
  // itself. This pins what cairn guarantees regardless. It is not a regression test of a fix:
  // it passes on the code before the hardening too.
  test("two PUTs in one write: whatever is acknowledged is stored, and a new connection works at once", async () => {
    const node = await startNode(tmpDir());
    let ok = false;
    try {
      const port = portOf(node);
      for (let round = 0; round < 5; round++) {
        const ids = [`p${round}a`, `p${round}b`];
        const bodies = ids.map((id) => `body of ${id} `.repeat(50));
        const c = await RawConnection.open(port);
        c.write(putRequest(ids[0]!, bodies[0]!) + putRequest(ids[1]!, bodies[1]!));
        const replies: number[] = [];
        for (let i = 0; i < 2; i++) {
          const r = await c.response(5_000);
          if (!r) break;
          replies.push(r.status);
        }
        const closed = c.closed;
        c.close();
        console.log(`round ${round}: responses ${JSON.stringify(replies)}${closed ? ", then the server closed the connection" : ""}`);
        // responses come in request order: the k-th answers the k-th PUT
        for (let i = 0; i < replies.length; i++) {
          if (replies[i] !== 201 && replies[i] !== 204) continue;
          const g = await fetch(`${node.url}/v1/blobs/${ids[i]}`);
          expect(g.status).toBe(200);
          expect(await g.text()).toBe(bodies[i]!);
        }
        // a new connection is served at once
        const t0 = performance.now();
        const s = await fetch(`${node.url}/v1/status`);
        expect(s.status).toBe(200);
        expect(performance.now() - t0).toBeLessThan(1_000);
      }
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 60_000);

  test("sequential keep-alive PUTs on one connection (each after the last response) all succeed", async () => {
    const node = await startNode(tmpDir());
    let ok = false;
    try {
      const c = await RawConnection.open(portOf(node));
      try {
        for (let i = 0; i < 10; i++) {
          c.write(putRequest(`k${i}`, `keep-alive body ${i}`));
          const r = await c.response(5_000);
          expect(r?.status).toBe(201);
        }
        expect(c.closed).toBe(false);
      } finally {
        c.close();
      }
      for (let i = 0; i < 10; i++) {
        const g = await fetch(`${node.url}/v1/blobs/k${i}`);
        expect(await g.text()).toBe(`keep-alive body ${i}`);
      }
      ok = true;
    } finally {
      const code = await stopWithin(node);
      if (ok) expect(code).toBe(0);
    }
  }, 30_000);
});
