/**
 * Checkpoints in a remote store (an S3 prefix), against a real S3-protocol server (s3rver) on
 * 127.0.0.1 and the compiled binary: the node's background copy of each new checkpoint
 * (incremental, with remote retention), list/verify/restore of an s3:// location on a host
 * with nothing but the environment, an outage of the object store (local checkpoints go on,
 * the copy is retried and catches up), credentials never echoed, another node's prefix
 * refused, `checkpoint create --path s3://...`, and bad locations failing cleanly.
 *
 * s3rver runs inside this test process, so every command that talks to it is spawned
 * asynchronously (a blocking spawnSync would stall the server it waits for).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { decodeManifest, indexPath, packPath } from "../../src/store/format.ts";
import { readLeases } from "../../src/store/lease.ts";
import { S3Backend } from "../../src/store/s3/backend.ts";
import { checkpointStatus, createCheckpointAsync, deleteAll, listJson, type Listed, putAll } from "../helpers/checkpoint.ts";
import { BINARY, getJson, type NodeHandle, pseudoRandomBytes, sha256, sqlite3, startNode } from "../helpers/node.ts";
import { serveMismatches } from "../helpers/restore.ts";
import { addS3Credentials, getObject, listObjects, putObject, S3_BUCKET, type S3Server, startS3 } from "../helpers/s3.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(60_000);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run the binary without blocking this process (s3rver answers from here); killed after timeoutMs. */
async function cairn(args: string[], env: Record<string, string>, timeoutMs = 30_000, cwd?: string): Promise<Run> {
  const t0 = performance.now();
  const p = Bun.spawn([BINARY, ...args], { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code: p.signalCode ? null : code, stdout, stderr, ms: performance.now() - t0 };
}

/** `cairn local-admin --socket-path <node> ...`, asynchronously. */
function adminCli(node: NodeHandle, args: string[], timeoutMs = 60_000): Promise<Run> {
  return cairn(["local-admin", "--socket-path", node.socket, ...args], {}, timeoutMs);
}

/** `list-db-checkpoint LOCATION --json` (must succeed quietly). */
async function listRemote(location: string, env: Record<string, string>): Promise<Listed[]> {
  const r = await cairn(["list-db-checkpoint", location, "--json"], env);
  if (r.code !== 0 || r.stderr !== "") throw new Error(`list-db-checkpoint ${location} failed (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Listed[];
}

/** `verify-db-checkpoint LOCATION`: exit 0, and exactly `ids` reported intact (an empty or mistyped prefix also exits 0). */
async function expectVerified(location: string, env: Record<string, string>, ids: number[]): Promise<void> {
  const v = await cairn(["verify-db-checkpoint", location], env, 60_000);
  expect(v.stderr).toBe("");
  expect(v.code).toBe(0);
  expect([...v.stdout.matchAll(/^Checkpoint (\d+): OK \(\d+ blocks, /gm)].map((m) => Number(m[1]))).toEqual(ids);
}

// biome-ignore lint: tests read arbitrary fields
async function remoteOf(node: NodeHandle): Promise<any> {
  return (await checkpointStatus(node)).remote;
}

/** Wait until the node's remote copy is idle with `id` as the newest remote checkpoint; returns the status. */
// biome-ignore lint: tests read arbitrary fields
async function waitPushed(node: NodeHandle, id: number, timeoutMs = 60_000): Promise<any> {
  // biome-ignore lint: tests read arbitrary fields
  let r: any;
  await waitFor(
    async () => {
      r = await remoteOf(node);
      return r?.state === "idle" && r.last_pushed_id === id;
    },
    { what: `remote.last_pushed_id == ${id}`, timeoutMs, detail: () => `remote status: ${JSON.stringify(r)}\nnode log:\n${node.logs()}` },
  );
  return r;
}

/** The time (ms) of the first line of `log` that contains `text`, from its timestamp; undefined if none. */
function loggedAt(log: string, text: string): number | undefined {
  const line = log.split("\n").find((l) => l.includes(text));
  return line === undefined ? undefined : Date.parse(line.slice(0, line.indexOf(" ")));
}

async function metrics(node: NodeHandle): Promise<string> {
  return (await fetch(`${node.url}/metrics`)).text();
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`metric ${name} not found in:\n${text}`);
  return Number(m[1]);
}

/** Sum of sizes of a listing. */
const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

const remoteYaml = (url: string, extra = "") =>
  `checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 0\n  max_background_operations: 2\n  remote:\n    url: ${url}\n    max_remote_checkpoints: 2\n    retry_backoff_secs: 1\n${extra}`;

let s3: S3Server;
let s3Dir = "";
const nodes: NodeHandle[] = [];

beforeAll(async () => {
  s3Dir = tmpDirKept("cairn-s3-");
  s3 = await startS3(s3Dir);
});

afterAll(async () => {
  for (const n of nodes) if (n.proc.exitCode === null) await n.kill9();
  await s3?.stop();
  if (s3Dir) rmSync(s3Dir, { recursive: true, force: true });
});

/** A temp dir that outlives single tests (removed in afterAll). */
function tmpDirKept(prefix: string): string {
  return mkdtempSync(`/tmp/${prefix}`);
}

async function track(p: Promise<NodeHandle>): Promise<NodeHandle> {
  const n = await p;
  nodes.push(n);
  return n;
}

// ---- one node copying its checkpoints to s3://cairn-test/nodes/a ------------------------------

describe("a node copying its checkpoints to a remote store", () => {
  const PREFIX = "nodes/a";
  let url = "";
  let dir = "";
  let node: NodeHandle;
  let nodeId = "";
  /** id → sha256 of every blob the node acknowledged, as of now. */
  const expected = new Map<string, string>();
  const deleted: string[] = [];
  let firstPush = 0;
  let dbSizeAt2 = 0;

  const BLOBS = 3000;
  const body = (i: number, v = 1) => pseudoRandomBytes(v * 1_000_003 + i, 8000);

  async function put(blobs: { id: string; body: Uint8Array }[]) {
    await putAll(node.url, blobs);
    for (const b of blobs) expected.set(b.id, sha256(b.body));
  }
  async function del(ids: string[]) {
    await deleteAll(node.url, ids);
    for (const id of ids) {
      expected.delete(id);
      deleted.push(id);
    }
  }

  beforeAll(async () => {
    url = s3.url(PREFIX);
    dir = tmpDirKept("cairn-ra-");
    node = await track(startNode(dir, { extraYaml: remoteYaml(url), env: s3.env }));
    nodeId = (await getJson(`${node.url}/v1/status`)).node_id;
  });

  afterAll(async () => {
    if (node && node.proc.exitCode === null) expect(await node.stop()).toBe(0);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("after checkpoint 1 the node copies it to the remote, which lists and verifies", async () => {
    await put(Array.from({ length: BLOBS }, (_, i) => ({ id: `b${i}`, body: body(i) })));
    const status = await getJson(`${node.url}/v1/status`);
    expect(status.blob_bytes).toBe(BLOBS * 8000);
    expect(status.checkpoints.remote.url).toBe(url);

    expect(await createCheckpointAsync(node)).toBe(1);
    const r = await waitPushed(node, 1);
    expect(r.remote_checkpoints).toEqual([1]);
    expect(r.successes).toBeGreaterThanOrEqual(1);
    expect(r.failures).toBe(0);
    expect(r.consecutive_failures).toBe(0);
    expect(r.last_error).toBeNull();
    expect(Date.parse(r.last_success)).toBeGreaterThan(Date.now() - 60_000);
    // everything went up: at least the blob bytes (no compression), not wildly more than the store
    firstPush = r.last_uploaded_bytes;
    expect(firstPush).toBeGreaterThanOrEqual(BLOBS * 8000);
    expect(firstPush).toBeLessThanOrEqual(total(await listObjects(s3, `${PREFIX}/`)));
    expect(r.uploaded_bytes_total).toBe(firstPush);

    const listed = await cairn(["list-db-checkpoint", url], s3.env);
    expect(listed.stderr).toBe("");
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(/^Available checkpoints in s3:\/\/cairn-test\/nodes\/a:\n {2}Backup ID: 1, Size: /);
    expect(listed.stdout.match(/Backup ID:/g)?.length).toBe(1);
    const json = await listRemote(url, s3.env);
    expect(json.map((c) => [c.id, c.node_id, c.blob_count])).toEqual([[1, nodeId, BLOBS]]);

    await expectVerified(url, s3.env, [1]);

    // the same in /v1/status and /metrics
    const st = (await getJson(`${node.url}/v1/status`)).checkpoints.remote;
    expect(st.last_pushed_id).toBe(1);
    const m = await metrics(node);
    expect(metric(m, "cairn_remote_last_checkpoint_id")).toBe(1);
    expect(metric(m, 'cairn_remote_pushes_total{result="success"}')).toBe(r.successes);
    expect(metric(m, 'cairn_remote_pushes_total{result="failed"}')).toBe(0);
    expect(metric(m, "cairn_remote_consecutive_failures")).toBe(0);
    expect(metric(m, "cairn_remote_uploaded_bytes_total")).toBe(firstPush);
    expect(metric(m, "cairn_remote_last_success_timestamp_seconds")).toBeCloseTo(Date.parse(r.last_success) / 1000, 0);
  }, 90_000);

  test("after a ~1% change, checkpoint 2 uploads only a small fraction, and packs/ grows by exactly that", async () => {
    const packsBefore = await listObjects(s3, `${PREFIX}/packs/`);
    const manifestsBefore = await listObjects(s3, `${PREFIX}/manifests/`);
    // 15 deletes and 15 new blobs of 8 KB, spread over the file: ~1% of a 24 MB database
    await del(Array.from({ length: 15 }, (_, k) => `b${k * 197}`));
    await put(Array.from({ length: 15 }, (_, k) => ({ id: `c${k}`, body: body(k, 2) })));
    expect(await createCheckpointAsync(node)).toBe(2);
    const r = await waitPushed(node, 2);
    // the database's size: checkpoint 2's image (the file alone may still have its pages in the WAL)
    dbSizeAt2 = listJson(join(dir, "ckpt")).find((c) => c.id === 2)!.size_bytes;
    expect(dbSizeAt2).toBeGreaterThan(BLOBS * 8000);

    const second = r.last_uploaded_bytes;
    expect(second).toBeGreaterThan(0);
    expect(second).toBeLessThan(0.05 * firstPush);
    expect(second).toBeLessThan(0.05 * dbSizeAt2);
    expect(r.uploaded_bytes_total).toBe(firstPush + second);
    expect(r.remote_checkpoints).toEqual([1, 2]);

    const packsAfter = await listObjects(s3, `${PREFIX}/packs/`);
    const manifestsAfter = await listObjects(s3, `${PREFIX}/manifests/`);
    // nothing already there was rewritten or removed
    for (const [k, size] of packsBefore) expect([k, packsAfter.get(k)]).toEqual([k, size]);
    const newManifests = [...manifestsAfter.keys()].filter((k) => !manifestsBefore.has(k));
    expect(newManifests).toEqual([`${PREFIX}/manifests/0000000002.json`]);
    // what was uploaded: the new packs and indexes, then the manifest
    const growth = total(packsAfter) - total(packsBefore);
    expect(growth).toBeGreaterThan(0);
    expect(growth + manifestsAfter.get(newManifests[0]!)!).toBe(second);
  }, 90_000);

  test("restore from s3:// into an empty directory, with nothing but the environment, serves every blob acknowledged before checkpoint 2", async () => {
    // written after checkpoint 2: must not be in what is restored
    await putAll(node.url, [{ id: "late0", body: body(0, 3) }]);
    await deleteAll(node.url, ["b1"]);
    const target = tmpDir("cairn-rr-");
    const dbPath = join(target, "db");
    mkdirSync(dbPath);
    expect(readdirSync(dbPath)).toEqual([]);
    // as on a fresh host: no config, run from the empty target's folder, the S3 settings in the environment
    const r = await cairn(["restore", "--db-checkpoint-path", url, "--db-path", dbPath], s3.env, 60_000, target);
    if (r.code !== 0) throw new Error(`restore failed (exit ${r.code}):\n${r.stdout}${r.stderr}`);
    expect(sqlite3(join(dbPath, "cairn.db"), "PRAGMA integrity_check")).toBe("ok");
    expect(sqlite3(join(dbPath, "cairn.db"), "SELECT count(*) FROM blobs")).toBe(String(expected.size));

    const restored = await track(startNode(target));
    try {
      const st = await getJson(`${restored.url}/v1/status`);
      expect(st.node_id).toBe(nodeId);
      expect(st.blob_count).toBe(expected.size);
      expect(await serveMismatches(restored.url, expected, [...deleted, "late0"])).toEqual([]);
      // and b1, deleted after checkpoint 2, is still there
      const b1 = await fetch(`${restored.url}/v1/blobs/b1`);
      expect(sha256(await b1.arrayBuffer())).toBe(expected.get("b1")!);
    } finally {
      expect(await restored.stop()).toBe(0);
    }
    expected.delete("b1");
    deleted.push("b1");
    expected.set("late0", sha256(body(0, 3)));
  }, 60_000);

  test("restore from s3:// killed -9 after a saved step, then the same command: it does not fetch the done ranges again, byte-identical", async () => {
    const target = tmpDir("cairn-rk-");
    const whole = join(target, "whole");
    const resumed = join(target, "resumed");
    const args = (dbPath: string) => ["restore", "--db-checkpoint-path", url, "--db-path", dbPath, "--checkpoint-id", "2"];
    const r0 = await cairn(args(whole), s3.env, 60_000);
    expect(r0.code).toBe(0);
    // progress saved every 4 MiB; the restore kills itself right after the first save
    const small = { ...s3.env, CAIRN_TEST_FLUSH_EVERY_BYTES: String(4 * 1024 * 1024) };
    // the killed restore's lease stays behind, as a dead reader's would: short-lived here, so
    // that the owner's retention in the next test is not kept waiting for the default lifetime
    const killed = await cairn(args(resumed), { ...small, CAIRN_TEST_CRASH_POINT: "restore:progress-saved", CAIRN_READER_LEASE_SECS: "1" }, 60_000);
    expect(killed.code).toBeNull();
    expect([...(await listObjects(s3, `${PREFIX}/leases/`)).keys()]).toHaveLength(1);
    expect(existsSync(join(resumed, "cairn.db"))).toBe(false);
    const again = await cairn(args(resumed), small, 60_000);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/\b[1-9]\d* of \d+ ranges were already restored/);
    const a = await Bun.file(join(whole, "cairn.db")).bytes();
    const b = await Bun.file(join(resumed, "cairn.db")).bytes();
    expect(b.length).toBe(a.length);
    expect(Buffer.compare(a, b)).toBe(0);
    // the finished restore took its own lease away; the dead one's expires on its own
    const remote = new S3Backend({ url, endpoint: s3.endpoint, region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" });
    await waitFor(async () => (await readLeases(remote)).live.length === 0, { what: "no live reader lease", timeoutMs: 30_000 });
  }, 60_000);

  test("remote retention keeps the newest 2 of 4 and collects every pack they do not need", async () => {
    await putAll(node.url, [{ id: "d0", body: body(7, 4) }]);
    expect(await createCheckpointAsync(node)).toBe(3);
    await waitPushed(node, 3);
    // a pack of a push that failed before its manifest: needed by no checkpoint
    const stray = "ab0123456789abcdef0123456789abcd"; // a well-formed pack id
    await putObject(s3, `${PREFIX}/${packPath(stray)}`, "CAIRNPK1 stray");
    await putObject(s3, `${PREFIX}/${indexPath(stray)}`, "CAIRNIX1 stray");
    expect([...(await listObjects(s3, `${PREFIX}/packs/ab/`)).keys()].filter((k) => k.includes(stray)).length).toBe(2);
    await putAll(node.url, [{ id: "d1", body: body(8, 4) }]);
    expect(await createCheckpointAsync(node)).toBe(4);
    const r = await waitPushed(node, 4);
    expect(r.remote_checkpoints).toEqual([3, 4]);

    expect((await listRemote(url, s3.env)).map((c) => c.id)).toEqual([3, 4]);
    expect([...(await listObjects(s3, `${PREFIX}/manifests/`)).keys()].sort()).toEqual([
      `${PREFIX}/manifests/0000000003.json`,
      `${PREFIX}/manifests/0000000004.json`,
    ]);
    // local retention is separate: every checkpoint is still there
    expect(listJson(join(dir, "ckpt")).map((c) => c.id)).toEqual([1, 2, 3, 4]);
    await expectVerified(url, s3.env, [3, 4]);

    // packs/ holds exactly the packs and indexes the two remaining manifests name
    const needed = new Set<string>();
    for (const id of [3, 4]) {
      const key = `${PREFIX}/manifests/${String(id).padStart(10, "0")}.json`;
      const m = decodeManifest(await getObject(s3, key), key);
      for (const p of m.packs) needed.add(`${PREFIX}/${packPath(p)}`).add(`${PREFIX}/${indexPath(p)}`);
    }
    const packs = [...(await listObjects(s3, `${PREFIX}/packs/`)).keys()].sort();
    expect(packs).toEqual([...needed].sort());
    expect(packs.some((k) => k.includes(stray))).toBe(false);
    // the expired lease of the restore killed earlier was removed with them
    expect([...(await listObjects(s3, `${PREFIX}/leases/`)).keys()]).toEqual([]);
  }, 120_000);

  test("during an outage of the object store local checkpoints go on; the copy is retried after its back-off and catches up when it is back", async () => {
    const before = await remoteOf(node);
    const logFrom = node.logs().length;
    await s3.stop();
    let restarted = false;
    try {
      // two local checkpoints while the store is down: neither waits for the copy
      await putAll(node.url, [{ id: "e0", body: body(9, 5) }]);
      const c = await adminCli(node, ["checkpoint", "create"]);
      expect(c.stderr).toBe("");
      expect(c.code).toBe(0);
      expect(c.stdout).toMatch(/^Checkpoint 5 created in /);
      const run5 = (await checkpointStatus(node)).last;
      expect(run5.result.id).toBe(5);
      await putAll(node.url, [{ id: "e1", body: body(10, 5) }]);
      expect(await createCheckpointAsync(node)).toBe(6);
      expect(listJson(join(dir, "ckpt")).map((x) => x.id)).toEqual([1, 2, 3, 4, 5, 6]);

      // biome-ignore lint: tests read arbitrary fields
      let r: any;
      await waitFor(
        async () => {
          r = await remoteOf(node);
          return r.state === "waiting-retry";
        },
        { what: "the remote copy to fail", timeoutMs: 60_000 },
      );
      // checkpoint 5 was done while its copy was still trying: the copy failed (connection
      // refused is retried for seconds first) only after checkpoint 5 had finished
      const failedAt = loggedAt(node.logs().slice(logFrom), "copying checkpoints to s3://cairn-test/nodes/a failed");
      expect(failedAt).toBeGreaterThan(Date.parse(run5.finished));
      expect(r.failures).toBeGreaterThanOrEqual(1);
      expect(r.consecutive_failures).toBeGreaterThanOrEqual(1);
      expect(r.last_error).toMatch(/s3:\/\/cairn-test\/nodes\/a/);
      expect(r.last_pushed_id).toBe(4);
      expect(Date.parse(r.next_retry)).toBeGreaterThan(Date.parse(r.last_attempt));
      // the same through the CLI, /v1/status and /metrics
      const cli = await adminCli(node, ["checkpoint", "status", "--json"]);
      expect(cli.code).toBe(0);
      const j = JSON.parse(cli.stdout);
      expect(j.last_success.result.id).toBe(6);
      expect(j.remote.consecutive_failures).toBeGreaterThanOrEqual(1);
      expect(j.remote.last_error).toBeTruthy();
      const text = await adminCli(node, ["checkpoint", "status"]);
      expect(text.stdout).toMatch(/^Remote: s3:\/\/cairn-test\/nodes\/a: (last copy FAILED|copying now)/m);
      const st = (await getJson(`${node.url}/v1/status`)).checkpoints.remote;
      expect(st.failures).toBeGreaterThanOrEqual(1);
      const m = await metrics(node);
      expect(metric(m, "cairn_remote_consecutive_failures")).toBeGreaterThanOrEqual(1);
      expect(metric(m, 'cairn_remote_pushes_total{result="failed"}')).toBeGreaterThanOrEqual(1);
      expect(metric(m, "cairn_remote_last_checkpoint_id")).toBe(4);
      expect(node.logs()).toContain("copying checkpoints to s3://cairn-test/nodes/a failed");

      // back: nothing else happens on the node, so only the retry can catch up
      await s3.start();
      restarted = true;
      const t0 = performance.now();
      const ok = await waitPushed(node, 6);
      // by the retry after its back-off of 1 s (after what is left of an attempt under way,
      // seconds), not the default 5 minutes: well within 30 s
      expect(performance.now() - t0).toBeLessThan(30_000);
      expect(ok.consecutive_failures).toBe(0);
      expect(ok.last_error).toBeNull();
      expect(ok.next_retry).toBeNull();
      expect(ok.successes).toBe(before.successes + 1);
      expect(ok.remote_checkpoints).toEqual([5, 6]);
      expect(metric(await metrics(node), "cairn_remote_consecutive_failures")).toBe(0);
      expect((await listRemote(url, s3.env)).map((x) => x.id)).toEqual([5, 6]);
      await expectVerified(url, s3.env, [5, 6]);
    } finally {
      if (!restarted) await s3.start();
    }
  }, 180_000);

  test("a second node configured with the same remote prefix is refused, naming the owner; the remote is untouched", async () => {
    const before = await listObjects(s3, `${PREFIX}/`);
    const bDir = tmpDir("cairn-rb-");
    const b = await track(startNode(bDir, { extraYaml: remoteYaml(url), env: s3.env }));
    try {
      const bId = (await getJson(`${b.url}/v1/status`)).node_id;
      expect(bId).not.toBe(nodeId);
      await putAll(b.url, [{ id: "x", body: body(1, 6) }]);
      // its own local checkpoint succeeds
      expect(await createCheckpointAsync(b)).toBe(1);
      // biome-ignore lint: tests read arbitrary fields
      let r: any;
      await waitFor(
        async () => {
          r = await remoteOf(b);
          return r.failures >= 1 && r.state === "waiting-retry";
        },
        { what: "node B's copy to be refused", timeoutMs: 60_000 },
      );
      expect(r.last_error).toContain(nodeId);
      expect(r.last_error).toContain("refusing");
      expect(r.last_pushed_id).toBeNull();
      expect(r.uploaded_bytes_total).toBe(0);
      expect(b.logs()).toContain(`holds the checkpoints of node ${nodeId}`);
      // wait out a retry too: still refused, still nothing written
      await waitFor(async () => (await remoteOf(b)).failures >= 2, { what: "node B's retry", timeoutMs: 60_000 });
      expect(await listObjects(s3, `${PREFIX}/`)).toEqual(before);
      expect((await listRemote(url, s3.env)).map((x) => [x.id, x.node_id])).toEqual([
        [5, nodeId],
        [6, nodeId],
      ]);
    } finally {
      expect(await b.stop()).toBe(0);
    }
  }, 90_000);
});

// ---- credentials -----------------------------------------------------------------------------

describe("credentials", () => {
  const KEY_ID = "AKIDCAIRNTEST4Q7Z";
  const SECRET = "cairnSecret-9fX2kLq8WvB3nR0t";
  const BAD_SECRET = "cairnWrongSecret-Hq71ZpM4yT";

  /** Everything the node shows about itself: log, status (CLI json and text), /v1/status, /metrics. */
  async function everythingShown(node: NodeHandle): Promise<Record<string, string>> {
    return {
      log: node.logs(),
      statusJson: (await adminCli(node, ["checkpoint", "status", "--json"])).stdout,
      statusText: (await adminCli(node, ["checkpoint", "status"])).stdout,
      v1Status: await (await fetch(`${node.url}/v1/status`)).text(),
      metrics: await metrics(node),
    };
  }

  function expectNoCredentials(shown: Record<string, string>, values: string[]) {
    for (const [where, text] of Object.entries(shown)) {
      expect(text.length).toBeGreaterThan(0);
      for (const v of values) expect({ where, leaks: text.includes(v) }).toEqual({ where, leaks: false });
      // the S3 error code InvalidAccessKeyId may be named; no secret, nor a key's value, may be
      expect({ where, secret: /secret/i.test(text) }).toEqual({ where, secret: false });
    }
  }

  test("credentials in the config are used (over the environment's) and never appear in logs, status or metrics", async () => {
    addS3Credentials(KEY_ID, SECRET);
    const dir = tmpDir("cairn-rc-");
    // the environment has an unknown key and no secret: only the config's credentials work
    const env = { S3_ENDPOINT: s3.endpoint, S3_REGION: "us-east-1", S3_ACCESS_KEY_ID: "AKIDUNKNOWNENV", S3_SECRET_ACCESS_KEY: "" };
    const node = await track(
      startNode(dir, {
        extraYaml: remoteYaml(s3.url("nodes/creds"), `    access_key_id: ${KEY_ID}\n    secret_access_key: ${SECRET}\n`),
        env,
      }),
    );
    try {
      expect((await adminCli(node, ["log-level", "--level", "debug"])).code).toBe(0);
      await putAll(node.url, [{ id: "k", body: pseudoRandomBytes(5, 50_000) }]);
      expect(await createCheckpointAsync(node)).toBe(1);
      const r = await waitPushed(node, 1);
      expect(r.failures).toBe(0);
      expect((await listRemote(s3.url("nodes/creds"), s3.env)).map((c) => c.id)).toEqual([1]);
      expectNoCredentials(await everythingShown(node), [SECRET, KEY_ID]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    expect(node.logs()).not.toContain(SECRET);
  }, 90_000);

  test("rejected credentials: the failure is reported without echoing them", async () => {
    const dir = tmpDir("cairn-rd-");
    const env = { S3_ENDPOINT: s3.endpoint, S3_REGION: "us-east-1" };
    const node = await track(
      startNode(dir, {
        extraYaml: remoteYaml(s3.url("nodes/denied"), `    access_key_id: AKIDNOSUCHKEY88\n    secret_access_key: ${BAD_SECRET}\n`),
        env,
      }),
    );
    try {
      await putAll(node.url, [{ id: "k", body: pseudoRandomBytes(6, 10_000) }]);
      expect(await createCheckpointAsync(node)).toBe(1);
      // biome-ignore lint: tests read arbitrary fields
      let r: any;
      await waitFor(
        async () => {
          r = await remoteOf(node);
          return r.state === "waiting-retry";
        },
        { what: "the copy to be denied", timeoutMs: 60_000 },
      );
      expect(r.last_error).toContain("s3://cairn-test/nodes/denied");
      // refused at once as a credentials problem, not retried as an outage
      expect(r.last_error).toContain("InvalidAccessKeyId");
      expect(r.last_error).not.toContain("attempts");
      expectNoCredentials(await everythingShown(node), [BAD_SECRET, "AKIDNOSUCHKEY88"]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    // and the CLI, with rejected credentials in the environment
    const c = await cairn(["list-db-checkpoint", s3.url("nodes/creds")], { ...s3.env, S3_ACCESS_KEY_ID: "AKIDNOSUCHKEY88", S3_SECRET_ACCESS_KEY: BAD_SECRET });
    expect(c.code).toBe(1);
    expect(c.stderr).toContain("InvalidAccessKeyId");
    expect(c.stderr).not.toContain(BAD_SECRET);
    expect(c.stderr).not.toContain("AKIDNOSUCHKEY88");
  }, 90_000);
});

// ---- checkpoint create --path s3://... -------------------------------------------------------

test("local-admin checkpoint create --path s3://cairn-test/other takes a checkpoint and uploads it there", async () => {
  const dir = tmpDir("cairn-ro-");
  // no remote configured: the environment gives the endpoint and credentials
  const node = await track(startNode(dir, { extraYaml: "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n", env: s3.env }));
  try {
    const id = (await getJson(`${node.url}/v1/status`)).node_id;
    await putAll(node.url, Array.from({ length: 50 }, (_, i) => ({ id: `o${i}`, body: pseudoRandomBytes(300 + i, 20_000) })));
    const other = `s3://${S3_BUCKET}/other`;
    const r = await adminCli(node, ["checkpoint", "create", "--path", other]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const m = /^Checkpoint 1 created in [^\n]+\nCopied to s3:\/\/cairn-test\/other: (\d+) file\(s\), (\d+\.\d [KMGT]?B) uploaded, 0 already there\n$/.exec(r.stdout);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(3); // a pack, its index, the manifest
    const listed = await cairn(["list-db-checkpoint", other], s3.env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain("Backup ID: 1,");
    expect((await listRemote(other, s3.env)).map((c) => [c.id, c.node_id, c.blob_count])).toEqual([[1, id, 50]]);
    await expectVerified(other, s3.env, [1]);
    const st = await checkpointStatus(node);
    expect(st.last.dir).toBe(other);
    expect(st.last.push.pushed).toEqual([1]);
    expect(st.remote).toBeNull();
  } finally {
    expect(await node.stop()).toBe(0);
  }
}, 60_000);

// ---- bad locations -----------------------------------------------------------------------------

describe("bad remote locations fail with one clear line", () => {
  const oneLine = (r: Run) => {
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^error: [^\n]+\n$/);
    expect(r.stderr).not.toMatch(/\n\s+at |TypeError|undefined/);
  };

  test("a bucket that does not exist", async () => {
    for (const args of [["list-db-checkpoint", "s3://no-such-bucket/x"], ["verify-db-checkpoint", "s3://no-such-bucket/x"]]) {
      const r = await cairn(args, s3.env);
      expect(r.code).toBe(1);
      oneLine(r);
      expect(r.stderr).toContain("s3://no-such-bucket/x");
      expect(r.stderr).toContain("NoSuchBucket");
    }
    const target = join(tmpDir("cairn-rn-"), "db");
    const r = await cairn(["restore", "--db-checkpoint-path", "s3://no-such-bucket/x", "--db-path", target], s3.env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: [^\n]*no-such-bucket[^\n]*\n$/);
    expect(existsSync(target)).toBe(false);
  });

  test("an endpoint nothing listens on fails within a bounded time", async () => {
    // a command that kept trying would be killed at 60 s; its retries (5 attempts, 3 s of
    // back-off in all) end well within 20 s
    const r = await cairn(["list-db-checkpoint", s3.url("x")], { ...s3.env, S3_ENDPOINT: "http://127.0.0.1:1" }, 60_000);
    expect(r.code).toBe(1);
    oneLine(r);
    expect(r.stderr).toContain("s3://cairn-test/x");
    expect(r.ms).toBeLessThan(20_000);
  }, 90_000);
});

describe("carried files on the remote", () => {
  test("include_files go to the remote with each checkpoint; a restore from s3:// puts them back; remote retention collects them", async () => {
    const dir = tmpDir("cairn-rf-");
    const carried = join(dir, "node_key.json");
    await Bun.write(carried, '{"key": "remote-carried-1"}\n');
    const url = s3.url("nodes/carried");
    const yaml = `checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  include_files: [${carried}]\n  remote:\n    url: ${url}\n    max_remote_checkpoints: 1\n    retry_backoff_secs: 1\n`;
    const node = await track(startNode(dir, { extraYaml: yaml, env: s3.env }));
    try {
      await putAll(node.url, [{ id: "f", body: pseudoRandomBytes(9, 30_000) }]);
      expect(await createCheckpointAsync(node)).toBe(1);
      await waitPushed(node, 1);
      await Bun.write(carried, '{"key": "remote-carried-2"}\n');
      expect(await createCheckpointAsync(node)).toBe(2);
      await waitPushed(node, 2);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    // the remote keeps checkpoint 2 only, and only the carried file it names
    const remoteFiles = [...(await listObjects(s3, "nodes/carried/files/")).keys()];
    expect(remoteFiles).toHaveLength(1);
    await expectVerified(url, s3.env, [2]);
    const under = tmpDir("cairn-rf-to-");
    const r = await cairn(["restore", "--db-checkpoint-path", url, "--db-path", join(tmpDir("cairn-rf-db-"), "db"), "--files-to", under], s3.env, 60_000);
    expect(r.code).toBe(0);
    expect(await Bun.file(join(under, carried)).text()).toBe('{"key": "remote-carried-2"}\n');
  }, 90_000);
});
