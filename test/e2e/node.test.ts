/** The node as an operator drives it: the compiled binary, a config file, curl-like requests. */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, existsSync, lstatSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, getJson, pseudoRandomBytes, runCairn, sha256, sqlite3, startNode, startNodeWithConfig, writeConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(60_000);

describe("REST API", () => {
  test("1,000 blobs of mixed sizes round-trip byte for byte", async () => {
    const node = await startNode(tmpDir());
    try {
      const sizes = [0, 1, 100, 4095, 4096, 4097, 65536, 300_000, 1_048_576, 3_000_001];
      const expected = new Map<string, string>();
      const ids = Array.from({ length: 1000 }, (_, i) => `blob-${i}`);
      // 16 requests in flight at a time
      for (let i = 0; i < ids.length; i += 16) {
        await Promise.all(
          ids.slice(i, i + 16).map(async (id, j) => {
            const n = i + j;
            const body = pseudoRandomBytes(n + 1, sizes[n % sizes.length]!);
            expected.set(id, sha256(body));
            const r = await fetch(`${node.url}/v1/blobs/${id}`, { method: "PUT", body });
            expect(r.status).toBe(201);
          }),
        );
      }
      for (let i = 0; i < ids.length; i += 16) {
        await Promise.all(
          ids.slice(i, i + 16).map(async (id) => {
            const r = await fetch(`${node.url}/v1/blobs/${id}`);
            expect(r.status).toBe(200);
            expect(sha256(await r.arrayBuffer())).toBe(expected.get(id)!);
          }),
        );
      }
      const status = await getJson(`${node.url}/v1/status`);
      expect(status.blob_count).toBe(1000);
      expect(status.blob_bytes).toBe(ids.reduce((s, _, n) => s + sizes[n % sizes.length]!, 0));
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 180_000);

  test("status codes of every route", async () => {
    const node = await startNode(tmpDir(), { extraYaml: "max_blob_size: 1000\n" });
    const u = node.url;
    try {
      expect((await fetch(`${u}/v1/blobs/a`, { method: "PUT", body: "one" })).status).toBe(201);
      expect((await fetch(`${u}/v1/blobs/a`, { method: "PUT", body: "two!" })).status).toBe(204);
      const head = await fetch(`${u}/v1/blobs/a`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe("4");
      expect(await (await fetch(`${u}/v1/blobs/a`)).text()).toBe("two!");
      expect((await fetch(`${u}/v1/blobs/zz`)).status).toBe(404);
      expect((await fetch(`${u}/v1/blobs/zz`, { method: "HEAD" })).status).toBe(404);
      expect((await fetch(`${u}/v1/blobs/zz`, { method: "DELETE" })).status).toBe(404);
      expect((await fetch(`${u}/v1/blobs/a`, { method: "DELETE" })).status).toBe(204);
      expect((await fetch(`${u}/v1/blobs/a`)).status).toBe(404);
      // ids: charset and length
      expect((await fetch(`${u}/v1/blobs/${"x".repeat(256)}`, { method: "PUT", body: "k" })).status).toBe(201);
      expect((await fetch(`${u}/v1/blobs/${"x".repeat(257)}`, { method: "PUT", body: "k" })).status).toBe(400);
      expect((await fetch(`${u}/v1/blobs/a%20b`, { method: "PUT", body: "k" })).status).toBe(400);
      expect((await fetch(`${u}/v1/blobs/a%2Fb`)).status).toBe(400);
      expect((await fetch(`${u}/v1/blobs/a:b`)).status).toBe(400);
      // size limit: exactly max is fine; one more byte is 413, declared or streamed
      expect((await fetch(`${u}/v1/blobs/max`, { method: "PUT", body: new Uint8Array(1000) })).status).toBe(201);
      const tooBig = await fetch(`${u}/v1/blobs/big`, { method: "PUT", body: new Uint8Array(1001) });
      expect(tooBig.status).toBe(413);
      for (let i = 0; i < 5; i++) {
        const curl = Bun.spawn(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "@-", `${u}/v1/blobs/huge`], {
          stdin: new Uint8Array(3_000_000),
          stdout: "pipe",
        });
        expect(await new Response(curl.stdout).text()).toBe("413");
      }
      const chunked = new ReadableStream({
        start(c) {
          for (let i = 0; i < 5; i++) c.enqueue(new Uint8Array(300));
          c.close();
        },
      });
      expect((await fetch(`${u}/v1/blobs/big2`, { method: "PUT", body: chunked })).status).toBe(413);
      expect((await fetch(`${u}/v1/blobs/big`)).status).toBe(404);
      expect((await fetch(`${u}/v1/blobs/big2`)).status).toBe(404);
      // other routes
      expect((await fetch(`${u}/v1/blobs/a`, { method: "POST", body: "x" })).status).toBe(405);
      expect((await fetch(`${u}/nope`)).status).toBe(404);
      expect((await fetch(`${u}/v1/blobs?limit=0`)).status).toBe(400);
      expect((await fetch(`${u}/v1/blobs?prefix=a/b`)).status).toBe(400);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("list pages through ids in order", async () => {
    const node = await startNode(tmpDir());
    try {
      for (const id of ["c", "a", "b2", "b1", "b3"]) await fetch(`${node.url}/v1/blobs/${id}`, { method: "PUT", body: id });
      const p1 = await getJson(`${node.url}/v1/blobs?prefix=b&limit=2`);
      expect(p1).toEqual({ blobs: [{ id: "b1", size: 2 }, { id: "b2", size: 2 }], next_after: "b2" });
      const p2 = await getJson(`${node.url}/v1/blobs?prefix=b&limit=2&after=b2`);
      expect(p2).toEqual({ blobs: [{ id: "b3", size: 2 }], next_after: null });
      const all = await getJson(`${node.url}/v1/blobs`);
      expect(all.blobs.map((b: { id: string }) => b.id)).toEqual(["a", "b1", "b2", "b3", "c"]);
    } finally {
      await node.stop();
    }
  });

  test("status and metrics", async () => {
    const node = await startNode(tmpDir());
    try {
      await fetch(`${node.url}/v1/blobs/a`, { method: "PUT", body: "12345" });
      const s = await getJson(`${node.url}/v1/status`);
      expect(s).toMatchObject({ blob_count: 1, blob_bytes: 5, version: expect.any(String), node_id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
      expect(s.db_size_bytes).toBeGreaterThan(0);
      expect(s.db_page_size).toBe(8192);
      expect(typeof s.wal_size_bytes).toBe("number");
      expect(s).toHaveProperty("last_checkpoint");
      const m = await (await fetch(`${node.url}/metrics`)).text();
      for (const name of ["cairn_http_requests_total", "cairn_http_request_bytes_total", "cairn_db_size_bytes", "cairn_wal_size_bytes", "cairn_wal_checkpoints_total", "cairn_blobs 1"]) {
        expect(m).toContain(name);
      }
      expect(m).toMatch(/cairn_http_requests_total\{method="PUT",route="blob",status="201"\} 1/);
    } finally {
      await node.stop();
    }
  });
});

describe("durability and lifecycle", () => {
  test("every acknowledged PUT survives kill -9", async () => {
    const dir = tmpDir();
    const port = freePort();
    const node = await startNode(dir, { port });
    const acked = new Map<string, string>();
    let stop = false;
    // four writers, each PUTting as fast as acknowledgements come back
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; !stop; i++) {
        const body = pseudoRandomBytes(w * 100_000 + i + 1, 1000 + ((i * 7919) % 50_000));
        try {
          const r = await fetch(`${node.url}/v1/blobs/w${w}-${i}`, { method: "PUT", body });
          if (r.status === 201) acked.set(`w${w}-${i}`, sha256(body));
        } catch {
          return; // the node died under us: this write was never acknowledged
        }
      }
    });
    // kill it once plenty of writes were acknowledged, with more in flight
    await waitFor(() => acked.size >= 500, { what: "500 acknowledged PUTs", timeoutMs: 60_000, detail: () => `${acked.size} so far` });
    await node.kill9();
    stop = true;
    await Promise.all(writers);
    expect(acked.size).toBeGreaterThan(50);
    expect(sqlite3(join(dir, "db", "cairn.db"), "PRAGMA integrity_check")).toBe("ok");
    const again = await startNodeWithConfig(dir, node.configFile, node.url);
    try {
      for (const [id, digest] of acked) {
        const r = await fetch(`${again.url}/v1/blobs/${id}`);
        expect(r.status).toBe(200);
        expect(sha256(await r.arrayBuffer())).toBe(digest);
      }
      const s = await getJson(`${again.url}/v1/status`);
      expect(s.blob_count).toBeGreaterThanOrEqual(acked.size);
    } finally {
      expect(await again.stop()).toBe(0);
    }
  }, 120_000);

  test("SIGTERM exits 0 and leaves a database sqlite3 reports ok on, WAL folded in, socket gone", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    for (let i = 0; i < 50; i++) await fetch(`${node.url}/v1/blobs/k${i}`, { method: "PUT", body: pseudoRandomBytes(i + 1, 20_000) });
    expect(await node.stop("SIGTERM")).toBe(0);
    const db = join(dir, "db", "cairn.db");
    expect(sqlite3(db, "PRAGMA integrity_check")).toBe("ok");
    expect(sqlite3(db, "SELECT count(*) FROM blobs")).toBe("50");
    expect(sqlite3(db, "SELECT blob_count FROM totals")).toBe("50");
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(existsSync(node.socket)).toBe(false);
    expect(node.logs()).toContain("node stopped cleanly");
  });

  test("db_page_size: a new database gets it (default 8192, the store's block); an existing one keeps its own and the log says so", async () => {
    const dir = tmpDir();
    const first = await startNode(dir, { extraYaml: "db_page_size: 4096\n" });
    expect((await fetch(`${first.url}/v1/blobs/a`, { method: "PUT", body: pseudoRandomBytes(1, 10_000) })).status).toBe(201);
    expect(await first.stop()).toBe(0);
    const db = join(dir, "db", "cairn.db");
    expect(sqlite3(db, "PRAGMA page_size")).toBe("4096");
    expect(first.logs()).not.toContain("has pages of");
    const again = await startNode(dir);
    expect((await fetch(`${again.url}/v1/blobs/a`)).status).toBe(200);
    expect((await getJson(`${again.url}/v1/status`)).db_page_size).toBe(4096);
    expect(await again.stop()).toBe(0);
    expect(sqlite3(db, "PRAGMA page_size")).toBe("4096");
    // the default asked for more: the operator is told what the smaller pages cost
    expect(again.logs()).toContain("has pages of 4096 bytes, smaller than a checkpoint's blocks (8192)");
    const asked = await startNode(dir, { extraYaml: "db_page_size: 16384\n" });
    expect(await asked.stop()).toBe(0);
    expect(asked.logs()).toContain("has pages of 4096 bytes; db_page_size (16384) applies only to a database created from now on");

    const fresh = tmpDir();
    const plain = await startNode(fresh);
    expect(await plain.stop()).toBe(0);
    expect(plain.logs()).not.toContain("has pages of");
    expect(sqlite3(join(fresh, "db", "cairn.db"), "PRAGMA page_size")).toBe("8192");
  });

  test("SIGTERM lets an in-flight PUT finish: it is acknowledged and kept", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    const body = pseudoRandomBytes(42, 256 * 1024);
    // a raw connection, so that the test knows when the node holds the request: with
    // "Expect: 100-continue" it answers "100 Continue" once it has the headers and wants the body
    let received = "";
    let closed = false;
    let drained: (() => void) | undefined;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(node.url).port),
      socket: {
        data(_s, d) {
          received += Buffer.from(d).toString("latin1");
        },
        drain() {
          drained?.();
        },
        close() {
          closed = true;
        },
        error() {
          closed = true;
        },
      },
    });
    const send = async (data: Uint8Array) => {
      let rest = data;
      while (rest.length > 0) {
        const n = sock.write(rest);
        if (n < 0) throw new Error("the connection to the node closed while sending");
        rest = rest.subarray(n);
        if (rest.length > 0) await new Promise<void>((r) => (drained = r));
      }
    };
    const statuses = () => [...received.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
    await send(Buffer.from(`PUT /v1/blobs/slow HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`, "latin1"));
    await waitFor(() => statuses().includes(100), { what: "the node to ask for the PUT's body (100 Continue)", detail: () => received });
    // half the body, then SIGTERM mid-request; the rest only once the node is shutting down
    await send(body.subarray(0, body.length / 2));
    node.proc.kill("SIGTERM");
    await waitFor(() => node.logs().includes("SIGTERM received: shutting down"), { what: "the node to begin its shutdown", detail: () => node.logs() });
    await send(body.subarray(body.length / 2));
    await waitFor(() => closed || statuses().some((st) => st !== 100), { what: "the reply to the PUT", detail: () => received });
    sock.end();
    expect(statuses().filter((st) => st !== 100)).toEqual([201]);
    expect(await node.proc.exited).toBe(0);
    expect(sqlite3(join(dir, "db", "cairn.db"), "SELECT size FROM blobs WHERE id = 'slow'")).toBe(String(body.length));
  });

  test("SIGINT also shuts down cleanly", async () => {
    const node = await startNode(tmpDir());
    expect(await node.stop("SIGINT")).toBe(0);
  });

  test("a second node on the same storage directory is refused at once, naming the pid", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    try {
      // same storage, different port and socket: only the lock stands in the way
      const cfg = join(dir, "second.yaml");
      writeFileSync(cfg, `storage_path: ./db\nadmin_socket_path: ./second.socket\nrest_api_address: 127.0.0.1:${freePort()}\n`);
      // a node that waited for the lock would run until killed (the first one holds it to the
      // end of this test): exit 1 on its own, well before that, is "at once"
      const started = Date.now();
      const r = runCairn(["run", "--config", cfg], { timeoutMs: 60_000 });
      expect(r.code).toBe(1);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(r.stderr).toContain(`a node is running on ${join(dir, "db")} (pid ${node.proc.pid})`);
      expect(r.stderr.trim().split("\n").at(-1)).toStartWith("error: ");
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("a REST address already in use fails with exit 1 and releases everything", async () => {
    const dir = tmpDir();
    const blocker = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      writeConfig(dir, blocker.port);
      const r = runCairn(["run", "--config", join(dir, "cairn.yaml")]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${blocker.port}`);
      expect(existsSync(join(dir, "admin.socket"))).toBe(false);
    } finally {
      blocker.stop(true);
    }
    // the lock was released: a node starts on the same directory
    const node = await startNode(dir);
    expect(await node.stop()).toBe(0);
  });
});

describe("admin socket", () => {
  test("created srw------- (0600), answers curl, and log-level takes effect at once", async () => {
    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: "wal_checkpoint_interval_secs: 0.1\nwal_checkpoint_threshold_bytes: 4096\n" });
    try {
      const st = lstatSync(node.socket);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
      const curl = Bun.spawnSync(["curl", "-s", "--unix-socket", node.socket, "http://localhost/v1/health"]);
      expect(JSON.parse(curl.stdout.toString())).toMatchObject({ ok: true, pid: node.proc.pid });

      // at info, the WAL checkpoints (logged at debug) are silent: one runs...
      const walRuns = async () => (await getJson(`${node.url}/v1/status`)).wal_checkpoints.runs as number;
      const runsBefore = await walRuns();
      await fetch(`${node.url}/v1/blobs/a`, { method: "PUT", body: new Uint8Array(50_000) });
      await waitFor(async () => (await walRuns()) > runsBefore, { what: "a WAL checkpoint after the PUT" });
      const r = runCairn(["local-admin", "--socket-path", node.socket, "log-level", "--level", "debug"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Log level set to debug (was info)");
      // ...and nothing of it is in the log before the (info) line of the level change, which the
      // log carries after anything the node wrote before it
      const changed = "log level changed from info to debug";
      await waitFor(() => node.logs().includes(changed), { what: "the node to log the level change", detail: () => node.logs() });
      expect(node.logs().slice(0, node.logs().indexOf(changed))).not.toContain("DEBUG");
      await fetch(`${node.url}/v1/blobs/b`, { method: "PUT", body: new Uint8Array(50_000) });
      await waitFor(() => /DEBUG WAL checkpoint/.test(node.logs()), { what: "a WAL checkpoint logged at debug", detail: () => node.logs() });
      expect(node.logs()).toMatch(/DEBUG WAL checkpoint/);
      const back = runCairn(["local-admin", "--socket-path", node.socket, "log-level", "--level", "warn"]);
      expect(back.code).toBe(0);
      const bad = runCairn(["local-admin", "--socket-path", node.socket, "log-level", "--level", "loud"]);
      expect(bad.code).toBe(2);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("malformed, oversized and unknown requests get error replies and the node carries on", async () => {
    const node = await startNode(tmpDir());
    const ask = (args: string[]) => Bun.spawnSync(["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", node.socket, ...args]).stdout.toString();
    try {
      expect(ask(["-X", "PUT", "-d", "{not json", "http://x/v1/log-level"])).toEndWith("400");
      expect(ask(["-X", "PUT", "-d", '{"level":"loud"}', "http://x/v1/log-level"])).toEndWith("400");
      expect(ask(["http://x/v1/nothing-here"])).toEndWith("404");
      const huge = join(node.dir, "huge.json");
      writeFileSync(huge, `{"level":"${"x".repeat(200_000)}"}`);
      expect(ask(["-X", "PUT", "--data-binary", `@${huge}`, "http://x/v1/log-level"])).toEndWith("413");
      // garbage bytes straight onto the socket; the node has dealt with them once it answers
      // or closes the connection
      let answered = false;
      const garbage = await Bun.connect({
        unix: node.socket,
        socket: {
          data() {
            answered = true;
          },
          close() {
            answered = true;
          },
          error() {
            answered = true;
          },
        },
      });
      garbage.write(new Uint8Array(4096).fill(0xfe));
      await waitFor(() => answered, { what: "the admin socket to answer or close the garbage connection" });
      garbage.end();
      expect(ask(["http://x/v1/health"])).toEndWith("200");
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("a stale socket left by a killed node is replaced; any other file at the path is refused", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    await node.kill9();
    expect(lstatSync(node.socket).isSocket()).toBe(true);
    const again = await startNodeWithConfig(dir, node.configFile, node.url);
    expect(lstatSync(again.socket).mode & 0o777).toBe(0o600);
    expect(await again.stop()).toBe(0);

    writeFileSync(node.socket, "not a socket");
    const r = runCairn(["run", "--config", node.configFile]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("exists and is not a socket; refusing to replace it");
    expect(Bun.file(node.socket).size).toBe("not a socket".length);
  });

  test("local-admin against a missing socket says so", () => {
    const r = runCairn(["local-admin", "--socket-path", "/tmp/cairn-no-such.sock", "log-level", "--level", "info"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no admin socket at /tmp/cairn-no-such.sock");
  });
});

describe("command line", () => {
  test("--help lists the commands", () => {
    const r = runCairn(["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("run");
    expect(r.stdout).toContain("local-admin");
    expect(r.stdout).not.toContain("\u001b["); // no colour codes when not a terminal
    expect(runCairn(["local-admin", "--help"]).stdout).toContain("--socket-path");
  });

  test("bad usage exits 2 with one line", () => {
    for (const args of [["frobnicate"], ["run", "--confg", "x"], ["run", "extra"], ["local-admin", "log-level", "--level", "info"]]) {
      const r = runCairn(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toStartWith("error: ");
    }
  });

  test("a bad config exits 2 naming the key and the value", () => {
    const dir = tmpDir();
    const cfg = join(dir, "bad.yaml");
    writeFileSync(cfg, "storage_path: ./db\ncheckpoint_config:\n  max_db_checkpoints: two\n");
    const r = runCairn(["run", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`checkpoint_config.max_db_checkpoints: expected a whole number >= 0, got "two"`);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(existsSync(join(dir, "db"))).toBe(false);
    const missing = runCairn(["run", "--config", join(dir, "nope.yaml")]);
    expect(missing.code).toBe(2);
  });

  test("the binary runs on its own: copied elsewhere, no node_modules, no bun on PATH", async () => {
    const dir = tmpDir();
    const copy = join(dir, "cairn");
    await Bun.write(copy, Bun.file(join(import.meta.dir, "..", "..", "dist", "cairn")));
    chmodSync(copy, 0o755);
    const port = freePort();
    writeConfig(dir, port, "wal_checkpoint_threshold_bytes: 4096\n");
    const proc = Bun.spawn([copy, "run", "--config", join(dir, "cairn.yaml")], { cwd: dir, env: { PATH: "/nonexistent" }, stdout: "pipe", stderr: "pipe" });
    try {
      await waitFor(() => fetch(`http://127.0.0.1:${port}/v1/status`).then((r) => r.ok, () => false), { what: "the copied binary to serve /v1/status" });
      for (let i = 0; i < 20; i++) await fetch(`http://127.0.0.1:${port}/v1/blobs/k${i}`, { method: "PUT", body: new Uint8Array(8192) });
      // the WAL checkpoint worker is embedded in the binary and runs
      const runs = await waitFor(async () => (await getJson(`http://127.0.0.1:${port}/v1/status`)).wal_checkpoints.runs as number, {
        what: "a WAL checkpoint by the copied binary",
      });
      expect(runs).toBeGreaterThan(0);
    } finally {
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    }
  });

  test("with no --config it runs on the embedded default under ./cairn-data", async () => {
    const cwd = tmpDir();
    mkdirSync(cwd, { recursive: true });
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 7420, socket: { data() {} } });
    probe.stop(true); // 7420 is free: the default address can be tested
    const proc = Bun.spawn([join(import.meta.dir, "..", "..", "dist", "cairn"), "run"], { cwd, stdout: "pipe", stderr: "pipe" });
    try {
      await waitFor(() => fetch("http://127.0.0.1:7420/v1/status").then((r) => r.ok, () => false), { what: "the node to serve on 127.0.0.1:7420" });
      expect(existsSync(join(cwd, "cairn-data", "db", "cairn.db"))).toBe(true);
      expect(lstatSync(join(cwd, "cairn-data", "admin.socket")).isSocket()).toBe(true);
    } finally {
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    }
  });
});
