/**
 * What the Checkpoints and Restore sections share: a database of random blobs built over REST
 * through a running node, checkpoints of it taken through the CLI, the `cp` / `cp` + `sync`
 * anchors on its file, and the small process helpers (run a command and time it, `sync`,
 * CPU time from /proc, `du`).
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { type LoadResult, putBlob, runLoad } from "./load.ts";
import { BINARY, type RunningNode } from "./node.ts";
import { mib, secs } from "./report.ts";
import type { BenchContext } from "./section.ts";
import { median } from "./stats.ts";
import { randomBytes } from "./workload.ts";

export const KiB = 1024;
/** Blobs in the database at scale 1 (~1 GB at 1–100 KiB each). */
export const BUILD_BLOBS = 20_000;
export const MIN_BLOB = 1 * KiB;
export const MAX_BLOB = 100 * KiB;
/** Requests in flight while building or changing the database. */
export const CONCURRENCY = 16;
export const SEED = 0x5eed_c0de;

// ---- processes ----------------------------------------------------------------------------------

export interface Exec {
  stdout: string;
  stderr: string;
  code: number;
  ms: number;
  /** CPU time (user + system) of the process, ms. */
  cpuMs: number;
  cpuUserMs: number;
  cpuSysMs: number;
}

export async function exec(argv: string[], env?: Record<string, string>): Promise<Exec> {
  const t0 = performance.now();
  const p = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: env ? { ...process.env, ...env } : undefined });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const ms = performance.now() - t0;
  const usage = p.resourceUsage();
  const usToMs = (us: bigint | number | undefined) => (us === undefined ? Number.NaN : Number(us) / 1000);
  return {
    stdout,
    stderr,
    code,
    ms,
    cpuMs: usToMs(usage?.cpuTime.total),
    cpuUserMs: usToMs(usage?.cpuTime.user),
    cpuSysMs: usToMs(usage?.cpuTime.system),
    // not usage.maxRSS: a child Bun spawns reports at least this bench process's own peak RSS
    // (see peakRss in restore.ts)
  };
}

export async function must(argv: string[], env?: Record<string, string>): Promise<Exec> {
  const r = await exec(argv, env);
  if (r.code !== 0) throw new Error(`${argv.join(" ")}: exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  return r;
}

/** Flush dirty pages (not timed), so earlier writes are not billed to the next measurement. */
export async function syncAll(): Promise<void> {
  await must(["sync"]);
}

export async function duBytes(dir: string): Promise<number> {
  const r = await must(["du", "-sb", dir]);
  return Number(r.stdout.split(/\s/)[0]);
}

const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

export interface Cpu {
  userMs: number;
  sysMs: number;
}

/** CPU time (all threads) a running process has used so far; NaN if unknown. */
export function processCpu(pid: number): Cpu {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields 14 and 15 of stat(5) (utime, stime); f[0] is field 3
    return { userMs: (Number(f[11]) / CLOCK_TICKS) * 1000, sysMs: (Number(f[12]) / CLOCK_TICKS) * 1000 };
  } catch {
    return { userMs: Number.NaN, sysMs: Number.NaN };
  }
}

export function cpuSince(pid: number, before: Cpu): Cpu {
  const now = processCpu(pid);
  return { userMs: now.userMs - before.userMs, sysMs: now.sysMs - before.sysMs };
}

// ---- the blobs ----------------------------------------------------------------------------------

/** mulberry32: a seeded PRNG for sizes and choices, so runs pick the same shapes. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Blob {
  id: string;
  size: number;
}

/** The bench's view of the blobs a node holds: ids and sizes, no contents. */
export class Blobs {
  readonly list: Blob[] = [];
  private nextId = 0;
  constructor(private readonly rand: () => number) {}

  size(): number {
    return MIN_BLOB + Math.floor(this.rand() * (MAX_BLOB - MIN_BLOB + 1));
  }

  fresh(): Blob {
    return { id: `blob-${(this.nextId++).toString().padStart(7, "0")}`, size: this.size() };
  }

  /** `k` distinct indices of the list (partial Fisher–Yates). */
  pick(k: number): number[] {
    const idx = Array.from(this.list, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.rand() * (idx.length - i));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    return idx.slice(0, k);
  }

  bytes(): number {
    return this.list.reduce((s, b) => s + b.size, 0);
  }
}

export async function deleteBlob(url: string, id: string): Promise<void> {
  const res = await fetch(`${url}/v1/blobs/${id}`, { method: "DELETE" });
  await res.arrayBuffer();
  if (res.status !== 204) throw new Error(`DELETE ${id}: HTTP ${res.status}`);
}

export type Op = { kind: "put"; blob: Blob } | { kind: "delete"; id: string };

/** Run `ops` over REST, CONCURRENCY in flight, random bodies; failures fail the run (`what` names them). */
export async function runOps(ctx: BenchContext, url: string, ops: readonly Op[], what: string): Promise<LoadResult> {
  const r = await runLoad({
    count: ops.length,
    concurrency: CONCURRENCY,
    timeCapMs: 600_000,
    request: (i) => {
      const op = ops[i]!;
      return op.kind === "put" ? putBlob(url, op.blob.id, randomBytes(op.blob.size)) : deleteBlob(url, op.id);
    },
  });
  if (r.failed > 0) ctx.fail(`${what}: ${r.failed} failed request(s); first: ${r.firstFailure}`);
  return r;
}

export interface Built {
  /** Blobs PUT. */
  count: number;
  bytes: number;
  elapsedMs: number;
}

/**
 * PUT `count` new blobs of MIN_BLOB–MAX_BLOB random bytes over REST and add them to `blobs`;
 * throws if any PUT failed. `tag` prefixes the progress line and the failure.
 */
export async function addBlobs(ctx: BenchContext, url: string, blobs: Blobs, count: number, tag: string): Promise<Built> {
  const toPut = Array.from({ length: count }, () => blobs.fresh());
  ctx.log(`${tag}: PUT ${count} blobs of 1–100 KiB (random bytes) at concurrency ${CONCURRENCY}`);
  const r = await runOps(
    ctx,
    url,
    toPut.map((blob) => ({ kind: "put", blob })),
    `${tag}: building the database`,
  );
  if (r.failed > 0) throw new Error(`${tag}: building the database: ${r.failed} PUT(s) failed; first: ${r.firstFailure}`);
  blobs.list.push(...toPut);
  const bytes = toPut.reduce((s, b) => s + b.size, 0);
  ctx.log(`${tag}: ${mib(bytes)} of blobs in ${secs(r.elapsedMs)} (${mib(blobs.bytes())} in all)`);
  return { count, bytes, elapsedMs: r.elapsedMs };
}

// ---- the node and its checkpoints ---------------------------------------------------------------

export interface NodeCheckpointConfig {
  sync: boolean;
  compression: "none" | "zstd";
  /** max_background_operations (default: the section's). */
  workers?: number;
}

export function checkpointYaml(storeDir: string, c: NodeCheckpointConfig, defaultWorkers: number): string {
  return [
    "checkpoint_config:",
    `  db_checkpoint_dir: ${storeDir}`,
    "  max_db_checkpoints: 0",
    `  max_background_operations: ${c.workers ?? defaultWorkers}`,
    `  sync: ${c.sync}`,
    `  compression: ${c.compression}`,
    "",
  ].join("\n");
}

/** SIGTERM and wait; a non-zero exit code is an error. */
export async function stopChecked(node: RunningNode): Promise<void> {
  const code = await node.stop();
  if (code !== 0) throw new Error(`the node exited with code ${code} after SIGTERM (expected 0):\n${node.logs().slice(-2000)}`);
}

export const socketOf = (node: RunningNode) => join(node.dir, "admin.socket");

export interface Listed {
  id: number;
  size_bytes: number;
  files: number;
  new_bytes: number;
  duration_ms: number;
  blob_count: number;
}

/** `env` may name CAIRN_KEY_FILE for an encrypted store. */
export async function listing(storeDir: string, env?: Record<string, string>): Promise<Listed[]> {
  const r = await must([BINARY, "list-db-checkpoint", storeDir, "--json"], env);
  return JSON.parse(r.stdout) as Listed[];
}

export interface Ckpt {
  id: number;
  /** duration_ms measured inside the node (manifest stats). */
  durationMs: number;
  /** Wall time of `cairn local-admin checkpoint create` (CLI start, 200 ms status polls, retention + GC when into db_checkpoint_dir). */
  wallMs: number;
  sizeBytes: number;
  newBytes: number;
  files: number;
  /** du -sb of the store after it. */
  storeBytes: number;
  /** CPU time the node process (all threads) used during the CLI command. */
  nodeCpu: Cpu;
}

/** `cairn local-admin checkpoint create --path storeDir` (after an untimed `sync`), and its listing. */
export async function checkpoint(node: RunningNode, storeDir: string, env?: Record<string, string>): Promise<Ckpt> {
  await syncAll();
  const cpu0 = processCpu(node.pid);
  const r = await must([BINARY, "local-admin", "--socket-path", socketOf(node), "checkpoint", "create", "--path", storeDir]);
  const nodeCpu = cpuSince(node.pid, cpu0);
  const m = /Checkpoint (\d+) created/.exec(r.stdout);
  if (!m) throw new Error(`unexpected output of checkpoint create: ${r.stdout.trim()}`);
  const id = Number(m[1]);
  const c = (await listing(storeDir, env)).find((x) => x.id === id);
  if (!c) throw new Error(`checkpoint ${id} is not listed in ${storeDir}`);
  return {
    id,
    durationMs: c.duration_ms,
    wallMs: r.ms,
    sizeBytes: c.size_bytes,
    newBytes: c.new_bytes,
    files: c.files,
    storeBytes: await duBytes(storeDir),
    nodeCpu,
  };
}

// ---- the copy anchors ---------------------------------------------------------------------------

export interface CopyAnchors {
  dbBytes: number;
  cpMs: number[];
  cpCpuMs: number[];
  cpSyncMs: number[];
}

/**
 * `cp dbFile copy` (page cache warm) and `cp` + `sync copy`, `runs` times each, into `workDir`;
 * an untimed `sync` before each run, and one untimed `cp` before the series (the first of a
 * series is most often the slow one on a VM); each copy is removed right after it.
 */
/**
 * One timed `cp dbFile <workDir>/copy.db` (with `sync`: then `sync copy.db`, timed too), after
 * an untimed `sync`; the copy is removed right after. CPU is cp's own (none for sync).
 */
export async function timedCopy(dbFile: string, workDir: string, sync: boolean): Promise<{ ms: number; cpuMs: number }> {
  const copy = join(workDir, "copy.db");
  await syncAll();
  const t0 = performance.now();
  const r = await must(["cp", dbFile, copy]);
  if (sync) await must(["sync", copy]);
  const ms = sync ? performance.now() - t0 : r.ms;
  await must(["rm", "-f", copy]);
  return { ms, cpuMs: r.cpuMs };
}

export async function measureCopyAnchors(ctx: BenchContext, dbFile: string, workDir: string, runs: number, tag: string): Promise<CopyAnchors> {
  const copy = join(workDir, "copy.db");
  const rmCopy = () => must(["rm", "-f", copy, `${copy}-journal`, `${copy}-wal`, `${copy}-shm`]);
  const a: CopyAnchors = { dbBytes: statSync(dbFile).size, cpMs: [], cpCpuMs: [], cpSyncMs: [] };
  await must(["sh", "-c", 'cat "$1" > /dev/null', "sh", dbFile]); // page cache warm
  await must(["cp", dbFile, copy]);
  await rmCopy();
  for (let i = 0; i < runs; i++) {
    const r = await timedCopy(dbFile, workDir, false);
    a.cpMs.push(r.ms);
    a.cpCpuMs.push(r.cpuMs);
  }
  for (let i = 0; i < runs; i++) a.cpSyncMs.push((await timedCopy(dbFile, workDir, true)).ms);
  ctx.log(`${tag}: anchors: cp ${secs(median(a.cpMs))}, cp+sync ${secs(median(a.cpSyncMs))}`);
  return a;
}
