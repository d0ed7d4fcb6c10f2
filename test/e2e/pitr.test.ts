/**
 * WAL shipping and point-in-time restore (checkpoint/shipper.ts, store/log.ts,
 * restore/replay.ts), end to end with the compiled binary: concurrent writers whose every
 * acknowledgement is timed, restores at random instants audited against them (every write
 * acknowledged before the instant there with its exact content, none started after it),
 * kill -9 at each crash point of shipping, synchronous mode refusing to acknowledge what is not
 * shipped, timelines after a restore, retention of the log, a damaged segment.
 */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adminAsync, checkpointStatus, createCheckpointAsync, flipByte, listJson } from "../helpers/checkpoint.ts";
import { BINARY, type NodeHandle, pseudoRandomBytes, runCairn, startNode, startNodeWithConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { startS3 } from "../helpers/s3.ts";

cleanTmpDirsAfterEach();

const yaml = (extra = "") => `wal_checkpoint_threshold_bytes: 65536
wal_checkpoint_interval_secs: 0.05
checkpoint_config:
  db_checkpoint_dir: ./ckpt
  max_db_checkpoints: 3
  sync: false
  wal_shipping:
    enabled: true
    interval_millis: 100
${extra}`;

/** One write of the audit: version `v` of `id` (v is null for a delete), when it started and when it was acknowledged. */
interface Write {
  id: string;
  v: number | null;
  seq: number;
  start: number;
  ack: number;
}

const bodyOf = (id: string, seq: number) => pseudoRandomBytes(seq * 7919 + id.length, 200 + (seq % 5) * 1500);

/** `writers` loops, each over its own ids (so one id's writes are in order), until `stop()`; every write timed. */
async function auditedWrites(url: string, writers: number, stop: () => boolean, log: Write[], tag = "w"): Promise<void> {
  let seq = log.length;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      let n = 0;
      while (!stop()) {
        const id = `${tag}${w}-${n % 7}`;
        const del = n % 11 === 10;
        const s = ++seq;
        const start = Date.now();
        const r = del ? await fetch(`${url}/v1/blobs/${id}`, { method: "DELETE" }) : await fetch(`${url}/v1/blobs/${id}`, { method: "PUT", body: bodyOf(id, s) });
        const ack = Date.now();
        if (!r.ok && !(del && r.status === 404)) throw new Error(`${del ? "DELETE" : "PUT"} ${id}: HTTP ${r.status}`);
        await r.arrayBuffer();
        log.push({ id, v: del ? null : s, seq: s, start, ack });
        n++;
      }
    }),
  );
}

/** The blobs of a restored database: id → content. */
function blobsOf(dbFile: string): Map<string, Uint8Array> {
  const db = new Database(dbFile, { readonly: true });
  try {
    return new Map(db.query<{ id: string; data: Uint8Array }, []>("SELECT id, data FROM blobs").all().map((r) => [r.id, r.data]));
  } finally {
    db.close();
  }
}

/**
 * Check a database restored to instant `t` against the writes: per id, the state is that of a
 * write that started at or before `t`, and not older than the last one acknowledged before `t`.
 */
function audit(blobs: Map<string, Uint8Array>, log: Write[], t: number, tag = "w"): void {
  const byId = new Map<string, Write[]>();
  for (const w of log) {
    if (!byId.has(w.id)) byId.set(w.id, []);
    byId.get(w.id)!.push(w);
  }
  for (const [id, writes] of byId) {
    writes.sort((a, b) => a.seq - b.seq);
    const acked = writes.filter((w) => w.ack <= t).at(-1);
    const allowed = writes.filter((w) => w.start <= t && (!acked || w.seq >= acked.seq));
    const got = blobs.get(id);
    const matches = (w: Write | undefined) => (w === undefined || w.v === null ? got === undefined : got !== undefined && Buffer.from(got).equals(Buffer.from(bodyOf(id, w.v))));
    const ok = allowed.some(matches) || (!acked && matches(undefined));
    if (!ok) throw new Error(`restored to ${new Date(t).toISOString()}: ${id} is ${got ? `${got.byteLength} bytes` : "absent"}, not any write allowed (${allowed.map((w) => w.seq).join(", ") || "none"}; last acknowledged ${acked?.seq})`);
  }
  for (const id of blobs.keys()) if (id.startsWith(tag) && !byId.has(id)) throw new Error(`restored to ${new Date(t).toISOString()}: ${id} was never written`);
}

function restoreAt(store: string, into: string, timestamp?: number, extra: string[] = []) {
  const args = ["restore", "--db-checkpoint-path", store, "--db-path", into, ...(timestamp !== undefined ? ["--timestamp", new Date(timestamp).toISOString()] : []), ...extra];
  return runCairn(args, { timeoutMs: 60_000 });
}

async function shippingStatus(node: NodeHandle): Promise<any> {
  return (await checkpointStatus(node)).wal_shipping;
}

/** Until every transaction committed so far is in the local store. */
async function shippedAll(node: NodeHandle): Promise<any> {
  let s: any;
  await waitFor(async () => {
    s = await shippingStatus(node);
    return s.pending_txns === 0 && s.last_shipped_txn === s.last_txn;
  }, { what: "shipping to catch up", timeoutMs: 10_000 });
  return s;
}

async function firstCheckpointDone(node: NodeHandle): Promise<void> {
  await waitFor(async () => (await checkpointStatus(node)).successes >= 1 && !(await checkpointStatus(node)).running, { what: "the first checkpoint of the chain", timeoutMs: 20_000 });
}

describe("point-in-time restore", () => {
  test("restores at random instants hold every write acknowledged before the instant and none started after it", async () => {
    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: yaml() });
    try {
      await firstCheckpointDone(node);
      const log: Write[] = [];
      let stop = false;
      const writing = auditedWrites(node.url, 4, () => stop, log);
      await waitFor(() => log.length > 150, { what: "writes", timeoutMs: 20_000 });
      await createCheckpointAsync(node);
      await waitFor(() => log.length > 300, { what: "more writes", timeoutMs: 20_000 });
      stop = true;
      await writing;
      const s = await shippedAll(node);
      expect(s.chains_started).toBe(1);
      const st = await adminAsync(node, ["checkpoint", "status"]);
      expect(st.stdout).toMatch(/^Shipping: asynchronous, chain [0-9a-f]{16}; shipped up to .* \(transaction (\d+) of \1\); 0 waiting, lag 0\.0 s$/m);
      const metrics = await (await fetch(`${node.url}/metrics`)).text();
      expect(metrics).toMatch(/^cairn_shipping_lag_seconds\{store="local"\} 0$/m);
      const listed = listJson(join(dir, "ckpt"));
      expect(listed.every((c: any) => typeof c.restorable_until === "string" && typeof c.timeline === "string")).toBe(true);
      const text = runCairn(["list-db-checkpoint", join(dir, "ckpt")]);
      expect(text.stdout.trim().split("\n").at(-1)).toMatch(/^Point-in-time restore: from \d{4}-\d\d-\d\dT[\d:.]+Z to \d{4}-\d\d-\d\dT[\d:.]+Z$/);
      const first = log[0]!.start;
      const last = log.at(-1)!.ack;
      // the store vouches for instants up to its last shipment's cut (an idle node ships nothing more)
      const until = Math.max(...listed.map((c: any) => Date.parse(c.restorable_until)));
      expect(until).toBeGreaterThanOrEqual(log.reduce((m, w) => Math.max(m, w.start), 0));
      const instants = [first, Math.min(last + 1, until), ...Array.from({ length: 6 }, (_, i) => first + ((last - first) * (i + 0.5)) / 6)].map(Math.round);
      for (const t of instants) {
        const into = join(tmpDir(), "db");
        const r = restoreAt(join(dir, "ckpt"), into, t);
        if (r.code !== 0) throw new Error(`restore to ${new Date(t).toISOString()}: exit ${r.code}: ${r.stderr}`);
        expect(r.stdout).toMatch(new RegExp(`^Restored from \\d+ up to ${new Date(t).toISOString().replace(/\./g, "\\.")} successfully\\.\\n$`));
        audit(blobsOf(join(into, "cairn.db")), log, t);
      }
      // no timestamp: the latest point, every acknowledged write
      const into = join(tmpDir(), "db");
      const r = restoreAt(join(dir, "ckpt"), into);
      expect(r.stdout).toMatch(/^Restored from latest \(\d+\) up to \S+Z successfully\.\n$/);
      audit(blobsOf(join(into, "cairn.db")), log, Date.now());
      // --checkpoint-id alone: that checkpoint exactly, as before
      const exact = restoreAt(join(dir, "ckpt"), join(tmpDir(), "db"), undefined, ["--checkpoint-id", String(listed[0]!.id)]);
      expect(exact.stdout).toBe(`Restored from ${listed[0]!.id} successfully.\n`);
      // outside the window: exit 1 naming it
      const early = restoreAt(join(dir, "ckpt"), join(tmpDir(), "db"), Date.parse(listed[0]!.created) - 3_600_000);
      expect(early.code).toBe(1);
      expect(early.stderr).toMatch(/is outside what .* can restore to: from \S+Z to \S+Z/);
      const verify = runCairn(["verify-db-checkpoint", join(dir, "ckpt")]);
      expect(verify.code).toBe(0);
      expect(verify.stdout).toMatch(/^Log: OK \(\d+ segments, \d+ transactions/m);
      // an archive of the newest checkpoint carries the log after it: restored to its last instant, or within it
      const newest = listed.at(-1)!.id;
      const tar = join(tmpDir(), "c.tar.zst");
      expect(runCairn(["export-db-checkpoint", join(dir, "ckpt"), "--checkpoint-id", String(newest), "--output", tar]).code).toBe(0);
      expect(runCairn(["verify-db-checkpoint", tar]).code).toBe(0);
      const fromTar = join(tmpDir(), "db");
      const rt = restoreAt(tar, fromTar);
      expect(rt.stdout).toMatch(new RegExp(`^Restored from latest \\(${newest}\\) up to \\S+Z successfully\\.\\n$`));
      audit(blobsOf(join(fromTar, "cairn.db")), log, Date.now());
      const mid = Math.round((Date.parse(listed.at(-1)!.created) + last) / 2);
      const fromTarMid = join(tmpDir(), "db");
      if (mid > Date.parse(listed.at(-1)!.created) + 5) {
        expect(restoreAt(tar, fromTarMid, mid).code).toBe(0);
        audit(blobsOf(join(fromTarMid, "cairn.db")), log, mid);
      }
    } finally {
      await node.stop();
    }
  }, 120_000);

  for (const point of ["shipping:before-segment", "shipping:segment-written"]) {
    test(`kill -9 at ${point}: the chain is intact and the next start continues it from the WAL`, async () => {
      const dir = tmpDir();
      let node = await startNode(dir, { extraYaml: yaml() });
      await firstCheckpointDone(node);
      const before = await shippedAll(node);
      await node.stop();
      // with the crash point armed the first shipment kills the node
      node = await startNodeWithConfig(dir, node.configFile, node.url, 10_000, { CAIRN_TEST_CRASH_POINT: point });
      const log: Write[] = [];
      await auditedWrites(node.url, 1, () => log.length >= 1 || node.proc.exitCode !== null, log).catch(() => {});
      await node.proc.exited;
      node = await startNodeWithConfig(dir, node.configFile, node.url);
      try {
        const s = await shippedAll(node);
        expect(s.chain).toBe(before.chain);
        expect(node.logs()).toMatch(/chain [0-9a-f]{16} (continued from the WAL|continued after a clean stop)/);
        const into = join(tmpDir(), "db");
        const r = restoreAt(join(dir, "ckpt"), into);
        expect(r.code).toBe(0);
        audit(blobsOf(join(into, "cairn.db")), log, Date.now());
        expect(runCairn(["verify-db-checkpoint", join(dir, "ckpt")]).code).toBe(0);
      } finally {
        await node.stop();
      }
    }, 60_000);
  }

  test("kill -9 with transactions not shipped: the next start ships them from the WAL, and the lost host restores all of them", async () => {
    const dir = tmpDir();
    // shipments only far apart: what the kill interrupts is in the WAL alone
    let node = await startNode(dir, { extraYaml: yaml().replace("interval_millis: 100", "interval_millis: 600000").replace("wal_checkpoint_threshold_bytes: 65536", "wal_checkpoint_threshold_bytes: 67108864") });
    await firstCheckpointDone(node);
    const log: Write[] = [];
    await auditedWrites(node.url, 2, () => log.length >= 40, log);
    expect((await shippingStatus(node)).pending_txns).toBeGreaterThan(0);
    await node.kill9();
    node = await startNodeWithConfig(dir, node.configFile, node.url);
    try {
      await shippedAll(node);
      expect(node.logs()).toMatch(/continued from the WAL after transaction \d+/);
      const into = join(tmpDir(), "db");
      expect(restoreAt(join(dir, "ckpt"), into).code).toBe(0);
      audit(blobsOf(join(into, "cairn.db")), log, Date.now());
    } finally {
      await node.stop();
    }
  }, 60_000);

  test("synchronous: an acknowledged write is in the store before the answer; with the store unwritable writes get 503, then ship once it is back", async () => {
    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: `${yaml()}    synchronous: true\n    synchronous_timeout_millis: 500\n` });
    try {
      await firstCheckpointDone(node);
      const r = await fetch(`${node.url}/v1/blobs/sync-1`, { method: "PUT", body: "acknowledged" });
      expect(r.status).toBe(201);
      const s = await shippingStatus(node);
      expect(s.last_shipped_txn).toBe(s.last_txn);
      // the chain's folder replaced by a file: nothing can be written into it
      const chainDir = join(dir, "ckpt", "log", s.chain);
      renameSync(chainDir, `${chainDir}.away`);
      writeFileSync(chainDir, "");
      const refused = await fetch(`${node.url}/v1/blobs/sync-2`, { method: "PUT", body: "not shipped" });
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as any).error.code).toBe("E_SHIPPING_TIMEOUT");
      rmSync(chainDir);
      renameSync(`${chainDir}.away`, chainDir);
      await shippedAll(node);
      const ok = await fetch(`${node.url}/v1/blobs/sync-3`, { method: "PUT", body: "shipped again" });
      expect(ok.status).toBe(201);
      await node.kill9();
      // the host is lost: only the store is left
      rmSync(join(dir, "db"), { recursive: true, force: true });
      const into = join(tmpDir(), "db");
      expect(restoreAt(join(dir, "ckpt"), into).code).toBe(0);
      const blobs = blobsOf(join(into, "cairn.db"));
      expect(new TextDecoder().decode(blobs.get("sync-1"))).toBe("acknowledged");
      expect(new TextDecoder().decode(blobs.get("sync-3"))).toBe("shipped again");
      // committed locally before the 503, and shipped once the store was back
      expect(new TextDecoder().decode(blobs.get("sync-2"))).toBe("not shipped");
    } finally {
      await node.stop().catch(() => {});
    }
  }, 60_000);

  test("a restore to an earlier instant forks a new timeline; the old one stays restorable", async () => {
    const dir = tmpDir();
    let node = await startNode(dir, { extraYaml: yaml() });
    await firstCheckpointDone(node);
    await fetch(`${node.url}/v1/blobs/a`, { method: "PUT", body: "first" });
    const s0 = await shippedAll(node);
    const forkAt = Date.now();
    await waitFor(() => Date.now() > forkAt + 5, { what: "a moment", timeoutMs: 1000 });
    await fetch(`${node.url}/v1/blobs/b`, { method: "PUT", body: "old timeline" });
    await shippedAll(node);
    await node.stop();
    const r = restoreAt(join(dir, "ckpt"), join(dir, "db"), forkAt, ["--force"]);
    expect(r.code).toBe(0);
    node = await startNodeWithConfig(dir, node.configFile, node.url);
    try {
      await fetch(`${node.url}/v1/blobs/c`, { method: "PUT", body: "new timeline" });
      const s1 = await shippedAll(node);
      expect(s1.chain).not.toBe(s0.chain);
      expect(s1.chain_base.chain).toBe(s0.chain);
      const now = join(tmpDir(), "db");
      expect(restoreAt(join(dir, "ckpt"), now).code).toBe(0);
      const cur = blobsOf(join(now, "cairn.db"));
      expect([...cur.keys()].sort()).toEqual(["a", "c"]);
      const old = join(tmpDir(), "db");
      const ro = restoreAt(join(dir, "ckpt"), old, undefined, ["--timeline", s0.chain]);
      expect(ro.code).toBe(0);
      expect([...blobsOf(join(old, "cairn.db")).keys()].sort()).toEqual(["a", "b"]);
    } finally {
      await node.stop();
    }
  }, 60_000);

  test("retention keeps the log from the oldest retained checkpoint on; a damaged segment is found and refused only by restores that need it", async () => {
    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: yaml() });
    try {
      await firstCheckpointDone(node);
      const marks: number[] = [];
      for (let i = 0; i < 5; i++) {
        await fetch(`${node.url}/v1/blobs/r${i}`, { method: "PUT", body: `round ${i}` });
        await shippedAll(node);
        marks.push(Date.now());
        await createCheckpointAsync(node);
      }
      await fetch(`${node.url}/v1/blobs/last`, { method: "PUT", body: "after the last checkpoint" });
      const s = await shippedAll(node);
      const listed = listJson(join(dir, "ckpt"));
      expect(listed.length).toBe(3);
      const oldest = listed[0]!;
      const segs = readdirSync(join(dir, "ckpt", "log", s.chain)).filter((n) => n.endsWith(".seg"));
      // nothing left that ends before the oldest checkpoint's image
      const manifest = JSON.parse(await Bun.file(join(dir, "ckpt", "manifests", `${String(oldest.id).padStart(10, "0")}.json`)).text());
      for (const n of segs) expect(Number(n.slice(13, 25))).toBeGreaterThan(manifest.log.txn);
      // damage the newest segment: verify names it; the latest instant is refused, an earlier one restores
      const newest = segs.sort().at(-1)!;
      flipByte(join(dir, "ckpt", "log", s.chain, newest));
      const v = runCairn(["verify-db-checkpoint", join(dir, "ckpt")]);
      expect(v.code).toBe(1);
      expect(v.stdout).toContain(newest);
      expect(v.stdout).toMatch(/point-in-time restore on timeline [0-9a-f]{16} from \S+ on is lost/);
      const refused = restoreAt(join(dir, "ckpt"), join(tmpDir(), "db"));
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("does not match its digest");
      const earlier = join(tmpDir(), "db");
      expect(restoreAt(join(dir, "ckpt"), earlier, marks[3]).code).toBe(0);
      expect(blobsOf(join(earlier, "cairn.db")).has("r3")).toBe(true);
    } finally {
      await node.stop();
    }
  }, 60_000);

  test("shipping to s3rver: an outage delays it (status says so) without failing writes; after it, the lost host restores every acknowledged write from the remote", async () => {
    const s3 = await startS3(join(tmpDir(), "s3"));
    const dir = tmpDir();
    const url = s3.url("pitr-node");
    const node = await startNode(dir, { extraYaml: yaml(`  remote:\n    url: ${url}\n    retry_backoff_secs: 0.2\n    request_timeout_secs: 2\n`), env: s3.env });
    try {
      await firstCheckpointDone(node);
      const remoteCaughtUp = async () => {
        let st: any;
        await waitFor(async () => {
          st = await checkpointStatus(node);
          const w = st.wal_shipping;
          return w.pending_txns === 0 && w.remote?.last_shipped_txn === w.last_txn && (st.remote?.last_pushed_id ?? 0) >= 1;
        }, { what: "shipping to the remote to catch up", timeoutMs: 30_000, detail: () => JSON.stringify(st?.wal_shipping) });
      };
      const log: Write[] = [];
      await auditedWrites(node.url, 2, () => log.length >= 30, log);
      await remoteCaughtUp();
      await s3.stop();
      const during: Write[] = [];
      await auditedWrites(node.url, 2, () => during.length >= 30, during, "o");
      let w: any;
      await waitFor(async () => {
        w = (await shippingStatus(node)).remote;
        return w.failures > 0 && w.pending_txns > 0;
      }, { what: "the outage to show in status", timeoutMs: 20_000 });
      expect(w.last_error).toBeString();
      const metrics = await (await fetch(`${node.url}/metrics`)).text();
      expect(metrics).toMatch(/cairn_shipping_pending_transactions\{store="remote"\} [1-9]/);
      await s3.start();
      await remoteCaughtUp();
      await node.kill9();
      rmSync(join(dir, "db"), { recursive: true, force: true });
      rmSync(join(dir, "ckpt"), { recursive: true, force: true });
      const into = join(tmpDir(), "db");
      // s3rver runs in this process: the restore must not block it (no spawnSync)
      const proc = Bun.spawn([BINARY, "restore", "--db-checkpoint-path", url, "--db-path", into], { env: { ...process.env, ...s3.env }, stdout: "pipe", stderr: "pipe" });
      const r = { stdout: await new Response(proc.stdout).text(), code: await proc.exited };
      expect(r.stdout).toMatch(/^Restored from latest \(\d+\) up to \S+Z successfully\.\n$/);
      const blobs = blobsOf(join(into, "cairn.db"));
      audit(blobs, log, Date.now());
      audit(blobs, during, Date.now(), "o");
    } finally {
      await node.stop().catch(() => {});
      await s3.stop();
    }
  }, 90_000);
});
