/**
 * `bun run soak` (not part of CI): the compiled node under a steady PUT/DELETE load with
 * periodic checkpoints, then every retained checkpoint restored and audited against what the
 * node had acknowledged when its snapshot was taken. Writes soak/results.md and prints it; the
 * exit code is non-zero if a write was lost, a blob torn, a request, checkpoint or restore
 * failed, or the node did not exit 0 on SIGTERM.
 *
 *   SOAK_SECONDS=600 (or --seconds N)   how long the load runs
 *   SOAK_CLIENTS=8                      requests in flight
 *   SOAK_MAX_BLOBS=20000                the id set grows to at most this many ids
 *   SOAK_CHECKPOINT_SECS=3              periodic checkpoint interval (fractions allowed)
 *
 * Progress goes to stderr. Temp dirs (under /tmp) are removed and the node stopped at the end,
 * on failure and on SIGINT/SIGTERM.
 */
import { Database } from "bun:sqlite";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { must } from "../bench/lib/blob-db.ts";
import { BINARY, ensureBinary, type RunningNode, startNode, stopAllNodes } from "../bench/lib/node.ts";
import { machineFacts, mib, renderFacts, table } from "../bench/lib/report.ts";
import { installCleanup, TempDirs } from "../bench/lib/tmp.ts";
import { type AuditCounts, audit, contentOf, fingerprint, History, type OpRecord } from "./lib/history.ts";

const RESULTS_FILE = join(import.meta.dir, "results.md");
const DELETE_SHARE = 0.1;
/** Of the PUTs, the share that creates a new id (while the set may still grow). */
const NEW_ID_SHARE = 0.3;

function log(msg: string): void {
  console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

function numberSetting(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function settings() {
  const argv = process.argv.slice(2);
  let secondsArg: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--seconds") secondsArg = argv[++i];
    else if (a.startsWith("--seconds=")) secondsArg = a.slice("--seconds=".length);
    else throw new Error(`unknown argument ${JSON.stringify(a)} (usage: bun run soak [--seconds N])`);
  }
  return {
    seconds: numberSetting("--seconds / SOAK_SECONDS", secondsArg ?? process.env.SOAK_SECONDS, 600, 1),
    clients: Math.round(numberSetting("SOAK_CLIENTS", process.env.SOAK_CLIENTS, 8, 1)),
    maxBlobs: Math.round(numberSetting("SOAK_MAX_BLOBS", process.env.SOAK_MAX_BLOBS, 20_000, 1)),
    checkpointSecs: numberSetting("SOAK_CHECKPOINT_SECS", process.env.SOAK_CHECKPOINT_SECS, 3, 0.05),
  };
}
type Settings = ReturnType<typeof settings>;

function nodeYaml(storeDir: string, s: Settings): string {
  const secs = Math.floor(s.checkpointSecs);
  const nanos = Math.round((s.checkpointSecs - secs) * 1e9);
  return [
    "checkpoint_config:",
    `  db_checkpoint_dir: ${storeDir}`,
    "  periodic_db_checkpoints: true",
    `  db_checkpoint_interval: {secs: ${secs}, nanos: ${nanos}}`,
    "  db_checkpoint_startup_delay_secs: 1",
    "  max_db_checkpoints: 3",
    "",
  ].join("\n");
}

// ---- the load -------------------------------------------------------------------------------------

interface LoadStats {
  elapsedMs: number;
  requests: number;
}

async function request(url: string, h: History, id: string, op: OpRecord, body?: Uint8Array): Promise<void> {
  const rec = h.get(id);
  rec.busy = true;
  rec.ops.push(op);
  try {
    const res = await fetch(`${url}/v1/blobs/${id}`, { method: op.kind === "put" ? "PUT" : "DELETE", body });
    const text = await res.text();
    const ok = op.kind === "put" ? res.status === 201 || res.status === 204 : res.status === 204;
    if (!ok) throw new Error(`${op.kind.toUpperCase()} ${id}: HTTP ${res.status} ${text.slice(0, 200).trim()}`);
    op.ackMs = Date.now();
    if (op.kind === "put") {
      rec.present = true;
      h.ackedWrites++;
    } else {
      rec.present = false;
      h.ackedDeletes++;
    }
  } catch (e) {
    h.failed++;
    h.firstFailure ??= e instanceof Error ? e.message : String(e);
  } finally {
    rec.busy = false;
  }
}

/** An idle id, `present` or any, from the set; undefined if a few random tries find none. */
function pickIdle(h: History, wantPresent: boolean): string | undefined {
  if (h.ids.length === 0) return undefined;
  for (let tries = 0; tries < 16; tries++) {
    const id = h.ids[Math.floor(Math.random() * h.ids.length)]!;
    const r = h.get(id);
    if (!r.busy && (!wantPresent || r.present)) return id;
  }
  return undefined;
}

async function runLoad(url: string, h: History, s: Settings): Promise<LoadStats> {
  const t0 = performance.now();
  const deadline = t0 + s.seconds * 1000;
  let requests = 0;
  const client = async () => {
    while (performance.now() < deadline) {
      requests++;
      if (Math.random() < DELETE_SHARE) {
        const id = pickIdle(h, true);
        if (id) {
          await request(url, h, id, { kind: "delete", version: h.get(id).versions, sentMs: Date.now(), ackMs: Number.NaN });
          continue;
        }
      }
      const grow = h.ids.length < s.maxBlobs && (h.ids.length < s.clients * 4 || Math.random() < NEW_ID_SHARE);
      const id = (grow ? undefined : pickIdle(h, false)) ?? (h.ids.length < s.maxBlobs ? h.newId() : undefined);
      if (!id) continue; // every try hit a busy id; try again
      const rec = h.get(id);
      const version = ++rec.versions;
      const body = contentOf(id, version);
      await request(url, h, id, { kind: "put", version, fp: fingerprint(body), sentMs: Date.now(), ackMs: Number.NaN }, body);
    }
  };
  await Promise.all(Array.from({ length: s.clients }, client));
  return { elapsedMs: performance.now() - t0, requests };
}

// ---- the node's figures -------------------------------------------------------------------------

interface Status {
  pid: number;
  blob_count: number;
  blob_bytes: number;
  db_size_bytes: number;
  wal_checkpoints: { runs: number; failures: number; wal_high_water_bytes: number };
  checkpoints: { successes: number; failures: number; cancellations?: number };
}

async function status(node: RunningNode): Promise<Status> {
  const r = await fetch(`${node.url}/v1/status`);
  if (!r.ok) throw new Error(`/v1/status: HTTP ${r.status}`);
  return (await r.json()) as Status;
}

function vmHwmBytes(pid: number): number {
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

// ---- checkpoints: list, restore, audit --------------------------------------------------------------

interface Listed {
  id: number;
  created: string;
  blob_count: number;
}

async function listCheckpoints(storeDir: string): Promise<Listed[]> {
  return JSON.parse((await must([BINARY, "list-db-checkpoint", storeDir, "--json"])).stdout) as Listed[];
}

function manifestStarted(storeDir: string, id: number): string {
  const m = JSON.parse(readFileSync(join(storeDir, "manifests", `${String(id).padStart(10, "0")}.json`), "utf8")) as { stats: { started: string } };
  return m.stats.started;
}

interface Audited {
  id: number;
  started: string;
  created: string;
  restoreMs: number;
  rows: number;
  totalsCount: number;
  integrity: string;
  counts: AuditCounts;
  ok: boolean;
}

async function restoreAndAudit(tmp: TempDirs, storeDir: string, c: Listed, h: History): Promise<Audited> {
  const started = manifestStarted(storeDir, c.id);
  const target = tmp.make("cairn-soak-restore-");
  try {
    const dbPath = join(target, "db");
    const r = await must([BINARY, "restore", "--db-checkpoint-path", storeDir, "--db-path", dbPath, "--checkpoint-id", String(c.id)]);
    const db = new Database(join(dbPath, "cairn.db"), { readonly: true });
    try {
      const integrity = db
        .query<{ integrity_check: string }, []>("PRAGMA integrity_check")
        .all()
        .map((x) => x.integrity_check)
        .join("; ");
      const totalsCount = db.query<{ blob_count: number }, []>("SELECT blob_count FROM totals WHERE one = 1").get()?.blob_count ?? Number.NaN;
      const rows = new Map<string, { fp: string; sizeOk: boolean }>();
      for (const row of db.query<{ id: string; size: number; data: Uint8Array }, []>("SELECT id, size, data FROM blobs").iterate()) {
        rows.set(row.id, { fp: fingerprint(row.data), sizeOk: row.size === row.data.length });
      }
      const counts = audit(h, rows, { startedMs: Date.parse(started), createdMs: Date.parse(c.created) });
      const bad = counts.lostWrites + counts.resurrected + counts.torn + counts.fromTheFuture + counts.badSize;
      const ok = bad === 0 && integrity === "ok" && totalsCount === rows.size && c.blob_count === rows.size;
      return { id: c.id, started, created: c.created, restoreMs: r.ms, rows: rows.size, totalsCount, integrity, counts, ok };
    } finally {
      db.close();
    }
  } finally {
    tmp.remove(target);
  }
}

// ---- main -----------------------------------------------------------------------------------------

const tmp = new TempDirs();

const cleanUp = installCleanup(tmp, log, stopAllNodes);

async function main(): Promise<number> {
  const s = settings();
  const failures: string[] = [];
  await ensureBinary(log);
  const facts = machineFacts();
  const nodeDir = tmp.make("cairn-soak-");
  const storeDir = join(nodeDir, "checkpoints");
  const h = new History();

  log(`starting the node in ${nodeDir}; ${s.seconds} s of load, ${s.clients} clients, checkpoints every ${s.checkpointSecs} s (keeping 3)`);
  const node = await startNode(nodeDir, nodeYaml(storeDir, s));
  let load: LoadStats;
  let st: Status;
  let hwm: number;
  let exitCode: number;
  let before: Listed[];
  try {
    const progress = setInterval(() => {
      status(node)
        .then((x) => log(`${h.ackedWrites} writes, ${h.ackedDeletes} deletes, ${h.failed} failed; ${x.blob_count} blobs (${mib(x.blob_bytes)}); checkpoints ${x.checkpoints.successes} ok, ${x.checkpoints.failures} failed`))
        .catch((e) => log(`status: ${e instanceof Error ? e.message : String(e)}`));
    }, 10_000);
    try {
      load = await runLoad(node.url, h, s);
    } finally {
      clearInterval(progress);
    }
    log(`load stopped after ${(load.elapsedMs / 1000).toFixed(1)} s: ${h.ackedWrites} writes, ${h.ackedDeletes} deletes acknowledged, ${h.failed} failed`);
    before = await listCheckpoints(storeDir);
    st = await status(node);
    hwm = vmHwmBytes(node.pid);
  } finally {
    exitCode = await node.stop();
  }
  if (exitCode !== 0) failures.push(`the node exited with ${exitCode} after SIGTERM (expected 0): ${node.logs().slice(-1000)}`);
  // the node may have finished one more checkpoint (and retired an old one) after the listing above
  const retained = await listCheckpoints(storeDir);
  log(`node stopped (exit ${exitCode}); retained checkpoints: ${retained.map((c) => c.id).join(", ") || "none"} (listed before stop: ${before.map((c) => c.id).join(", ") || "none"})`);

  const audited: Audited[] = [];
  for (const c of retained) {
    try {
      const a = await restoreAndAudit(tmp, storeDir, c, h);
      audited.push(a);
      log(`checkpoint ${c.id}: restored in ${(a.restoreMs / 1000).toFixed(2)} s, ${a.rows} blobs, integrity ${a.integrity}, ${a.ok ? "audit ok" : "AUDIT FAILED"}`);
      if (!a.ok) failures.push(`checkpoint ${c.id}: ${JSON.stringify({ ...a.counts, integrity: a.integrity, rows: a.rows, totals: a.totalsCount, listed: c.blob_count })}`);
    } catch (e) {
      failures.push(`checkpoint ${c.id}: restore or audit failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  const sum = (f: (c: AuditCounts) => number) => audited.reduce((n, a) => n + f(a.counts), 0);
  const lost = sum((c) => c.lostWrites) + sum((c) => c.resurrected);
  const torn = sum((c) => c.torn) + sum((c) => c.badSize);
  const future = sum((c) => c.fromTheFuture);
  if (h.failed > 0) failures.push(`${h.failed} request(s) failed; first: ${h.firstFailure}`);
  if (st.checkpoints.failures > 0) failures.push(`${st.checkpoints.failures} periodic checkpoint(s) failed`);
  if (st.checkpoints.successes === 0 || audited.length === 0) failures.push("no checkpoint was taken and audited");

  const fmt = (n: number) => n.toLocaleString("en-US");
  const rows: string[][] = [
    ["duration of the load", `${(load.elapsedMs / 1000).toFixed(1)} s (asked: ${s.seconds} s)`],
    ["clients (requests in flight)", String(s.clients)],
    ["acknowledged writes (PUT)", fmt(h.ackedWrites)],
    ["acknowledged deletes", fmt(h.ackedDeletes)],
    ["throughput", `${fmt(Math.round((h.ackedWrites + h.ackedDeletes) / (load.elapsedMs / 1000)))} req/s`],
    ["failed requests", fmt(h.failed)],
    ["ids written / in the node at the end", `${fmt(h.ids.length)} / ${fmt(st.blob_count)} (${mib(st.blob_bytes)}, database ${mib(st.db_size_bytes)})`],
    ["checkpoints taken (successes / failures)", `${st.checkpoints.successes} / ${st.checkpoints.failures}`],
    ["restores audited", `${audited.length} (ids ${audited.map((a) => a.id).join(", ") || "none"})`],
    ["lost writes (incl. resurrected deletes)", `${lost}${lost ? " **FAIL**" : ""}`],
    ["torn blobs", `${torn}${torn ? " **FAIL**" : ""}`],
    ["versions newer than the snapshot", `${future}${future ? " **FAIL**" : ""}`],
    ["WAL high-water mark", mib(st.wal_checkpoints.wal_high_water_bytes)],
    ["WAL checkpoints (runs / failures)", `${st.wal_checkpoints.runs} / ${st.wal_checkpoints.failures}`],
    ["node peak memory (VmHWM)", mib(hwm)],
    ["node exit code after SIGTERM", String(exitCode)],
  ];
  const perCheckpoint = audited.map((a) => [
    String(a.id),
    a.started,
    a.created,
    fmt(a.rows),
    a.integrity,
    `${(a.restoreMs / 1000).toFixed(2)} s`,
    String(a.counts.lostWrites + a.counts.resurrected),
    String(a.counts.torn + a.counts.badSize),
    a.ok ? "yes" : "**no**",
  ]);
  const parts = [
    "# cairn soak",
    "",
    renderFacts(facts),
    "",
    table([{ header: "" }, { header: "" }], [["**result**", failures.length === 0 ? "**pass**" : "**FAIL**"], ...rows]),
    "",
    "## Retained checkpoints, restored and audited",
    "",
    table(
      [
        { header: "id" },
        { header: "snapshot started" },
        { header: "created" },
        { header: "blobs", align: "right" },
        { header: "integrity_check" },
        { header: "restore", align: "right" },
        { header: "lost", align: "right" },
        { header: "torn", align: "right" },
        { header: "ok" },
      ],
      perCheckpoint,
    ),
    "",
    "Audit rule: every id's last write acknowledged before the snapshot started must be there (or a later version sent before `created`); deletes acknowledged before it must be absent; every blob must equal one version ever written for its id; `count(*)` = `totals.blob_count` = the listing's `blob_count`.",
  ];
  const examples = audited.flatMap((a) => a.counts.examples.map((e) => `checkpoint ${a.id}: ${e}`));
  if (failures.length > 0 || examples.length > 0) parts.push("", "## Failures", "", ...failures.map((f) => `- ${f}`), ...examples.slice(0, 20).map((e) => `- ${e}`));
  parts.push("");
  const markdown = parts.join("\n");
  writeFileSync(RESULTS_FILE, markdown);
  console.log(markdown);
  log(`wrote ${RESULTS_FILE}`);
  for (const f of failures) log(`FAILED: ${f}`);
  return failures.length > 0 ? 1 : 0;
}

try {
  process.exitCode = await main();
} catch (e) {
  log(`soak failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
} finally {
  await cleanUp();
}
