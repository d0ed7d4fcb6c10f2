/**
 * Hostile and careless clients against the compiled node: stalled half-requests, connection
 * floods, garbage bytes, odd blob ids, memory under abuse, and the admin socket's mode at the
 * instant it appears. Raw sockets throughout, so no client tidies the bytes up first.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { getJson, type NodeHandle, pseudoRandomBytes, sha256, startNode, writeConfig, startNodeWithConfig, freePort } from "../helpers/node.ts";
import { rawExchange, rawRequest, stalledConnection, type Target, vmRssKiB } from "../helpers/raw.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(60_000);

const restOf = (node: NodeHandle): Target => ({ port: Number(new URL(node.url).port) });
const adminOf = (node: NodeHandle): Target => ({ unix: node.socket });

/** A status request on each interface, timed: both must answer 200. */
async function timedProbe(node: NodeHandle): Promise<{ restMs: number; adminMs: number }> {
  const t0 = performance.now();
  const rest = await rawRequest(restOf(node), "GET", "/v1/status");
  const t1 = performance.now();
  const admin = await rawRequest(adminOf(node), "GET", "/v1/health");
  const t2 = performance.now();
  expect(rest.status).toBe(200);
  expect(admin.status).toBe(200);
  return { restMs: t1 - t0, adminMs: t2 - t1 };
}

async function expectAlive(node: NodeHandle): Promise<void> {
  expect(node.proc.exitCode).toBeNull();
  expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
  const admin = await rawRequest(adminOf(node), "GET", "/v1/health");
  expect(admin.status).toBe(200);
}

/**
 * VmRSS (KiB) once it has stopped moving: sampled every 100 ms until a second's worth of samples
 * lie within 1 MiB of each other (or 20 s have passed; then the latest sample).
 */
async function settledRssKiB(pid: number): Promise<number> {
  const samples: number[] = [];
  const deadline = performance.now() + 20_000;
  for (;;) {
    samples.push(await vmRssKiB(pid));
    const recent = samples.slice(-11);
    if (recent.length === 11 && Math.max(...recent) - Math.min(...recent) < 1024) return recent.at(-1)!;
    if (performance.now() > deadline) return samples.at(-1)!;
    await Bun.sleep(100);
  }
}

/** Run `n` tasks with at most `width` in flight. */
async function pool<T>(n: number, width: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

describe("stalled half-requests", () => {
  test("headers without an end, or a body cut short, on REST and admin: others are served promptly", async () => {
    const node = await startNode(tmpDir());
    try {
      const rest = restOf(node);
      const admin = adminOf(node);
      const stalls = [
        { name: "rest: headers without end", conn: await stalledConnection(rest, "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ") },
        { name: "rest: body cut short", conn: await stalledConnection(rest, "PUT /v1/blobs/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + "a".repeat(100)) },
        { name: "admin: headers without end", conn: await stalledConnection(admin, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ") },
        { name: "admin: body cut short", conn: await stalledConnection(admin, "PUT /v1/log-level HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"level\":") },
      ];
      // many of each, too: 50 stalled connections per interface
      const crowd = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          stalledConnection(i % 2 ? rest : admin, i % 4 < 2 ? "GET / HTTP/1.1\r\nHost: x\r\n" : "PUT /v1/blobs/c HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\nxx"),
        ),
      );
      const started = performance.now();
      // while they stall, other requests are served promptly, over and over, until the admin
      // socket has let go of its stalled connections (Bun's idle timeout is 10 s; given a minute)
      const adminStalls = stalls.filter((x) => x.name.startsWith("admin"));
      const probes: { restMs: number; adminMs: number }[] = [];
      while ((probes.length < 10 || adminStalls.some((x) => x.conn.closedAt() === undefined)) && performance.now() - started < 60_000) {
        probes.push(await timedProbe(node));
        const r = await fetch(`${node.url}/v1/blobs/ok`, { method: "PUT", body: "fine" });
        expect(r.status).toBeLessThan(300);
        await Bun.sleep(250); // the pace of the probes
      }
      // promptly: a server held up by the stalled connections would answer only once they time
      // out (10 s), if at all
      const worst = Math.max(...probes.map((p) => Math.max(p.restMs, p.adminMs)));
      expect(worst).toBeLessThan(3000);
      // the stalled PUT bodies were never stored
      expect((await fetch(`${node.url}/v1/blobs/stall`)).status).toBe(404);
      expect((await fetch(`${node.url}/v1/blobs/c`)).status).toBe(404);
      const held = stalls.map((s) => ({
        name: s.name,
        closedAfterMs: s.conn.closedAt() === undefined ? null : Math.round(s.conn.closedAt()! - started),
        reply: s.conn.received().split("\r\n")[0] ?? "",
      }));
      const crowdClosed = { rest: 0, admin: 0 };
      crowd.forEach((c, i) => {
        if (c.closedAt() !== undefined) crowdClosed[i % 2 ? "rest" : "admin"]++;
      });
      console.log(`[abuse] ${probes.length} probes while stalled, worst ${worst.toFixed(1)} ms; stalled connections after ${Math.round(performance.now() - started)} ms:`, JSON.stringify(held), "crowd closed of 50 each:", JSON.stringify(crowdClosed));
      // the admin socket does not hold a stalled connection forever (Bun's default idle timeout is 10 s)
      for (const h of held.filter((x) => x.name.startsWith("admin"))) expect(h.closedAfterMs).not.toBeNull();
      for (const s of stalls) s.conn.close();
      for (const c of crowd) c.close();
      await expectAlive(node);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 90_000);
});

describe("connection floods", () => {
  test("200 concurrent REST connections and 200 concurrent admin connections all answered correctly", async () => {
    const node = await startNode(tmpDir());
    try {
      const rest = restOf(node);
      // some blobs to GET
      const seeded = new Map<string, Uint8Array>();
      for (let i = 0; i < 20; i++) {
        const body = pseudoRandomBytes(i + 1, 1000 + i * 37);
        seeded.set(`seed-${i}`, body);
        expect((await fetch(`${node.url}/v1/blobs/seed-${i}`, { method: "PUT", body })).status).toBe(201);
      }
      const restJobs = Array.from({ length: 200 }, async (_, i) => {
        const kind = i % 3;
        if (kind === 0) {
          const r = await rawRequest(rest, "GET", "/v1/status", undefined, 10_000);
          expect(r.status).toBe(200);
          expect(JSON.parse(r.text.slice(r.text.indexOf("\r\n\r\n") + 4)).blob_count).toBeGreaterThanOrEqual(20);
        } else if (kind === 1) {
          const body = pseudoRandomBytes(1000 + i, 512 + i);
          const r = await rawRequest(rest, "PUT", `/v1/blobs/flood-${i}`, body, 10_000);
          expect(r.status).toBe(201);
        } else {
          const id = `seed-${i % 20}`;
          const r = await fetch(`${node.url}/v1/blobs/${id}`, { headers: { connection: "close" } });
          expect(r.status).toBe(200);
          expect(sha256(await r.arrayBuffer())).toBe(sha256(seeded.get(id)!));
        }
        return kind;
      });
      const adminJobs = Array.from({ length: 200 }, async () => {
        const r = await rawRequest(adminOf(node), "GET", "/v1/health", undefined, 10_000);
        expect(r.status).toBe(200);
        const body = JSON.parse(r.text.slice(r.text.indexOf("\r\n\r\n") + 4));
        expect(body).toMatchObject({ ok: true, pid: node.proc.pid });
      });
      const results = await Promise.allSettled([...restJobs, ...adminJobs]);
      const failed = results.filter((r) => r.status === "rejected");
      if (failed.length) console.log("[abuse] flood failures:", failed.slice(0, 5).map((f) => String((f as PromiseRejectedResult).reason)));
      expect(failed).toHaveLength(0);
      // every PUT landed, byte for byte
      for (let i = 1; i < 200; i += 3) {
        const r = await fetch(`${node.url}/v1/blobs/flood-${i}`);
        expect(r.status).toBe(200);
        expect(sha256(await r.arrayBuffer())).toBe(sha256(pseudoRandomBytes(1000 + i, 512 + i)));
      }
      const s = await getJson(`${node.url}/v1/status`);
      expect(s.blob_count).toBe(20 + 67);
      await expectAlive(node);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 30_000);
});

describe("garbage on the REST port", () => {
  test("random binary, a 100 KB URL, invalid methods, header floods: error or close, and the node carries on", async () => {
    const node = await startNode(tmpDir());
    try {
      const rest = restOf(node);
      const manyHeaders = Array.from({ length: 10_000 }, (_, i) => `X-H${i}: v\r\n`).join("");
      const cases: { name: string; payload: string | Uint8Array }[] = [
        { name: "random binary 4 KB", payload: pseudoRandomBytes(7, 4096) },
        { name: "random binary 1 MB", payload: pseudoRandomBytes(8, 1 << 20) },
        { name: "NUL bytes", payload: new Uint8Array(2048) },
        { name: "100 KB URL", payload: `GET /v1/blobs/${"a".repeat(100 * 1024)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n` },
        { name: "100 KB URL, status", payload: `GET /v1/status?${"q".repeat(100 * 1024)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n` },
        { name: "invalid method FROB", payload: "FROB /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" },
        { name: "invalid method with spaces", payload: "G E T /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" },
        { name: "method of control bytes", payload: "\x01\x02\x03 /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" },
        { name: "lowercase get", payload: "get /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" },
        { name: "bad version", payload: "GET /v1/status HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n" },
        { name: "no version", payload: "GET /v1/status\r\n\r\n" },
        { name: "10,000 headers", payload: `GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${manyHeaders}\r\n` },
        { name: "1 MB header", payload: `GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ${"b".repeat(1 << 20)}\r\n\r\n` },
        { name: "1 MB of small headers", payload: `GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${"X-A: 0123456789abcdef\r\n".repeat(48_000)}\r\n` },
        { name: "negative Content-Length", payload: "PUT /v1/blobs/neg HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\nabc" },
        { name: "two Content-Lengths", payload: "PUT /v1/blobs/two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde" },
        { name: "bad chunked", payload: "PUT /v1/blobs/chk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n" },
        { name: "header without colon", payload: "GET /v1/status HTTP/1.1\r\nHost: x\r\nNoColonHere\r\nConnection: close\r\n\r\n" },
      ];
      const outcomes: string[] = [];
      for (const c of cases) {
        const r = await rawExchange(rest, c.payload, { timeoutMs: 5000, untilStatus: true });
        const outcome = r.status !== undefined ? String(r.status) : r.closed ? "closed" : "no answer";
        outcomes.push(`${c.name}: ${outcome} (${Math.round(r.ms)} ms)`);
        // an error status, or the connection closed; never a hang, never a success for a bad request
        expect(r.status === undefined ? r.closed : r.status >= 400).toBe(true);
        expect(node.proc.exitCode).toBeNull();
        expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      }
      console.log(`[abuse] garbage outcomes:\n  ${outcomes.join("\n  ")}`);
      // none of the malformed PUTs stored anything
      for (const id of ["neg", "two", "chk"]) expect((await fetch(`${node.url}/v1/blobs/${id}`)).status).toBe(404);
      // and all at once, in parallel with good traffic
      const bad = cases.map((c) => rawExchange(rest, c.payload, { timeoutMs: 5000, untilStatus: true }));
      const good = Array.from({ length: 20 }, () => fetch(`${node.url}/v1/status`).then((r) => r.status));
      expect(await Promise.all(good)).toEqual(Array(20).fill(200));
      await Promise.all(bad);
      await expectAlive(node);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 40_000);
});

describe("odd blob ids", () => {
  test("path traversal, odd encodings, unicode and overlong ids are refused and touch no file", async () => {
    const node = await startNode(tmpDir());
    try {
      const rest = restOf(node);
      const paths = [
        "/v1/blobs/..%2F..%2Fetc",
        "/v1/blobs/..%2f..%2f..%2fetc%2fpasswd",
        "/v1/blobs/%2e%2e",
        "/v1/blobs/%2e%2e%2f%2e%2e%2fcairn.db",
        "/v1/blobs/../../etc/passwd",
        "/v1/blobs/..",
        "/v1/blobs/a/b",
        "/v1/blobs/a/../../x",
        "/v1/blobs/%2Ftmp%2Fevil",
        "/v1/blobs/a%00b",
        "/v1/blobs/%",
        "/v1/blobs/%zz",
        "/v1/blobs/a%5Cb",
        "/v1/blobs/a\\b",
        "/v1/blobs/%C3%A9t%C3%A9",
        "/v1/blobs/\u00c3\u00a9t\u00c3\u00a9", // raw UTF-8 bytes of "été" on the wire (latin1 string)
        "/v1/blobs/%F0%9F%92%A9",
        "/v1/blobs/%EF%BC%8E%EF%BC%8E", // fullwidth dots
        "/v1/blobs/%C0%AE%C0%AE", // overlong UTF-8 dots
        `/v1/blobs/${"x".repeat(10_000)}`,
        `/v1/blobs/${"x".repeat(257)}`,
        "/v1/blobs/a%3Fb%2F..%2F..",
        "/v1/blobs/a%20b",
      ];
      const seen: string[] = [];
      const wrong: string[] = [];
      for (const p of paths) {
        for (const method of ["PUT", "GET", "DELETE"]) {
          const r = await rawRequest(rest, method, p, method === "PUT" ? "evil" : undefined);
          seen.push(`${method} ${p.length > 60 ? `${p.slice(0, 40)}…(${p.length})` : p} -> ${r.status ?? (r.closed ? "closed" : "none")}`);
          if (!(r.status === undefined ? r.closed : [400, 404].includes(r.status))) wrong.push(`${method} ${p} -> ${r.status}: ${r.text.slice(0, 300)}`);
        }
      }
      expect(wrong).toEqual([]);
      // the empty id: the blob route with id "" (GET /v1/blobs, without the slash, lists)
      for (const method of ["PUT", "GET", "HEAD", "DELETE"]) {
        const r = await rawRequest(rest, method, "/v1/blobs/", method === "PUT" ? "evil" : undefined);
        seen.push(`${method} /v1/blobs/ -> ${r.status}`);
        expect(r.status).toBe(400);
      }
      // a raw space in the target is not a request line at all: Bun's parser refuses it
      const spaced = await rawRequest(rest, "PUT", "/v1/blobs/a b", "evil");
      expect(spaced.status === undefined ? spaced.closed : spaced.status >= 400).toBe(true);
      // curl --path-as-is agrees
      const curl = Bun.spawnSync(["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data", "evil", `${node.url}/v1/blobs/../../../../tmp/cairn-evil`]);
      expect(["400", "404"]).toContain(curl.stdout.toString());
      console.log(`[abuse] odd ids:\n  ${seen.join("\n  ")}`);
      const s = await getJson(`${node.url}/v1/status`);
      expect(s.blob_count).toBe(0);
      expect(readdirSync(node.storage).sort()).toEqual(expect.arrayContaining(["cairn.db", "cairn.lock"]));
      for (const f of readdirSync(node.storage)) expect(["cairn.db", "cairn.db-wal", "cairn.db-shm", "cairn.lock"]).toContain(f);
      expect(readdirSync(node.dir).sort()).toEqual(["admin.socket", "cairn.yaml", "db"]);
      expect(await Bun.file("/tmp/cairn-evil").exists()).toBe(false);
      await expectAlive(node);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });
});

describe("memory under abuse", () => {
  test("2,000 oversized PUTs (1,500 declared, 500 chunked) and 2,000 garbage connections leave RSS growth bounded", async () => {
    const node = await startNode(tmpDir(), { extraYaml: "max_blob_size: 65536\n" });
    try {
      const rest = restOf(node);
      const big = pseudoRandomBytes(99, 1 << 20);
      // warm up the allocator and the code paths first
      await pool(100, 25, (i) => rawRequest(rest, "PUT", `/v1/blobs/warm-${i}`, big, 10_000));
      await pool(100, 25, (i) => rawExchange(rest, pseudoRandomBytes(i + 1, 1024), { timeoutMs: 5000, untilStatus: true }));
      const before = await settledRssKiB(node.proc.pid);
      const t0 = performance.now();
      const statuses = new Map<string, number>();
      const count = (k: string) => statuses.set(k, (statuses.get(k) ?? 0) + 1);
      await pool(2000, 50, async (i) => {
        if (i % 4 === 3) {
          // chunked, no declared length: the limit is only found while the body streams in
          const chunks: (string | Uint8Array)[] = [`PUT /v1/blobs/big-${i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`];
          for (let off = 0; off < big.byteLength; off += 65536) chunks.push("10000\r\n", big.subarray(off, off + 65536), "\r\n");
          chunks.push("0\r\n\r\n");
          const r = await rawExchange(rest, chunks, { timeoutMs: 10_000 });
          count(`chunked put ${r.status ?? (r.closed ? "closed" : "none")}`);
          return;
        }
        const r = await rawRequest(rest, "PUT", `/v1/blobs/big-${i}`, big, 10_000);
        count(`put ${r.status ?? (r.closed ? "closed" : "none")}`);
      });
      const during = await vmRssKiB(node.proc.pid);
      await pool(2000, 50, async (i) => {
        const r = await rawExchange(rest, pseudoRandomBytes(10_000 + i, 1024 + (i % 7) * 1000), { timeoutMs: 5000, untilStatus: true });
        count(`garbage ${r.status ?? (r.closed ? "closed" : "none")}`);
      });
      const burstMs = performance.now() - t0;
      const after = await settledRssKiB(node.proc.pid);
      const growthMiB = (after - before) / 1024;
      console.log(
        `[abuse] RSS before ${(before / 1024).toFixed(1)} MiB, after PUTs ${(during / 1024).toFixed(1)} MiB, after settle ${(after / 1024).toFixed(1)} MiB, growth ${growthMiB.toFixed(1)} MiB; burst ${Math.round(burstMs)} ms; outcomes ${JSON.stringify(Object.fromEntries(statuses))}`,
      );
      expect(statuses.get("put 413")).toBe(1500);
      expect((statuses.get("chunked put 413") ?? 0) + (statuses.get("chunked put closed") ?? 0)).toBe(500);
      // every garbage connection got an error status (400, or 505 when the bytes parse as a request line) or was closed
      const garbageOk = [...statuses].filter(([k]) => k.startsWith("garbage ") && (k === "garbage closed" || Number(k.slice(8)) >= 400)).reduce((n, [, v]) => n + v, 0);
      expect(garbageOk).toBe(2000);
      expect(growthMiB).toBeLessThan(64);
      expect((await getJson(`${node.url}/v1/status`)).blob_count).toBe(0);
      await expectAlive(node);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 90_000);
});

describe("admin socket mode at creation", () => {
  test("the first lstat of the socket, by a watcher started before the node, already shows srw-------", async () => {
    const dir = tmpDir();
    const port = freePort();
    const socket = join(dir, "admin.socket");
    // a separate process polls lstat in a busy loop and reports the first mode it sees
    const watcherSrc = `
      const { lstatSync } = require("node:fs");
      const p = process.argv.at(-1);
      const deadline = Date.now() + 15000;
      console.log("ready");
      let polls = 0;
      for (;;) {
        polls++;
        let st;
        try { st = lstatSync(p); } catch { if (Date.now() > deadline) { console.log("timeout " + polls); process.exit(1); } continue; }
        console.log(JSON.stringify({ mode: st.mode, socket: st.isSocket(), polls }));
        process.exit(0);
      }`;
    const watcher = Bun.spawn(["bun", "-e", watcherSrc, socket], { stdout: "pipe", stderr: "pipe" });
    const reader = watcher.stdout.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toStartWith("ready");
    let rest = first.slice("ready\n".length);
    const configFile = writeConfig(dir, port);
    const node = await startNodeWithConfig(dir, configFile, `http://127.0.0.1:${port}`);
    try {
      expect(await watcher.exited).toBe(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      const seen = JSON.parse(rest.trim()) as { mode: number; socket: boolean; polls: number };
      console.log(`[abuse] watcher's first lstat of the socket: mode ${(seen.mode & 0o7777).toString(8)}, socket ${seen.socket}, after ${seen.polls} polls`);
      expect(seen.socket).toBe(true);
      expect(seen.mode & 0o777).toBe(0o600);
    } finally {
      watcher.kill();
      expect(await node.stop()).toBe(0);
    }
  });
});
