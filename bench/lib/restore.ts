/**
 * "Restore": `cairn restore` of a ~1 GB checkpoint into an empty dir, against `cp` and
 * `cp` + `sync` of the same database file measured in the same run, and its peak memory at two
 * database sizes (~250 MB and ~1 GB).
 *
 * One node (max_background_operations 2, sync false, compression none), built over REST like
 * the Checkpoints section's (lib/blob-db.ts):
 *
 *  1. PUT a quarter of the blobs, full checkpoint into store S (~250 MB); PUT the rest, full
 *     checkpoint into store L (~1 GB); stop the node (SIGTERM, exit 0): its cairn.db is then
 *     the database of L's checkpoint, one file;
 *  2. anchors on that file: `cp` (page cache warm) and `cp` + `sync` of the copy;
 *  3. `dist/cairn restore --db-checkpoint-path STORE --db-path EMPTY/db --json`, each run into a
 *     fresh dir on the same filesystem, removed afterwards: L with the default --parallel,
 *     L with --parallel 1, L with --integrity-check none, and S with the default --parallel.
 *     Wall time of the whole command, its CPU time, its peak RSS (`/usr/bin/time -f %M`: see
 *     TIME below) and the `duration_ms` it reports;
 *  4. where the time goes: the default restore of L under `strace --seccomp-bpf`, cut into
 *     plan / rebuild (and its fdatasyncs) / quick_check / swap at the syscalls that end them;
 *  5. a third size for the memory figure: another node with three times L's blobs, one
 *     checkpoint (XL), restored with the default --parallel.
 *
 * Before each timed copy or restore an untimed `sync` flushes what earlier steps left dirty, and
 * each series starts with one untimed run (see WARM_UP_NOTE in checkpoints.ts).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import {
  addBlobs,
  BUILD_BLOBS,
  Blobs,
  type Built,
  type Ckpt,
  CONCURRENCY,
  checkpoint,
  checkpointYaml,
  type CopyAnchors,
  exec,
  measureCopyAnchors,
  must,
  rng,
  SEED,
  stopChecked,
  syncAll,
} from "./blob-db.ts";
import { BINARY, ensureBinary, type RunningNode, startNode } from "./node.ts";
import { met, mib, ratio, secs, table } from "./report.ts";
import type { BenchContext, Section } from "./section.ts";
import { median } from "./stats.ts";
import { benchScale } from "./workload.ts";

/** The node's checkpoint workers while it takes the two checkpoints (as in Checkpoints). */
const NODE_WORKERS = 2;
/** What `cairn restore` uses without --parallel (src/commands/restore.ts). */
const DEFAULT_PARALLEL = Math.min(4, availableParallelism());
/** Timed runs per series (each after one untimed run); the anchors likewise. */
const RUNS = 3;
/** The small database holds this share of the blobs. */
const SMALL_SHARE = 0.25;
/** The extra-large database, for the memory figure: this many times the blobs of L. */
const XL_FACTOR = 3;

const TARGET = { vsCopy: 2.0, memory: 1.2 };

interface RestoreRun {
  wallMs: number;
  /** duration_ms from the --json result (inside the command, after start-up). */
  durationMs: number;
  cpuUserMs: number;
  cpuSysMs: number;
  maxRssBytes: number;
  /** Size of the restored cairn.db. */
  bytes: number;
  /** The command's stderr (progress lines, warnings). */
  stderr: string;
  /** Whether the restored file is byte for byte the stopped node's cairn.db (checked on one run). */
  identical?: boolean;
}

interface Series {
  label: string;
  args: string[];
  warmUp: RestoreRun;
  runs: RestoreRun[];
}

interface Results {
  blobs: { small: number; large: number };
  /** A third, larger checkpoint (another node), restored for the memory figure only. */
  xl: { ckpt: Ckpt; series: Series };
  build: Built[];
  small: Ckpt;
  large: Ckpt;
  dbFileBytes: number;
  anchors: CopyAnchors;
  series: Series[];
  /** The default restore of L under strace, or why not. */
  phases: Phases[] | string;
}

/**
 * Peak RSS comes from GNU time (`%M`, KiB, from wait4 in a small parent), not from Bun's
 * `resourceUsage().maxRSS`: Bun spawns with vfork semantics and Linux carries the parent's RSS
 * high-water mark across exec, so every child would report at least this bench process's own
 * peak (1.4 GB after the node section's 1 MiB bodies).
 */
const TIME = "/usr/bin/time";
const HAVE_TIME = existsSync(TIME);
const RSS_FILE = "peak-rss.txt";

function peakRss(file: string): number {
  const kib = Number(readFileSync(file, "utf8").trim().split("\n").at(-1));
  return Number.isFinite(kib) && kib > 0 ? kib * 1024 : Number.NaN;
}

/**
 * One `cairn restore` of `store` into a fresh dir (removed afterwards), after an untimed `sync`.
 * `compareWith`: also check that the result is byte for byte this file (not timed).
 */
async function restoreOnce(ctx: BenchContext, store: string, args: readonly string[], expectBytes: number, compareWith?: string): Promise<RestoreRun> {
  const parent = ctx.tmp.make("cairn-bench-into-");
  const dbPath = join(parent, "db");
  try {
    const rssFile = join(parent, RSS_FILE);
    await syncAll();
    const argv = [BINARY, "restore", "--db-checkpoint-path", store, "--db-path", dbPath, "--json", ...args];
    const r = await exec(HAVE_TIME ? [TIME, "-f", "%M", "-o", rssFile, ...argv] : argv);
    if (r.code !== 0) throw new Error(`${argv.join(" ")}: exit ${r.code}:\n${(r.stderr || r.stdout).trim().slice(-2000)}`);
    const json = JSON.parse(r.stdout) as { duration_ms: number; size_bytes: number; integrity_check: string; resumed: boolean };
    const file = join(dbPath, "cairn.db");
    const bytes = statSync(file).size;
    if (bytes !== expectBytes || json.size_bytes !== expectBytes) {
      ctx.fail(`restore: ${argv.join(" ")}: restored ${bytes} bytes, --json says ${json.size_bytes}, the checkpoint is ${expectBytes}`);
    }
    if (json.resumed) ctx.fail(`restore: ${argv.join(" ")}: says it resumed an earlier run in a fresh dir`);
    const left = readdirSync(parent).filter((f) => f !== "db" && f !== RSS_FILE);
    if (left.length > 0) ctx.fail(`restore: ${argv.join(" ")}: left ${left.join(", ")} beside the target`);
    for (const f of ["cairn.db-wal", "cairn.db-shm"]) if (existsSync(join(dbPath, f))) ctx.fail(`restore: ${argv.join(" ")}: left ${f}`);
    const run: RestoreRun = {
      wallMs: r.ms,
      durationMs: json.duration_ms,
      cpuUserMs: r.cpuUserMs,
      cpuSysMs: r.cpuSysMs,
      maxRssBytes: HAVE_TIME ? peakRss(rssFile) : Number.NaN,
      bytes,
      stderr: r.stderr,
    };
    if (compareWith) run.identical = (await exec(["cmp", "-s", compareWith, file])).code === 0;
    return run;
  } finally {
    ctx.tmp.remove(parent);
  }
}

async function restoreSeries(ctx: BenchContext, s: Omit<Series, "warmUp" | "runs">, store: string, expectBytes: number, compareWith?: string): Promise<Series> {
  ctx.log(`restore: ${s.label}: 1 untimed + ${RUNS} timed runs`);
  const warmUp = await restoreOnce(ctx, store, s.args, expectBytes);
  const runs: RestoreRun[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await restoreOnce(ctx, store, s.args, expectBytes, i === 0 ? compareWith : undefined));
  ctx.log(`restore: ${s.label}: ${runs.map((r) => `${secs(r.wallMs)} (peak RSS ${mib(r.maxRssBytes)})`).join(", ")}`);
  return { ...s, warmUp, runs };
}

/** One restore under strace: when each step ended, from the syscalls that mark them. */
interface Phases {
  wallMs: number;
  /** execve → ftruncate of the image to its size: start-up, manifest, block list, pack indexes, locating every block. */
  planMs: number;
  /** → end of the last fdatasync of the image: every block read, checked and written; includes the fdatasyncs. */
  rebuildMs: number;
  /** Time inside fdatasync of the image (every 128 MiB and at the end), and how many. */
  fdatasyncMs: number;
  fdatasyncs: number;
  /** → rename of the image into place: PRAGMA quick_check and the node-id check. */
  checkMs: number;
  /** → the process's exit: folder fsyncs, staging removed, exit. */
  swapMs: number;
}

const STRACE = "/usr/bin/strace";

/**
 * `cairn restore` of `store` into a fresh dir under `strace --seccomp-bpf` (only the few traced
 * syscalls stop the process, so it runs at nearly full speed), after an untimed `sync`.
 */
async function restorePhases(ctx: BenchContext, store: string, expectBytes: number): Promise<Phases> {
  const parent = ctx.tmp.make("cairn-bench-into-");
  const dbPath = join(parent, "db");
  const traceFile = join(parent, "strace.txt");
  try {
    await syncAll();
    const argv = [STRACE, "--seccomp-bpf", "-f", "-ttt", "-T", "-e", "trace=execve,ftruncate,fdatasync,rename", "-o", traceFile];
    argv.push(BINARY, "restore", "--db-checkpoint-path", store, "--db-path", dbPath, "--json");
    const r = await exec(argv);
    if (r.code !== 0) throw new Error(`${argv.join(" ")}: exit ${r.code}:\n${(r.stderr || r.stdout).trim().slice(-2000)}`);
    const lines = readFileSync(traceFile, "utf8").split("\n");
    const at = (l: string) => Number(l.split(/\s+/)[1]);
    const find = (match: (line: string) => boolean) => {
      const l = lines.find(match);
      if (!l) throw new Error(`restore under strace: no line matches ${match} in ${traceFile}`);
      return l;
    };
    const start = find((x) => x.includes(" execve("));
    const pid = start.split(/\s+/)[0];
    const trunc = find((x) => / ftruncate\(\d+, /.test(x) && x.includes(`, ${expectBytes})`));
    const fd = /ftruncate\((\d+),/.exec(trunc)![1];
    const syncs = lines.filter((x) => x.includes(` fdatasync(${fd})`) && !x.includes("<unfinished"));
    const dur = (l: string) => Number(/<([\d.]+)>\s*$/.exec(l)?.[1] ?? Number.NaN) * 1000;
    const lastSync = syncs.at(-1);
    if (!lastSync) throw new Error(`restore under strace: no fdatasync of the image (fd ${fd}) in ${traceFile}`);
    const renamed = find((x) => x.includes(" rename(") && x.includes(`, "${dbPath}/cairn.db")`));
    const exited = find((x) => x.startsWith(`${pid} `) && x.includes("+++ exited with 0 +++"));
    const syncEnd = at(lastSync) * 1000 + dur(lastSync);
    return {
      wallMs: r.ms,
      planMs: (at(trunc) - at(start)) * 1000,
      rebuildMs: syncEnd - at(trunc) * 1000,
      fdatasyncMs: syncs.reduce((t, l) => t + dur(l), 0),
      fdatasyncs: syncs.length,
      checkMs: at(renamed) * 1000 - syncEnd,
      swapMs: (at(exited) - at(renamed)) * 1000,
    };
  } finally {
    ctx.tmp.remove(parent);
  }
}

async function measure(ctx: BenchContext): Promise<Results> {
  const dir = ctx.tmp.make("cairn-bench-rst-");
  const smallStore = ctx.tmp.make("cairn-bench-rsts-");
  const largeStore = ctx.tmp.make("cairn-bench-rstl-");
  const dbFile = join(dir, "db", "cairn.db");
  let node: RunningNode | undefined;
  try {
    // 1. the two checkpoints, of one database as it grows
    node = await startNode(dir, checkpointYaml(largeStore, { sync: false, compression: "none" }, NODE_WORKERS));
    const blobs = new Blobs(rng(SEED));
    const count = Math.max(200, Math.round(BUILD_BLOBS * benchScale()));
    const smallCount = Math.round(count * SMALL_SHARE);
    const build = [await addBlobs(ctx, node.url, blobs, smallCount, "restore")];
    const small = await checkpoint(node, smallStore);
    build.push(await addBlobs(ctx, node.url, blobs, count - smallCount, "restore"));
    const large = await checkpoint(node, largeStore);
    ctx.log(`restore: checkpoints of ${mib(small.sizeBytes)} and ${mib(large.sizeBytes)}`);
    await stopChecked(node);
    node = undefined;
    if (existsSync(`${dbFile}-wal`) && statSync(`${dbFile}-wal`).size > 0) throw new Error(`${dbFile}-wal is not empty after a clean stop`);

    // 2. anchors on the same database file
    const copyDir = ctx.tmp.make("cairn-bench-copy-");
    let anchors: CopyAnchors;
    try {
      anchors = await measureCopyAnchors(ctx, dbFile, copyDir, RUNS, "restore");
    } finally {
      ctx.tmp.remove(copyDir);
    }

    // 3. restores
    const series: Series[] = [];
    const L = large.sizeBytes;
    const dflt = `default --parallel (${DEFAULT_PARALLEL})`;
    series.push(await restoreSeries(ctx, { label: `L (${mib(L)}), ${dflt}`, args: [] }, largeStore, L, dbFile));
    series.push(await restoreSeries(ctx, { label: `L (${mib(L)}), --parallel 1`, args: ["--parallel", "1"] }, largeStore, L));
    series.push(
      await restoreSeries(ctx, { label: `L (${mib(L)}), ${dflt}, --integrity-check none`, args: ["--integrity-check", "none"] }, largeStore, L),
    );
    series.push(await restoreSeries(ctx, { label: `S (${mib(small.sizeBytes)}), ${dflt}`, args: [] }, smallStore, small.sizeBytes));

    // 4. where the time goes: the default restore of L under strace
    // (diagnostic only: if strace cannot run here, say so instead of failing the section)
    let phases: Phases[] | string;
    if (existsSync(STRACE)) {
      ctx.log(`restore: L, ${dflt}, under strace: ${RUNS} runs`);
      try {
        const ps: Phases[] = [];
        for (let i = 0; i < RUNS; i++) ps.push(await restorePhases(ctx, largeStore, L));
        phases = ps;
      } catch (e) {
        phases = `the run under strace failed: ${(e as Error).message.split("\n")[0]}`;
        ctx.log(`restore: ${phases}`);
      }
    } else phases = `${STRACE} is not installed`;

    // 5. a third size, for the memory figure: another node, three times the blobs
    const xlDir = ctx.tmp.make("cairn-bench-rstx-");
    const xlStore = ctx.tmp.make("cairn-bench-rstxs-");
    let xl: { ckpt: Ckpt; series: Series };
    try {
      node = await startNode(xlDir, checkpointYaml(xlStore, { sync: false, compression: "none" }, NODE_WORKERS));
      await addBlobs(ctx, node.url, new Blobs(rng(SEED + 1)), count * XL_FACTOR, "restore");
      const ckpt = await checkpoint(node, xlStore);
      await stopChecked(node);
      node = undefined;
      ctx.tmp.remove(xlDir);
      xl = { ckpt, series: await restoreSeries(ctx, { label: `XL (${mib(ckpt.sizeBytes)}), ${dflt}`, args: [] }, xlStore, ckpt.sizeBytes) };
    } finally {
      ctx.tmp.remove(xlStore);
      ctx.tmp.remove(xlDir);
    }
    return {
      xl,
      blobs: { small: smallCount, large: count },
      build,
      small,
      large,
      dbFileBytes: statSync(dbFile).size,
      anchors,
      series,
      phases,
    };
  } finally {
    if (node) await node.stop();
    ctx.tmp.remove(largeStore);
    ctx.tmp.remove(smallStore);
    ctx.tmp.remove(dir);
  }
}

/** Lines of a restore's stderr other than its progress lines ("restore: 1.0 GB / 1.0 GB 100% ..."). */
function unusualStderr(s: Series[]): string[] {
  const lines = s.flatMap((x) => [x.warmUp, ...x.runs]).flatMap((r) => r.stderr.split("\n"));
  return [...new Set(lines.map((l) => l.trim()).filter((l) => l !== "" && !/^restore: [\d.]+ \S+ \/ [\d.]+ \S+ \d+%/.test(l)))];
}

function render(r: Results): string {
  const a = r.anchors;
  const cp = median(a.cpMs);
  const cpSync = median(a.cpSyncMs);
  const wall = (s: Series) => median(s.runs.map((x) => x.wallMs));
  const rss = (s: Series) => median(s.runs.map((x) => x.maxRssBytes));
  const [def, par1, noCheck, small] = r.series as [Series, Series, Series, Series];
  const runsOf = (s: Series) => s.runs.map((x) => secs(x.wallMs)).join(", ");
  const memRatio = rss(def) / rss(small);
  const perGiB = (rss(def) - rss(small)) / ((r.large.sizeBytes - r.small.sizeBytes) / 1024 ** 3);
  const xlRss = rss(r.xl.series);
  const xlRatio = xlRss / rss(small);
  const xlPerGiB = (xlRss - rss(def)) / ((r.xl.ckpt.sizeBytes - r.large.sizeBytes) / 1024 ** 3);

  const summary = table(
    [{ header: "figure" }, { header: "anchor" }, { header: "target" }, { header: "measured" }, { header: "met?" }],
    [
      [
        `verified restore of the ${mib(r.large.sizeBytes)} checkpoint / \`cp\` of the same database`,
        `cp ${secs(cp)} (median of ${RUNS}: ${a.cpMs.map(secs).join(", ")})`,
        `≤ ${TARGET.vsCopy}×`,
        `${ratio(wall(def) / cp)} (median ${secs(wall(def))} of ${runsOf(def)})`,
        met(wall(def) / cp <= TARGET.vsCopy),
      ],
      [
        "the same / (`cp` + `sync`): restore fsyncs the image, `cp` alone does not",
        `cp + sync ${secs(cpSync)} (median of ${RUNS}: ${a.cpSyncMs.map(secs).join(", ")})`,
        `≤ ${TARGET.vsCopy}×`,
        `${ratio(wall(def) / cpSync)}`,
        met(wall(def) / cpSync <= TARGET.vsCopy),
      ],
      [
        `peak memory of restore: ${mib(r.large.sizeBytes)} / ${mib(r.small.sizeBytes)} checkpoint (${ratio(r.large.sizeBytes / r.small.sizeBytes)} the size)`,
        `${mib(r.small.sizeBytes)}: peak RSS ${mib(rss(small))} (median of ${small.runs.map((x) => mib(x.maxRssBytes)).join(", ")})`,
        `independent of size (≤ ${TARGET.memory}×)`,
        `${ratio(memRatio)}: ${mib(rss(def))} (median of ${def.runs.map((x) => mib(x.maxRssBytes)).join(", ")}); ${perGiB >= 0 ? "+" : ""}${mib(perGiB)} per GiB of database`,
        HAVE_TIME ? met(memRatio <= TARGET.memory) : "not measured",
      ],
      [
        `the same at a third size: ${mib(r.xl.ckpt.sizeBytes)} / ${mib(r.small.sizeBytes)} checkpoint (${ratio(r.xl.ckpt.sizeBytes / r.small.sizeBytes)} the size)`,
        `${mib(r.small.sizeBytes)}: ${mib(rss(small))}`,
        `independent of size (≤ ${TARGET.memory}×)`,
        `${ratio(xlRatio)}: ${mib(xlRss)} (median of ${r.xl.series.runs.map((x) => mib(x.maxRssBytes)).join(", ")}); ${xlPerGiB >= 0 ? "+" : ""}${mib(xlPerGiB)} per GiB from L to XL`,
        HAVE_TIME ? met(xlRatio <= TARGET.memory) : "not measured",
      ],
      [
        "restore `--parallel 1` / default (for information)",
        `default (${DEFAULT_PARALLEL}): ${secs(wall(def))}`,
        "–",
        `${ratio(wall(par1) / wall(def))} (median ${secs(wall(par1))} of ${runsOf(par1)})`,
        "–",
      ],
      [
        "restore `--integrity-check none` / default `quick` (for information)",
        `quick: ${secs(wall(def))}`,
        "–",
        `${ratio(wall(noCheck) / wall(def))} (median ${secs(wall(noCheck))} of ${runsOf(noCheck)})`,
        "–",
      ],
    ],
  );

  const runRow = (s: Series, run: RestoreRun, what: string) => {
    const cpu = run.cpuUserMs + run.cpuSysMs;
    return [
      s.label,
      what,
      secs(run.wallMs),
      secs(run.durationMs),
      secs(run.wallMs - run.durationMs),
      `${secs(cpu)} = ${(cpu / run.wallMs).toFixed(2)} cores (user ${secs(run.cpuUserMs)}, sys ${secs(run.cpuSysMs)})`,
      mib(run.maxRssBytes),
      mib(run.bytes),
      run.identical === undefined ? "" : run.identical ? "identical" : "**differs**",
    ];
  };
  const runsTable = table(
    [
      { header: "restore" },
      { header: "run" },
      { header: "wall", align: "right" },
      { header: "duration_ms", align: "right" },
      { header: "wall − duration_ms", align: "right" },
      { header: "CPU", align: "right" },
      { header: "peak RSS", align: "right" },
      { header: "restored", align: "right" },
      { header: "vs cairn.db" },
    ],
    [...r.series, r.xl.series].flatMap((s) => [runRow(s, s.warmUp, "untimed first run"), ...s.runs.map((x, i) => runRow(s, x, String(i + 1)))]),
  );

  const phasesPart =
    typeof r.phases === "string"
      ? [`(No breakdown of the restore's time: ${r.phases}.)`]
      : [
          `Where the time goes: ${r.phases.length} more default restores of L, run under \`strace --seccomp-bpf -f -e trace=execve,ftruncate,fdatasync,rename\``,
          "(only those syscalls stop the process), the steps cut at the syscalls that end them: *plan* is",
          "from `execve` to the image's `ftruncate` (start-up, manifest, block list, pack indexes, every",
          "block located); *rebuild* to the end of the image's last `fdatasync` (every block read, checked",
          "against its digest and written, with an `fdatasync` of the image every 128 MiB, whose time is",
          "shown apart); *check* to the `rename` into place (`PRAGMA quick_check`, node id); *swap* to exit.",
          "",
          table(
            [
              { header: "run" },
              { header: "wall (under strace)", align: "right" },
              { header: "plan", align: "right" },
              { header: "rebuild", align: "right" },
              { header: "of which fdatasync", align: "right" },
              { header: "check", align: "right" },
              { header: "swap + exit", align: "right" },
            ],
            r.phases.map((p, i) => [
              String(i + 1),
              secs(p.wallMs),
              secs(p.planMs),
              secs(p.rebuildMs),
              `${secs(p.fdatasyncMs)} (${p.fdatasyncs} call${p.fdatasyncs === 1 ? "" : "s"})`,
              secs(p.checkMs),
              secs(p.swapMs),
            ]),
          ),
        ];
  const other = unusualStderr(r.series);
  const cpuOf = (s: Series) => median(s.runs.map((x) => x.cpuUserMs + x.cpuSysMs));
  return [
    `One \`dist/cairn run\` node on a storage dir in /tmp (\`max_background_operations: ${NODE_WORKERS}\`, \`sync: false\`,`,
    `\`compression: none\`), built over REST with ${CONCURRENCY} in flight: ${r.blobs.small} blobs of random bytes, 1–100 KiB each`,
    `(${mib(r.build[0]!.bytes)}), a full checkpoint into store S (${mib(r.small.sizeBytes)} database), then ${r.blobs.large - r.blobs.small} more`,
    `(${mib(r.build[1]!.bytes)}) and a full checkpoint into store L (${mib(r.large.sizeBytes)} database). The node was then stopped`,
    `(SIGTERM, exit 0), leaving its \`cairn.db\` (${mib(r.dbFileBytes)}) as the anchors' source. For the memory figure only, a`,
    `second node was built the same way with ${XL_FACTOR}× L's blobs and checkpointed once (store XL, ${mib(r.xl.ckpt.sizeBytes)}).`,
    "",
    "Each restore is `dist/cairn restore --db-checkpoint-path STORE --db-path EMPTY/db --json [options]`",
    "into a fresh dir in /tmp (same filesystem as the store), removed afterwards; an untimed `sync` comes",
    "before every timed copy and restore, and each series starts with one untimed run. *Wall* is the whole",
    "command (process start-up included); `duration_ms` is what it reports (from opening the store to",
    "the database renamed into place). A restore reads every pack, checks every block's digest, writes",
    "the image with an `fdatasync` every 128 MiB and at the end, runs `PRAGMA quick_check` (unless",
    "`--integrity-check none`), renames it into place and fsyncs the folders; `cp` does none of the",
    "checking or syncing, hence the `cp` + `sync` row. The store's packs were just written, so they are",
    `in the page cache, as the database file is for \`cp\`. Default --parallel here: ${DEFAULT_PARALLEL} (number of cores, at most 4).`,
    HAVE_TIME
      ? "*Peak RSS* is the restore process's ru_maxrss (all threads) as `/usr/bin/time -f %M` prints it; *CPU* is user + system time."
      : `*Peak RSS* was not measured: ${TIME} is not installed.`,
    "",
    summary,
    "",
    `Anchors on \`cairn.db\` (${mib(a.dbBytes)}), copied within /tmp with the page cache warm: \`cp\` ${a.cpMs.map((ms, i) => `${secs(ms)} (CPU ${secs(a.cpCpuMs[i]!)})`).join(", ")};`,
    `\`cp\` + \`sync copy\` ${a.cpSyncMs.map(secs).join(", ")}. Restore CPU (median, default --parallel): ${secs(cpuOf(def))} for ${secs(wall(def))} of wall time.`,
    "",
    "Every restore:",
    "",
    runsTable,
    "",
    ...phasesPart,
    "",
    other.length === 0
      ? "The restores wrote nothing to stderr but their progress lines."
      : `Other lines the restores wrote to stderr:\n\n${other.slice(0, 20).map((l) => `    ${l}`).join("\n")}`,
  ].join("\n");
}

export const restoreSection: Section = {
  title: "Restore",
  async run(ctx) {
    await ensureBinary(ctx.log);
    return render(await measure(ctx));
  },
};
