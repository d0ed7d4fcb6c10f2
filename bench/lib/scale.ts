/**
 * "Scale": what checkpoints cost as the database grows, at each size named by
 * CAIRN_BENCH_SIZES_GB (GiB, comma-separated; default "1,16"). At each size, with the node's
 * defaults (sync true, one checkpoint worker) and three checkpoints kept (so retention and
 * garbage collection run after each one):
 *
 *  1. fill a fresh node over REST with 1 MiB blobs of random bytes, 8 in flight;
 *  2. the first checkpoint (full: nothing to build on), then a wait until the disk is back near
 *     rest (settleDisk);
 *  3. ten rounds of the same absolute change (16 blobs of 1 MiB rewritten) and an incremental
 *     checkpoint, the node's RSS sampled throughout (each says whether a WAL fold of the node's
 *     was still running beside its pin), after three such rounds not counted: the node's
 *     SQLite page cache (cache_size, 64 MiB) is refilling toward its bound after the first
 *     checkpoint, and the ten measure the node as it runs, not that climb;
 *  4. three more with the page cache dropped between the change and the checkpoint;
 *  5. p99 of 4 KiB PUTs at 16 in flight, the load running throughout: rounds of an idle block,
 *     an incremental checkpoint (of the load's own changes), a block after it, and a bare write
 *     of the same bytes by a process of its own (the floor), then a full checkpoint into an
 *     empty directory (measureLatency);
 *  6. `cp` + `sync` of the database and a full checkpoint of it into an empty directory, in
 *     turn (last, so that no step above follows these extra database-sized writes);
 *  7. the node stopped, peak RSS (GNU time) of list, verify, export (.tar), garbage collection
 *     and restore of the store.
 *
 * The targets compare the largest size with the smallest.
 */
import { closeSync, existsSync, fdatasyncSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { exec, KiB, must, socketOf, stopChecked, syncAll, timedCopy } from "./blob-db.ts";
import { type LoadResult, putBlob, runLoad } from "./load.ts";
import { BINARY, ensureBinary, REPO_ROOT, type RunningNode, startNode } from "./node.ts";
import { met, mib, num, ratio, secs, table } from "./report.ts";
import type { BenchContext, Section } from "./section.ts";
import { median, percentile } from "./stats.ts";
import { MiB, randomBytes } from "./workload.ts";

const GiB = 1024 * MiB;
const BLOB = MiB;
const FILL_CONCURRENCY = 8;
/** The same absolute change at every size. */
const CHANGE_BLOBS = 16;
const STEPS = 10;
/** Incrementals before the STEPS measured (see 3. above). */
const WARM_UP_STEPS = 3;
const COLD_STEPS = 3;
const LOAD_BODY = 4 * KiB;
const LOAD_CONCURRENCY = 16;
/** The latency runs (see measureLatency): rounds of an idle block, an incremental and a block after it. */
const LATENCY_ROUNDS = 12;
/** The ids the latency load rewrites (256 MiB of 4 KiB blobs). */
const LOAD_IDS = 65_536;
const LATENCY_WARM_UP_MS = 1000;
const IDLE_BLOCK_MS = 1000;
const AFTER_BLOCK_MS = 500;
/** How long of the full checkpoint under load the load runs, at most. */
const FULL_LOAD_MS = 60_000;
const TIME = "/usr/bin/time";

const TARGET = { incremental: 1.5, cold: 1.5, rss: 1.25, full: 1.5, tools: 1.25, p99Incremental: 1.2, p99Full: 1.5 };

export function benchSizesGiB(): number[] {
  const raw = process.env.CAIRN_BENCH_SIZES_GB?.trim() || "1,16";
  const sizes = raw.split(",").map((s) => Number(s.trim()));
  if (sizes.some((s) => !(s > 0))) throw new Error(`CAIRN_BENCH_SIZES_GB=${JSON.stringify(raw)}: expected sizes in GiB, e.g. 1,16`);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

// ---- the node's RSS and status ------------------------------------------------------------------

function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Run `body` while sampling the process's RSS every 20 ms; returns its result and the peak seen. */
async function sampled<T>(pid: number, body: () => Promise<T>): Promise<{ value: T; peakRss: number }> {
  let peak = rssBytes(pid);
  let done = false;
  const sampler = (async () => {
    while (!done) {
      const r = rssBytes(pid);
      if (r > peak) peak = r;
      await Bun.sleep(20);
    }
  })();
  try {
    const value = await body();
    return { value, peakRss: Math.max(peak, rssBytes(pid)) };
  } finally {
    done = true;
    await sampler;
  }
}

interface LastResult {
  id: number;
  durationMs: number;
  scan: string;
  scanReason?: string;
  bytesRead: number;
  newBytes: number;
  /** A WAL fold of the node's was still running beside the pin. */
  walFoldAtPin?: boolean;
  phases?: Record<string, number>;
  /** The ranges built, and where the workers' time in them went (ms). */
  rangeMs?: Record<string, number>;
}

async function lastResult(node: RunningNode): Promise<LastResult> {
  const res = await fetch("http://localhost/v1/checkpoints/status", { unix: socketOf(node) } as RequestInit);
  const s = (await res.json()) as { last: { outcome: string; error?: string; result?: LastResult } | null };
  if (s.last?.outcome !== "success" || !s.last.result) throw new Error(`the last checkpoint did not succeed: ${JSON.stringify(s.last)}`);
  return s.last.result;
}

interface Ckpt extends LastResult {
  wallMs: number;
  peakRss: number;
  rssAfter: number;
}

/**
 * A checkpoint (into `path`, else the configured store) asked for on the admin socket, as
 * `checkpoint create` does, and waited for (retention included); its result. No CLI process
 * is started: on two cores its start-up would be measured too.
 */
async function checkpointRun(node: RunningNode, path?: string): Promise<LastResult> {
  const res = await fetch("http://localhost/v1/checkpoints", {
    unix: socketOf(node),
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(path ? { path } : {}),
  } as RequestInit);
  const run = (await res.json()) as { run: number; error?: string };
  if (res.status !== 202) throw new Error(`POST /v1/checkpoints: HTTP ${res.status} ${JSON.stringify(run)}`);
  for (;;) {
    const s = await fetch("http://localhost/v1/checkpoints/status", { unix: socketOf(node) } as RequestInit);
    const st = (await s.json()) as { running: { run: number } | null };
    if (st.running?.run !== run.run) return lastResult(node);
    await Bun.sleep(50);
  }
}

/** checkpointRun, the node's RSS sampled meanwhile. */
async function checkpoint(node: RunningNode, path?: string): Promise<Ckpt> {
  const t0 = performance.now();
  const { value, peakRss } = await sampled(node.pid, () => checkpointRun(node, path));
  return { ...value, wallMs: performance.now() - t0, peakRss, rssAfter: rssBytes(node.pid) };
}

// ---- writes -------------------------------------------------------------------------------------

/** Random bodies cut from one pool (fresh random bytes per blob would cost more than the PUT). */
class Bodies {
  private readonly pool = randomBytes(64 * MiB);
  private n = 0;
  next(size: number): Uint8Array {
    const at = (Math.floor(Math.random() * (this.pool.length - size)) >>> 12) << 12;
    const body = this.pool.slice(at, at + size);
    // no two bodies alike, even from the same place in the pool
    new DataView(body.buffer).setFloat64(0, ++this.n + Math.random());
    crypto.getRandomValues(body.subarray(8, 4096));
    return body;
  }
}

async function putMany(ctx: BenchContext, url: string, ids: string[], bodies: Bodies, what: string): Promise<LoadResult> {
  const r = await runLoad({ count: ids.length, concurrency: FILL_CONCURRENCY, timeCapMs: 3_600_000, request: (i) => putBlob(url, ids[i]!, bodies.next(BLOB)) });
  if (r.failed > 0) ctx.fail(`scale: ${what}: ${r.failed} PUT(s) failed; first: ${r.firstFailure}`);
  return r;
}

async function dropCaches(): Promise<boolean> {
  await syncAll();
  const r = await exec(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"]);
  return r.code === 0;
}

// ---- PUT latency ----------------------------------------------------------------------------------

interface Latency {
  samples: number;
  failed: number;
  p50: number;
  p99: number;
}

function latencyOf(ms: number[], failed: number): Latency {
  return { samples: ms.length, failed, p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

/** 4 KiB PUTs at 16 in flight until `stop()`, over LOAD_IDS ids; each request's start time and latency. */
async function putLoad(url: string, tag: string, stop: () => boolean): Promise<{ starts: number[]; ms: number[]; failed: number }> {
  const starts: number[] = [];
  const ms: number[] = [];
  let failed = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: LOAD_CONCURRENCY }, async () => {
      while (!stop()) {
        const i = next++;
        const t0 = performance.now();
        try {
          await putBlob(url, `${tag}-${i % LOAD_IDS}`, randomBytes(LOAD_BODY));
          starts.push(t0);
          ms.push(performance.now() - t0);
        } catch {
          failed++;
        }
      }
    }),
  );
  return { starts, ms, failed };
}

interface LatencyResults {
  idle: Latency;
  /** The idle blocks of even rounds against those of odd ones (the larger p99 over the smaller): this run's own noise. */
  idleSpread: number;
  incremental: Latency & { checkpoints: number; medianMs: number; medianNewBytes: number };
  /** The blocks right after each incremental (its WAL folds catching up). */
  after: Latency;
  /** The same rounds' bare writes of each incremental's new bytes in the time it took (floor-writer.ts): the floor on this machine. */
  floor: Latency & { medianMs: number };
  /** `loadMs`: how long of it the load ran (FULL_LOAD_MS at most). */
  full: Latency & { durationMs: number; loadMs: number };
}

type BlockKind = "idle" | "incremental" | "after" | "floor" | "floorAfter" | "full";

/**
 * The load runs throughout; checkpoints and idle blocks alternate under it, so that whatever
 * drifts during the run (the database growing under the load, the WAL, the host) weighs on
 * both sides alike: LATENCY_ROUNDS rounds of an idle block, an incremental and a block after
 * it (not idle: the WAL folds the checkpoint held back catch up there); as many rounds of an
 * idle block and the floor: the bytes one of those incrementals stored, in the time it took,
 * read, hashed, written and fsynced by a bare process (floor-writer.ts); then a full
 * checkpoint into an empty directory, the load running through its first FULL_LOAD_MS. The
 * load rewrites LOAD_IDS ids over and over, so that the database does not grow by what the
 * load writes throughout. A request counts where it started.
 */
async function measureLatency(ctx: BenchContext, node: RunningNode, tag: string): Promise<LatencyResults> {
  await syncAll();
  let stopLoad = false;
  const load = putLoad(node.url, tag, () => stopLoad);
  const blocks: { kind: BlockKind; round: number; a: number; b: number }[] = [];
  const timed = async <T>(kind: BlockKind, round: number, body: () => Promise<T>): Promise<T> => {
    const a = performance.now();
    const v = await body();
    blocks.push({ kind, round, a, b: performance.now() });
    return v;
  };
  const floorDir = ctx.tmp.make("cairn-bench-scale-floor-");
  const floor = Bun.spawn([process.execPath, join(REPO_ROOT, "bench/lib/floor-writer.ts"), join(node.dir, "db", "cairn.db-wal"), floorDir], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const floorReplies = floor.stdout.getReader();
  const floorWrite = async (bytes: number, spreadMs: number) => {
    floor.stdin.write(`${bytes} ${Math.round(spreadMs)}\n`);
    await floor.stdin.flush();
    const t0 = performance.now();
    const reply = await floorReplies.read();
    if (reply.done) throw new Error("floor-writer.ts ended early");
    return performance.now() - t0;
  };
  await Bun.sleep(LATENCY_WARM_UP_MS);
  const durations: number[] = [];
  const newBytes: number[] = [];
  const floorMs: number[] = [];
  try {
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      await timed("idle", round, () => Bun.sleep(IDLE_BLOCK_MS));
      const c = await timed("incremental", round, () => checkpointRun(node));
      durations.push(c.durationMs);
      newBytes.push(c.newBytes);
      if (c.scan !== "changes") ctx.fail(`scale: an incremental checkpoint under load read the whole database: ${c.scanReason}`);
      await timed("after", round, () => Bun.sleep(AFTER_BLOCK_MS));
    }
    // the floor's rounds come after (between two incrementals they would lengthen the next one's change)
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      await timed("idle", LATENCY_ROUNDS + round, () => Bun.sleep(IDLE_BLOCK_MS));
      floorMs.push(await timed("floor", round, () => floorWrite(newBytes[round]!, durations[round]!)));
      await timed("floorAfter", round, () => Bun.sleep(AFTER_BLOCK_MS));
    }
  } finally {
    floor.kill();
    await floor.exited;
    ctx.tmp.remove(floorDir);
  }
  await timed("idle", 2 * LATENCY_ROUNDS, () => Bun.sleep(IDLE_BLOCK_MS));
  const fresh = ctx.tmp.make("cairn-bench-scale-full-");
  // the load goes on for FULL_LOAD_MS of the full checkpoint at most: the snapshot it holds
  // keeps the WAL from being folded, and at the larger sizes the WAL would outgrow the disk
  const fullStart = performance.now();
  void Bun.sleep(FULL_LOAD_MS).then(() => (stopLoad = true));
  const full = await timed("full", 0, () => checkpointRun(node, fresh));
  const fullLoadMs = Math.min(performance.now(), fullStart + FULL_LOAD_MS) - fullStart;
  stopLoad = true;
  const r = await load;
  ctx.tmp.remove(fresh);
  if (r.failed > 0) ctx.fail(`scale: ${r.failed} PUT(s) failed during the latency runs`);
  const pick = (want: (k: { kind: BlockKind; round: number }) => boolean) => {
    const chosen = blocks.filter(want).sort((x, y) => x.a - y.a);
    const out: number[] = [];
    r.starts.forEach((t, i) => {
      if (chosen.some((k) => t >= k.a && t < k.b)) out.push(r.ms[i]!);
    });
    return out;
  };
  const even = percentile(pick((k) => k.kind === "idle" && k.round % 2 === 0), 99);
  const odd = percentile(pick((k) => k.kind === "idle" && k.round % 2 === 1), 99);
  return {
    idle: latencyOf(pick((k) => k.kind === "idle"), r.failed),
    idleSpread: Math.max(even, odd) / Math.min(even, odd),
    incremental: { ...latencyOf(pick((k) => k.kind === "incremental"), 0), checkpoints: durations.length, medianMs: median(durations), medianNewBytes: median(newBytes) },
    after: latencyOf(pick((k) => k.kind === "after"), 0),
    floor: { ...latencyOf(pick((k) => k.kind === "floor"), 0), medianMs: median(floorMs) },
    full: { ...latencyOf(pick((k) => k.kind === "full"), 0), durationMs: full.durationMs, loadMs: fullLoadMs },
  };
}

// ---- tools ----------------------------------------------------------------------------------------

interface Tool {
  ms: number;
  peakRss: number;
}

async function peakRssOf(ctx: BenchContext, argv: string[], what: string): Promise<Tool> {
  const rssFile = join(ctx.tmp.make("cairn-bench-rss-"), "rss");
  await syncAll();
  const r = await exec([TIME, "-f", "%M", "-o", rssFile, ...argv]);
  if (r.code !== 0) ctx.fail(`scale: ${what}: exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(-500)}`);
  const kib = Number(readFileSync(rssFile, "utf8").trim().split("\n").at(-1));
  return { ms: r.ms, peakRss: kib * 1024 };
}

interface Tools {
  list: Tool;
  verify: Tool;
  export: Tool;
  gc: Tool;
  restore: Tool;
}

async function measureTools(ctx: BenchContext, store: string, newest: number): Promise<Tools> {
  const list = await peakRssOf(ctx, [BINARY, "list-db-checkpoint", store], "list-db-checkpoint");
  const verify = await peakRssOf(ctx, [BINARY, "verify-db-checkpoint", store], "verify-db-checkpoint");
  const out = ctx.tmp.make("cairn-bench-scale-out-");
  const exported = await peakRssOf(ctx, [BINARY, "export-db-checkpoint", store, "--checkpoint-id", String(newest), "--output", join(out, "c.tar")], "export-db-checkpoint");
  ctx.tmp.remove(out);
  const gc = await peakRssOf(ctx, [process.execPath, join(REPO_ROOT, "bench/lib/gc-probe.ts"), store], "garbage collection");
  const into = ctx.tmp.make("cairn-bench-scale-restore-");
  const restore = await peakRssOf(ctx, [BINARY, "restore", "--db-checkpoint-path", store, "--db-path", join(into, "db")], "restore");
  ctx.tmp.remove(into);
  return { list, verify, export: exported, gc, restore };
}

// ---- one size -------------------------------------------------------------------------------------

interface SizeResults {
  gib: number;
  dbBytes: number;
  fillMs: number;
  first: Ckpt;
  cpSyncMs: number[];
  /** How long the disk took to come back near rest after the first checkpoint (settleDisk). */
  settleMs: number;
  full: Ckpt;
  /** The incrementals before the measured ones (not counted). */
  warmUp: Ckpt[];
  steps: Ckpt[];
  cold: Ckpt[];
  coldDropped: boolean;
  latency: LatencyResults;
  storeBytes: number;
  tools: Tools;
}

async function measureSize(ctx: BenchContext, gib: number, disk: { probeDir: string; quietMs: number }): Promise<SizeResults> {
  const tag = `scale ${gib} GiB`;
  const dir = ctx.tmp.make("cairn-bench-scale-");
  try {
    const node = await startNode(dir, "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 3\n");
    const store = join(dir, "ckpt");
    const dbFile = join(dir, "db", "cairn.db");
    const bodies = new Bodies();
    const count = Math.round((gib * GiB) / BLOB);
    const ids = Array.from({ length: count }, (_, i) => `s${String(i).padStart(7, "0")}`);
    ctx.log(`${tag}: PUT ${count} blobs of 1 MiB at concurrency ${FILL_CONCURRENCY}`);
    const fill = await putMany(ctx, node.url, ids, bodies, "filling");
    ctx.log(`${tag}: filled in ${secs(fill.elapsedMs)}`);
    await syncAll();
    const first = await checkpoint(node);
    ctx.log(`${tag}: first checkpoint (${first.scan}) in ${secs(first.durationMs)}`);
    const settleMs = await settleDisk(disk);
    ctx.log(`${tag}: the disk back near rest ${secs(settleMs)} after the first checkpoint`);
    const change = async () => {
      const picked = Array.from({ length: CHANGE_BLOBS }, () => ids[Math.floor(Math.random() * ids.length)]!);
      await putMany(ctx, node.url, picked, bodies, "the change");
    };
    const warmUp: Ckpt[] = [];
    for (let i = 0; i < WARM_UP_STEPS; i++) {
      await change();
      await syncAll();
      warmUp.push(await checkpoint(node));
    }
    ctx.log(`${tag}: warm-up incrementals ${warmUp.map((s) => `${secs(s.durationMs)} (peak RSS ${mib(s.peakRss)})`).join(", ")}`);
    const steps: Ckpt[] = [];
    for (let i = 0; i < STEPS; i++) {
      await change();
      await syncAll();
      const c = await checkpoint(node);
      if (c.scan !== "changes") ctx.fail(`scale: ${tag}: incremental ${i + 1} read the whole database: ${c.scanReason}`);
      steps.push(c);
    }
    ctx.log(`${tag}: incrementals ${steps.map((s) => `${secs(s.durationMs)}${s.walFoldAtPin ? " (beside a fold)" : ""}`).join(", ")}`);
    ctx.log(`${tag}: their phases (ms): ${steps.map((s) => JSON.stringify(s.phases ?? {})).join(" ")}`);
    ctx.log(`${tag}: inside their ranges (ms): ${steps.map((s) => JSON.stringify(s.rangeMs ?? {})).join(" ")}`);
    const cold: Ckpt[] = [];
    let coldDropped = true;
    for (let i = 0; i < COLD_STEPS; i++) {
      await change();
      coldDropped = (await dropCaches()) && coldDropped;
      cold.push(await checkpoint(node));
    }
    ctx.log(`${tag}: incrementals with the page cache dropped ${cold.map((s) => secs(s.durationMs)).join(", ")}`);
    ctx.log(`${tag}: their phases (ms): ${cold.map((s) => JSON.stringify(s.phases ?? {})).join(" ")}; inside their ranges (ms): ${cold.map((s) => JSON.stringify(s.rangeMs ?? {})).join(" ")}`);
    const latency = await measureLatency(ctx, node, `lat${gib}`);
    ctx.log(`${tag}: p99 PUT idle ${latency.idle.p99.toFixed(1)} ms, incremental ${latency.incremental.p99.toFixed(1)} ms, the floor ${latency.floor.p99.toFixed(1)} ms, full ${latency.full.p99.toFixed(1)} ms`);
    // the full checkpoint against cp + sync of the same file, in turn; taken last, so that the
    // incrementals above do not follow two more database-sized writes (the disk's write-back of
    // them slowed the first incrementals after them)
    const work = ctx.tmp.make("cairn-bench-scale-cp-");
    const cpSyncMs = [(await timedCopy(dbFile, work, true)).ms];
    const fresh = ctx.tmp.make("cairn-bench-scale-full-");
    await syncAll();
    const full = await checkpoint(node, fresh);
    ctx.tmp.remove(fresh);
    cpSyncMs.push((await timedCopy(dbFile, work, true)).ms);
    ctx.tmp.remove(work);
    ctx.log(`${tag}: full checkpoint ${secs(full.durationMs)}; cp + sync ${cpSyncMs.map(secs).join(", ")}`);
    const dbBytes = statSync(dbFile).size;
    await stopChecked(node);
    const storeBytes = Number((await must(["du", "-sb", store])).stdout.split(/\s/)[0]);
    const listed = JSON.parse((await must([BINARY, "list-db-checkpoint", store, "--json"])).stdout) as { id: number }[];
    const newest = Math.max(...listed.map((c) => c.id));
    const tools = await measureTools(ctx, store, newest);
    ctx.log(`${tag}: peak RSS list ${mib(tools.list.peakRss)}, verify ${mib(tools.verify.peakRss)}, export ${mib(tools.export.peakRss)}, gc ${mib(tools.gc.peakRss)}, restore ${mib(tools.restore.peakRss)}`);
    return { gib, dbBytes, fillMs: fill.elapsedMs, first, settleMs, cpSyncMs, full, warmUp, steps, cold, coldDropped, latency, storeBytes, tools };
  } finally {
    ctx.tmp.remove(dir);
  }
}

// ---- the report -------------------------------------------------------------------------------------

/** Least-squares slope of ys over 0..n-1. */
function slope(ys: number[]): number {
  const n = ys.length;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num_ = 0;
  let den = 0;
  ys.forEach((y, x) => {
    num_ += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  });
  return den === 0 ? 0 : num_ / den;
}

const ms = (x: number) => `${x.toFixed(1)} ms`;

/** Median time of `n` 4 KiB writes, each followed by fdatasync, in `dir` (ms). */
async function diskProbe(dir: string, n: number): Promise<number> {
  const fd = openSync(join(dir, "probe"), "w", 0o600);
  const block = new Uint8Array(4096);
  const times: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      writeSync(fd, block, 0, block.length, 0);
      fdatasyncSync(fd);
      times.push(performance.now() - t0);
      await Bun.sleep(20);
    }
  } finally {
    closeSync(fd);
  }
  return median(times);
}

/**
 * Wait until the disk is back near rest (the probe's median within 2× the one taken at the
 * start of the section, at most five minutes): after a database-sized write, this VM's disk
 * goes on writing it back for a minute or more after `sync` returned, and an incremental timed
 * then measures that backlog, not its own cost. Returns how long it waited (ms).
 */
async function settleDisk(disk: { probeDir: string; quietMs: number }): Promise<number> {
  const t0 = performance.now();
  await syncAll();
  while (performance.now() - t0 < 300_000 && (await diskProbe(disk.probeDir, 10)) > 2 * disk.quietMs) await Bun.sleep(1000);
  return performance.now() - t0;
}

function render(results: SizeResults[]): string {
  const small = results[0]!;
  const large = results.at(-1)!;
  const out: string[] = [];
  const peakOf = (r: SizeResults) => Math.max(...r.steps.map((s) => s.peakRss));
  const incr = (r: SizeResults) => median(r.steps.map((s) => s.durationMs));
  const cold = (r: SizeResults) => median(r.cold.map((s) => s.durationMs));
  const rssTrend = (r: SizeResults) => slope(r.steps.map((s) => s.peakRss));
  out.push(
    `Sizes: ${results.map((r) => `${r.gib} GiB (database ${mib(r.dbBytes)})`).join(", ")}; node defaults (sync true, one checkpoint worker), three checkpoints kept. ` +
      `The change before each incremental: ${CHANGE_BLOBS} blobs of 1 MiB rewritten over REST.`,
    "",
  );
  if (results.length > 1) {
    const lr = `${large.gib} / ${small.gib} GiB`;
    const rows = [
      ["incremental checkpoint after the same change: time", lr, `≤ ${TARGET.incremental}`, `${ratio(incr(large) / incr(small))} (${ms(incr(large))} / ${ms(incr(small))}, medians of ${STEPS})`, met(incr(large) / incr(small) <= TARGET.incremental)],
      [
        "the same with the page cache dropped before it",
        lr,
        `≤ ${TARGET.cold}`,
        `${ratio(cold(large) / cold(small))} (${ms(cold(large))} / ${ms(cold(small))}, medians of ${COLD_STEPS})${large.coldDropped ? "" : " (the cache could not be dropped)"}`,
        met(cold(large) / cold(small) <= TARGET.cold),
      ],
      [
        `node peak RSS across ${STEPS} checkpoints`,
        lr,
        `≤ ${TARGET.rss}, no upward trend`,
        `${ratio(peakOf(large) / peakOf(small))} (${mib(peakOf(large))} / ${mib(peakOf(small))}); trend ${num(rssTrend(large) / MiB)} MiB per checkpoint at ${large.gib} GiB`,
        met(peakOf(large) / peakOf(small) <= TARGET.rss && rssTrend(large) < 2 * MiB),
      ],
      [
        `full checkpoint / (cp + sync) of the same database, at ${large.gib} GiB`,
        `cp + sync ${secs(median(large.cpSyncMs))}`,
        `≤ ${TARGET.full}`,
        `${ratio(large.full.durationMs / median(large.cpSyncMs))} (${secs(large.full.durationMs)})`,
        met(large.full.durationMs / median(large.cpSyncMs) <= TARGET.full),
      ],
      ...(["list", "verify", "export", "gc"] as const).map((k) => [
        `peak RSS of ${k === "gc" ? "garbage collection" : k}`,
        lr,
        `≤ ${TARGET.tools}`,
        `${ratio(large.tools[k].peakRss / small.tools[k].peakRss)} (${mib(large.tools[k].peakRss)} / ${mib(small.tools[k].peakRss)})`,
        met(large.tools[k].peakRss / small.tools[k].peakRss <= TARGET.tools),
      ]),
      ...results.map((r) => [
        `p99 PUT 4 KiB at c16 during incrementals / idle; during a full one / idle (${r.gib} GiB)`,
        `idle ${ms(r.latency.idle.p99)}`,
        `≤ ${TARGET.p99Incremental}; ≤ ${TARGET.p99Full}; 0 failed`,
        `${ratio(r.latency.incremental.p99 / r.latency.idle.p99)} (${ms(r.latency.incremental.p99)}, ${r.latency.incremental.samples} samples in ${r.latency.incremental.checkpoints} checkpoints); ` +
          `${ratio(r.latency.full.p99 / r.latency.idle.p99)} (${ms(r.latency.full.p99)}, ${r.latency.full.samples} samples); ${r.latency.idle.failed} failed; ` +
          `the floor (a bare write of each incremental's bytes in its time) ${ratio(r.latency.floor.p99 / r.latency.idle.p99)}; idle against idle ${ratio(r.latency.idleSpread)}`,
        met(r.latency.incremental.p99 / r.latency.idle.p99 <= TARGET.p99Incremental && r.latency.full.p99 / r.latency.idle.p99 <= TARGET.p99Full && r.latency.idle.failed === 0),
      ]),
    ];
    out.push(table([{ header: "figure" }, { header: "against" }, { header: "target" }, { header: "measured" }, { header: "met" }], rows), "");
  }
  out.push(
    table(
      [{ header: "size" }, { header: "fill" }, { header: "first (full)" }, { header: "disk at rest after" }, { header: "full, empty dir" }, { header: "cp + sync" }, { header: "incrementals (node ms)" }, { header: "read per incremental" }, { header: "page cache dropped" }, { header: "store" }],
      results.map((r) => [
        `${r.gib} GiB`,
        secs(r.fillMs),
        secs(r.first.durationMs),
        secs(r.settleMs),
        secs(r.full.durationMs),
        r.cpSyncMs.map(secs).join(", "),
        r.steps.map((s) => `${s.durationMs.toFixed(0)}${s.walFoldAtPin ? "*" : ""}`).join(", "),
        mib(median(r.steps.map((s) => s.bytesRead))),
        r.cold.map((s) => ms(s.durationMs)).join(", "),
        mib(r.storeBytes),
      ]),
    ),
    "(* : a WAL fold of the node's was still running beside the checkpoint's pin; it went on writing the database file and its fsync while the checkpoint ran.)",
    "",
    table(
      [{ header: "size" }, { header: "node peak RSS per checkpoint: first; the three warm-up incrementals; the ten measured; the full one into an empty dir" }, { header: "RSS after the last" }],
      results.map((r) => [
        `${r.gib} GiB`,
        [[r.first], r.warmUp, r.steps, [r.full]].map((g) => g.map((s) => num(s.peakRss / MiB)).join(", ")).join("; ") + " MiB",
        mib(r.steps.at(-1)!.rssAfter),
      ]),
    ),
    "",
    table(
      [{ header: "size" }, { header: "list" }, { header: "verify" }, { header: "export (.tar)" }, { header: "garbage collection" }, { header: "restore" }],
      results.map((r) => [
        `${r.gib} GiB`,
        ...(["list", "verify", "export", "gc", "restore"] as const).map((k) => `${mib(r.tools[k].peakRss)} (${secs(r.tools[k].ms)})`),
      ]),
    ),
    "",
    table(
      [
        { header: "size" },
        { header: "PUT p50 / p99 idle" },
        { header: "idle: even / odd rounds' p99" },
        { header: "during incrementals" },
        { header: "just after them" },
        { header: "during a bare write of the same bytes in the same time (the floor)" },
        { header: "during a full checkpoint" },
      ],
      results.map((r) => [
        `${r.gib} GiB`,
        `${ms(r.latency.idle.p50)} / ${ms(r.latency.idle.p99)} (${r.latency.idle.samples})`,
        `${ratio(r.latency.idleSpread)} apart`,
        `${ms(r.latency.incremental.p50)} / ${ms(r.latency.incremental.p99)} (${r.latency.incremental.samples}; median checkpoint ${ms(r.latency.incremental.medianMs)})`,
        `${ms(r.latency.after.p50)} / ${ms(r.latency.after.p99)} (${r.latency.after.samples})`,
        `${ms(r.latency.floor.p50)} / ${ms(r.latency.floor.p99)} (${r.latency.floor.samples}; median ${ms(r.latency.floor.medianMs)} for ${mib(r.latency.incremental.medianNewBytes)})`,
        `${ms(r.latency.full.p50)} / ${ms(r.latency.full.p99)} (${r.latency.full.samples}; checkpoint ${secs(r.latency.full.durationMs)}, the load during its first ${secs(r.latency.full.loadMs)})`,
      ]),
    ),
  );
  return out.join("\n");
}

export const scaleSection: Section = {
  title: "Scale",
  async run(ctx: BenchContext): Promise<string> {
    await ensureBinary(ctx.log);
    if (!existsSync(TIME)) throw new Error(`${TIME} (GNU time) is needed for the peak RSS figures`);
    const probeDir = ctx.tmp.make("cairn-bench-scale-probe-");
    const quiet = await diskProbe(probeDir, 30);
    ctx.log(`scale: the disk at rest: 4 KiB write + fdatasync median ${quiet.toFixed(2)} ms`);
    const results: SizeResults[] = [];
    for (const gib of benchSizesGiB()) results.push(await measureSize(ctx, gib, { probeDir, quietMs: quiet }));
    return render(results);
  },
};
