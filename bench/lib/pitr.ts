/**
 * "Point-in-time restore": WAL shipping (checkpoint_config.wal_shipping) measured from outside.
 *
 *  1. PUT throughput, 4 KiB bodies at 16 in flight for a fixed time, on fresh nodes: shipping
 *     off; on (asynchronous, interval 1000 ms); synchronous into the local store; synchronous
 *     with s3rver on 127.0.0.1 as the remote (acknowledged once in both).
 *  2. The recovery point after losing the host: a node shipping to s3rver under that load is
 *     killed (-9) at a random moment, its storage and local store deleted, and restored from
 *     s3rver; every acknowledged write is looked for (unique ids, exact content): how many are
 *     missing and the age of the newest missing one at the kill. Asynchronous (interval
 *     1000 ms) and synchronous.
 *  3. A restore to an instant after a checkpoint of CAIRN_BENCH_PITR_GB GiB (default 1) and
 *     an hour of shipped writes (simulated: 36,000 PUTs of 4 KiB, ten a second for an hour,
 *     sent as fast as the node takes them), against the restore of the checkpoint alone.
 *  4. The store's growth for those writes: the log's files against the WAL bytes shipped (the
 *     page images before compression) and against the blob bytes written.
 */
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { exec, KiB, must, socketOf, stopChecked, syncAll } from "./blob-db.ts";
import { putBlob, runLoad } from "./load.ts";
import { BINARY, ensureBinary, type RunningNode, startNode } from "./node.ts";
import { met, mib, num, ratio, secs, table } from "./report.ts";
import type { BenchContext, Section } from "./section.ts";
import { median } from "./stats.ts";
import { MiB, randomBytes } from "./workload.ts";
import type { S3Server } from "../../test/helpers/s3.ts";

const LOAD_MS = 8000;
const BODY = 4 * KiB;
const CONCURRENCY = 16;
const HOUR_WRITES = 36_000;
const TARGET = { rpoAsyncMs: 1500, throughputAsync: 0.95, throughputSyncLocal: 0.5, restoreRatio: 1.5, growth: 1.1 };

function gib(): number {
  const raw = process.env.CAIRN_BENCH_PITR_GB?.trim() || "1";
  const n = Number(raw);
  if (!(n > 0)) throw new Error(`CAIRN_BENCH_PITR_GB=${JSON.stringify(raw)}: expected a size in GiB`);
  return n;
}

function yaml(shipping: "off" | "async" | "sync", remote?: string): string {
  let y = "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 3\n";
  if (shipping !== "off") y += `  wal_shipping:\n    enabled: true\n    interval_millis: 1000\n    synchronous: ${shipping === "sync"}\n`;
  if (remote) y += `  remote:\n    url: ${remote}\n    max_remote_checkpoints: 0\n    retry_backoff_secs: 1\n`;
  return y;
}

async function status(node: RunningNode): Promise<any> {
  const res = await fetch("http://localhost/v1/checkpoints/status", { unix: socketOf(node) } as RequestInit);
  return await res.json();
}

/** Until the node's first checkpoint (the one a new chain asks for) is done, and shipping has caught up. */
async function settled(node: RunningNode, remote = false): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    const s = await status(node);
    const w = s.wal_shipping;
    const shipped = !w || (w.pending_txns === 0 && (!remote || (w.remote && w.remote.pending_txns === 0 && w.remote.pending_segments === 0)));
    // with shipping on, the new chain's first checkpoint (the node asks for it at start)
    if ((!w || s.successes >= 1) && !s.running && shipped && (!remote || (s.remote?.last_pushed_id ?? 0) >= 1)) return;
    if (performance.now() - t0 > 120_000) throw new Error(`the node did not settle: ${JSON.stringify(s).slice(0, 800)}`);
    await Bun.sleep(50);
  }
}

interface Acked {
  id: string;
  digest: string;
  ack: number;
}

/** 4 KiB PUTs at 16 in flight, unique ids, until `stop()`; the acknowledged ones recorded. */
async function load(url: string, tag: string, stop: () => boolean, acked?: Acked[]): Promise<{ ops: number; ms: number; failed: number }> {
  const t0 = performance.now();
  const r = await runLoad({
    count: 1e9,
    concurrency: CONCURRENCY,
    timeCapMs: 3_600_000,
    stop,
    request: async (i) => {
      const body = randomBytes(BODY);
      await putBlob(url, `${tag}-${i}`, body);
      acked?.push({ id: `${tag}-${i}`, digest: Bun.hash.xxHash3(body).toString(16), ack: Date.now() });
    },
  });
  return { ops: r.okIndices.length, ms: performance.now() - t0, failed: r.failed };
}

async function throughput(ctx: BenchContext, s3: S3Server): Promise<{ label: string; opsPerSec: number }[]> {
  const out: { label: string; opsPerSec: number }[] = [];
  const cases: [string, string, boolean][] = [
    ["shipping off", yaml("off"), false],
    ["asynchronous (interval 1000 ms)", yaml("async"), false],
    ["synchronous, local store", yaml("sync"), false],
    ["synchronous, local store and s3rver", yaml("sync", s3.url(`tp-${Date.now()}`)), true],
  ];
  for (const [label, y, remote] of cases) {
    const dir = ctx.tmp.make("cairn-bench-pitr-tp-");
    const node = await startNode(dir, y, s3.env);
    try {
      await settled(node, remote);
      await syncAll();
      const end = performance.now() + LOAD_MS;
      const r = await load(node.url, "tp", () => performance.now() > end);
      if (r.failed > 0) ctx.fail(`pitr: ${label}: ${r.failed} PUT(s) failed`);
      out.push({ label, opsPerSec: (r.ops / r.ms) * 1000 });
      ctx.log(`pitr: ${label}: ${num(Math.round((r.ops / r.ms) * 1000))} PUT/s`);
    } finally {
      await stopChecked(node);
      ctx.tmp.remove(dir);
    }
  }
  return out;
}

interface RecoveryPoint {
  mode: string;
  acked: number;
  missing: number;
  newestMissingAgeMs: number;
}

/** Kill -9 a node shipping to s3rver under load, lose its disk, restore from s3rver, count what is missing. */
async function recoveryPoint(ctx: BenchContext, s3: S3Server, mode: "async" | "sync"): Promise<RecoveryPoint> {
  const dir = ctx.tmp.make("cairn-bench-pitr-rp-");
  const url = s3.url(`rp-${mode}-${Date.now()}`);
  const node = await startNode(dir, yaml(mode, url), s3.env);
  const acked: Acked[] = [];
  let killedAt = 0;
  try {
    await settled(node, true);
    const runFor = 4000 + Math.random() * 3000;
    const end = performance.now() + runFor;
    const loading = load(node.url, "rp", () => killedAt > 0, acked);
    while (performance.now() < end) await Bun.sleep(10);
    process.kill(node.pid, "SIGKILL");
    killedAt = Date.now();
    await loading.catch(() => {});
    await Bun.sleep(100);
  } finally {
    await node.stop();
  }
  // the host is gone: its storage and its local store with it
  rmSync(join(dir, "db"), { recursive: true, force: true });
  rmSync(join(dir, "ckpt"), { recursive: true, force: true });
  const into = ctx.tmp.make("cairn-bench-pitr-into-");
  await must([BINARY, "restore", "--db-checkpoint-path", url, "--db-path", join(into, "db")], s3.env);
  const { Database } = await import("bun:sqlite");
  const db = new Database(join(into, "db", "cairn.db"), { readonly: true });
  const have = new Map(db.query<{ id: string; digest: string }, []>("SELECT id, digest FROM blobs WHERE id LIKE 'rp-%'").all().map((r) => [r.id, r.digest]));
  db.close();
  const missing = acked.filter((a) => have.get(a.id) !== a.digest.padStart(16, "0"));
  ctx.tmp.remove(into);
  ctx.tmp.remove(dir);
  const newestMissingAgeMs = missing.length > 0 ? killedAt - Math.min(...missing.map((m) => m.ack)) : 0;
  ctx.log(`pitr: recovery point (${mode}): ${missing.length} of ${acked.length} acknowledged writes missing; oldest missing acknowledged ${newestMissingAgeMs} ms before the kill`);
  return { mode, acked: acked.length, missing: missing.length, newestMissingAgeMs };
}

interface HourResults {
  dbBytes: number;
  restoreCheckpointMs: number[];
  restoreInstantMs: number[];
  replayedTxns: number;
  logFiles: number;
  logBytes: number;
  rawBytes: number;
  blobBytes: number;
}

function logTotals(store: string): { files: number; bytes: number; raw: number } {
  let files = 0;
  let bytes = 0;
  let raw = 0;
  const root = join(store, "log");
  for (const chain of readdirSync(root)) {
    for (const n of readdirSync(join(root, chain))) {
      const data = readFileSync(join(root, chain, n));
      files++;
      bytes += data.byteLength;
      if (n.endsWith(".seg")) {
        const len = data.readUInt32LE(8);
        raw += (JSON.parse(data.subarray(12, 12 + len).toString()) as { raw_bytes: number }).raw_bytes;
      }
    }
  }
  return { files, bytes, raw };
}

async function hourAfterCheckpoint(ctx: BenchContext): Promise<HourResults> {
  const dir = ctx.tmp.make("cairn-bench-pitr-hour-");
  const node = await startNode(dir, yaml("async"));
  const store = join(dir, "ckpt");
  let stopped = false;
  try {
    await settled(node);
    const count = Math.round((gib() * 1024 * MiB) / MiB);
    const fill = await runLoad({ count, concurrency: 8, timeCapMs: 3_600_000, request: (i) => putBlob(node.url, `f${i}`, randomBytes(MiB)) });
    if (fill.failed > 0) ctx.fail(`pitr: filling: ${fill.failed} PUT(s) failed`);
    const res = await fetch("http://localhost/v1/checkpoints", { unix: socketOf(node), method: "POST", headers: { "content-type": "application/json" }, body: "{}" } as RequestInit);
    if (res.status !== 202) throw new Error(`POST /v1/checkpoints: HTTP ${res.status}`);
    await settled(node);
    for (;;) {
      const s = await status(node);
      if (!s.running && s.successes >= 2) break;
      await Bun.sleep(50);
    }
    const before = logTotals(store);
    const hour = await runLoad({ count: HOUR_WRITES, concurrency: CONCURRENCY, timeCapMs: 3_600_000, request: (i) => putBlob(node.url, `h${i % 3600}`, randomBytes(BODY)) });
    if (hour.failed > 0) ctx.fail(`pitr: the hour's writes: ${hour.failed} PUT(s) failed`);
    await settled(node);
    const after = logTotals(store);
    await stopChecked(node);
    stopped = true;
    const listed = JSON.parse((await must([BINARY, "list-db-checkpoint", store, "--json"])).stdout) as { id: number }[];
    const newest = Math.max(...listed.map((c) => c.id));
    const restoreCheckpointMs: number[] = [];
    const restoreInstantMs: number[] = [];
    let replayedTxns = 0;
    for (let i = 0; i < 3; i++) {
      for (const instant of [false, true]) {
        const into = ctx.tmp.make("cairn-bench-pitr-r-");
        await syncAll();
        const r = await exec([BINARY, "restore", "--db-checkpoint-path", store, "--db-path", join(into, "db"), "--json", ...(instant ? [] : ["--checkpoint-id", String(newest)])]);
        if (r.code !== 0) ctx.fail(`pitr: restore${instant ? " to the latest instant" : ""}: exit ${r.code}: ${r.stderr.slice(-300)}`);
        else if (instant) replayedTxns = (JSON.parse(r.stdout) as { replayed_txns: number }).replayed_txns;
        (instant ? restoreInstantMs : restoreCheckpointMs).push(r.ms);
        ctx.tmp.remove(into);
      }
    }
    ctx.log(`pitr: restore of checkpoint ${newest} ${restoreCheckpointMs.map(secs).join(", ")}; to the instant after an hour of writes (${replayedTxns} transactions) ${restoreInstantMs.map(secs).join(", ")}`);
    return {
      dbBytes: statSync(join(dir, "db", "cairn.db")).size,
      restoreCheckpointMs,
      restoreInstantMs,
      replayedTxns,
      logFiles: after.files - before.files,
      logBytes: after.bytes - before.bytes,
      rawBytes: after.raw - before.raw,
      blobBytes: HOUR_WRITES * BODY,
    };
  } finally {
    if (!stopped) await stopChecked(node);
    ctx.tmp.remove(dir);
  }
}

async function run(ctx: BenchContext): Promise<string> {
  await ensureBinary(ctx.log);
  const { startS3 } = await import("../../test/helpers/s3.ts");
  const s3 = await startS3(ctx.tmp.make("cairn-bench-s3-"));
  let tp: Awaited<ReturnType<typeof throughput>>;
  let rps: RecoveryPoint[];
  let hour: HourResults;
  try {
    tp = await throughput(ctx, s3);
    rps = [await recoveryPoint(ctx, s3, "async"), await recoveryPoint(ctx, s3, "sync")];
    hour = await hourAfterCheckpoint(ctx);
  } finally {
    await s3.stop();
  }
  const off = tp[0]!.opsPerSec;
  const rel = (i: number) => tp[i]!.opsPerSec / off;
  const rpAsync = rps[0]!;
  const rpSync = rps[1]!;
  const rc = median(hour.restoreCheckpointMs);
  const ri = median(hour.restoreInstantMs);
  const growth = hour.logBytes / hour.rawBytes;
  const out: string[] = [];
  out.push(
    `PUTs of 4 KiB at ${CONCURRENCY} in flight for ${LOAD_MS / 1000} s on fresh nodes (sync true, one checkpoint worker); the remote is s3rver on 127.0.0.1. ` +
      `The restore compares a checkpoint of ${gib()} GiB of 1 MiB blobs with the same plus ${num(HOUR_WRITES)} shipped PUTs of 4 KiB (an hour at ten a second), medians of 3.`,
    "",
  );
  out.push(
    table(
      [{ header: "figure" }, { header: "target" }, { header: "measured" }, { header: "met" }],
      [
        [
          "recovery point after losing the host, asynchronous (interval 1000 ms): age of the oldest acknowledged write missing",
          `≤ ${TARGET.rpoAsyncMs / 1000} s`,
          `${rpAsync.missing} of ${num(rpAsync.acked)} missing${rpAsync.missing ? `, the oldest acknowledged ${secs(rpAsync.newestMissingAgeMs)} before the kill` : ""}`,
          met(rpAsync.newestMissingAgeMs <= TARGET.rpoAsyncMs),
        ],
        ["the same, synchronous", "0 missing", `${rpSync.missing} of ${num(rpSync.acked)} missing`, met(rpSync.missing === 0)],
        ["PUT throughput, shipping on (asynchronous) / off", `≥ ${TARGET.throughputAsync}`, `${ratio(rel(1))} (${num(Math.round(tp[1]!.opsPerSec))} / ${num(Math.round(off))} PUT/s)`, met(rel(1) >= TARGET.throughputAsync)],
        ["the same, synchronous to the local store / off", `≥ ${TARGET.throughputSyncLocal}`, `${ratio(rel(2))} (${num(Math.round(tp[2]!.opsPerSec))} PUT/s)`, met(rel(2) >= TARGET.throughputSyncLocal)],
        ["the same, synchronous to the local store and s3rver / off", "report", `${ratio(rel(3))} (${num(Math.round(tp[3]!.opsPerSec))} PUT/s)`, "—"],
        [
          "restore to the instant after an hour of shipped writes / restore of the checkpoint alone",
          `≤ ${TARGET.restoreRatio}`,
          `${ratio(ri / rc)} (${secs(ri)} / ${secs(rc)}; ${num(hour.replayedTxns)} transactions applied; database ${mib(hour.dbBytes)})`,
          met(ri / rc <= TARGET.restoreRatio),
        ],
        [
          "store growth per byte shipped (log files / WAL page bytes before compression)",
          `≤ ${TARGET.growth}`,
          `${ratio(growth)} (${mib(hour.logBytes)} in ${hour.logFiles} files for ${mib(hour.rawBytes)} of pages; the blobs written were ${mib(hour.blobBytes)})`,
          met(growth <= TARGET.growth),
        ],
      ],
    ),
  );
  return out.join("\n");
}

export const pitrSection: Section = { title: "Point-in-time restore", run };
