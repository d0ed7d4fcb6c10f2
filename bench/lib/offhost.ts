/**
 * "Off-host copies": export to archives against GNU `tar` of the same database file, the
 * upload after one churn step with `checkpoint_config.remote`, and restore from a local S3
 * server against restore from a directory, all in one run.
 *
 *  1. s3rver (the test suite's S3-protocol server) on 127.0.0.1, data in a temp dir;
 *  2. one node with a local checkpoint store and `remote: s3://cairn-bench/node`: a quarter of
 *     the blobs and checkpoint 1 (the small one), the rest and checkpoint 2 (~1 GB), each copied;
 *     one churn step (1% replaced, 0.5% deleted, 1% added, as in Checkpoints), checkpoint 3,
 *     wait for its copy: the bytes that copy uploaded against the database size (target ≤ 3%);
 *     stop the node;
 *  3. anchors on the stopped node's cairn.db (the database of checkpoint 3): `tar -cf`,
 *     `tar -czf`, `tar --zstd -cf`, each timed; then `export-db-checkpoint` of checkpoint 3 to
 *     .tar, .tar.gz and .tar.zst, each timed with its peak RSS; export / tar of the same kind;
 *     and the export of checkpoint 1 to .tar: peak memory at two sizes;
 *  4. restore of checkpoint 3 from the directory, from s3:// and from the .tar.zst archive into
 *     fresh dirs: wall time and peak RSS; S3 / directory.
 *
 * An untimed `sync` comes before every timed step; each series has one untimed first run.
 */
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { addBlobs, BUILD_BLOBS, Blobs, checkpoint, checkpointYaml, exec, must, rng, SEED, socketOf, stopChecked, syncAll } from "./blob-db.ts";
import { churn } from "./checkpoints.ts";
import { BINARY, ensureBinary, type RunningNode, startNode } from "./node.ts";
import { met, mib, pct, ratio, secs, table } from "./report.ts";
import type { BenchContext, Section } from "./section.ts";
import { median } from "./stats.ts";
import { benchScale } from "./workload.ts";

const RUNS = 3;
const TARGET = { pushShare: 0.03 };
const TIME = "/usr/bin/time";
const HAVE_TIME = existsSync(TIME);
const HAVE_ZSTD = Bun.spawnSync(["sh", "-c", "command -v zstd"]).exitCode === 0;

interface Timed {
  ms: number[];
  rss: number[];
  bytes: number;
}

interface RemoteStatus {
  last_pushed_id: number | null;
  last_uploaded_bytes: number;
  uploaded_bytes_total: number;
  failures: number;
  last_error: string | null;
  last_attempt: string | null;
  last_success: string | null;
}

async function remoteStatus(node: RunningNode): Promise<RemoteStatus> {
  const res = await fetch("http://localhost/v1/checkpoints/status", { unix: socketOf(node) } as RequestInit);
  const s = (await res.json()) as { remote: RemoteStatus | null };
  if (!s.remote) throw new Error("the node reports no remote");
  return s.remote;
}

/** Wait for the copy of checkpoint `id`; returns the status and how long the copy took (from the node's timestamps). */
async function waitForPush(node: RunningNode, id: number): Promise<{ status: RemoteStatus; ms: number }> {
  const t0 = performance.now();
  for (;;) {
    const s = await remoteStatus(node);
    if ((s.last_pushed_id ?? 0) >= id) return { status: s, ms: Date.parse(s.last_success!) - Date.parse(s.last_attempt!) };
    if (s.failures > 0) throw new Error(`copying checkpoint ${id} to the remote failed: ${s.last_error}`);
    if (performance.now() - t0 > 600_000) throw new Error(`checkpoint ${id} was not copied within 10 min`);
    await Bun.sleep(50);
  }
}

async function timed(ctx: BenchContext, label: string, argv: () => string[], out: () => string, env?: Record<string, string>, cleanup?: () => void): Promise<Timed> {
  const t: Timed = { ms: [], rss: [], bytes: 0 };
  for (let i = 0; i <= RUNS; i++) {
    cleanup?.();
    await syncAll();
    const rssFile = join(ctx.tmp.make("cairn-bench-rss-"), "rss");
    const a = argv();
    const r = await exec(HAVE_TIME ? [TIME, "-f", "%M", "-o", rssFile, ...a] : a, env);
    if (r.code !== 0) throw new Error(`${a.join(" ")}: exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(-1000)}`);
    if (i > 0) {
      t.ms.push(r.ms);
      t.rss.push(HAVE_TIME ? Number(readFileSync(rssFile, "utf8").trim().split("\n").at(-1)) * 1024 : Number.NaN);
    }
    const o = out();
    if (existsSync(o)) t.bytes = statSync(o).isFile() ? statSync(o).size : t.bytes;
  }
  cleanup?.();
  ctx.log(`off-host: ${label}: ${t.ms.map(secs).join(", ")}`);
  return t;
}

interface Results {
  dbBytes: number;
  firstPush: { bytes: number; ms: number };
  churnPush: { bytes: number; ms: number };
  checkpoint2: { sizeBytes: number; newBytes: number };
  /** Export of the first, quarter-size checkpoint: memory at two sizes. */
  small: { sizeBytes: number; t: Timed };
  anchors: { kind: string; t: Timed }[];
  exports: { kind: string; t: Timed }[];
  restores: { from: string; t: Timed }[];
}

async function measure(ctx: BenchContext): Promise<Results> {
  const { startS3 } = await import("../../test/helpers/s3.ts");
  const s3dir = ctx.tmp.make("cairn-bench-s3-");
  const dir = ctx.tmp.make("cairn-bench-off-");
  const store = ctx.tmp.make("cairn-bench-offs-");
  const work = ctx.tmp.make("cairn-bench-offw-");
  const s3 = await startS3(s3dir);
  const env = s3.env;
  const url = s3.url("node");
  let node: RunningNode | undefined;
  try {
    const yaml = `${checkpointYaml(store, { sync: false, compression: "none" }, 2)}  remote:\n    url: ${url}\n    max_remote_checkpoints: 0\n`;
    node = await startNode(dir, yaml, env);
    const blobs = new Blobs(rng(SEED + 7));
    // a quarter first: checkpoint 1 is the small database whose export memory is compared
    const total = Math.max(200, Math.round(BUILD_BLOBS * benchScale()));
    await addBlobs(ctx, node.url, blobs, Math.round(total / 4), "off-host");
    const small = await checkpoint(node, store);
    await waitForPush(node, small.id);
    await addBlobs(ctx, node.url, blobs, total - Math.round(total / 4), "off-host");
    const c1 = await checkpoint(node, store);
    const p1 = await waitForPush(node, c1.id);
    ctx.log(`off-host: checkpoint ${c1.id} (${mib(c1.sizeBytes)}) copied: ${mib(p1.status.last_uploaded_bytes)} in ${secs(p1.ms)}`);
    await churn(ctx, node.url, blobs);
    const c2 = await checkpoint(node, store);
    const p2 = await waitForPush(node, c2.id);
    ctx.log(`off-host: checkpoint ${c2.id} after one churn step copied: ${mib(p2.status.last_uploaded_bytes)} in ${secs(p2.ms)}`);
    await stopChecked(node);
    node = undefined;

    const dbDir = join(dir, "db");
    const dbBytes = statSync(join(dbDir, "cairn.db")).size;
    const anchors: Results["anchors"] = [];
    const exports: Results["exports"] = [];
    const kinds: { ext: string; tarFlag: string[] }[] = [
      { ext: "tar", tarFlag: ["-cf"] },
      { ext: "tar.gz", tarFlag: ["-czf"] },
      ...(HAVE_ZSTD ? [{ ext: "tar.zst", tarFlag: ["--zstd", "-cf"] }] : []),
    ];
    for (const k of kinds) {
      const out = join(work, `db.${k.ext}`);
      anchors.push({ kind: k.ext, t: await timed(ctx, `tar ${k.tarFlag.join(" ")}`, () => ["tar", ...k.tarFlag, out, "-C", dbDir, "cairn.db"], () => out, undefined, () => rmSync(out, { force: true })) });
    }
    for (const ext of ["tar", "tar.gz", "tar.zst"]) {
      const out = join(work, `export.${ext}`);
      exports.push({
        kind: ext,
        t: await timed(ctx, `export .${ext}`, () => [BINARY, "export-db-checkpoint", store, "--checkpoint-id", String(c2.id), "--output", out], () => out, undefined, () => rmSync(out, { force: true })),
      });
    }
    const smallOut = join(work, "small.tar");
    const smallExport = await timed(ctx, `export .tar of the ${mib(small.sizeBytes)} checkpoint`, () => [BINARY, "export-db-checkpoint", store, "--checkpoint-id", String(small.id), "--output", smallOut], () => smallOut, undefined, () => rmSync(smallOut, { force: true }));
    // keep one archive for the restore from it
    const archive = join(work, "keep.tar.zst");
    await must([BINARY, "export-db-checkpoint", store, "--checkpoint-id", String(c2.id), "--output", archive]);

    const restores: Results["restores"] = [];
    const into = join(work, "restored");
    const restoreFrom = async (from: string, src: string) => {
      restores.push({
        from,
        t: await timed(ctx, `restore from ${from}`, () => [BINARY, "restore", "--db-checkpoint-path", src, "--db-path", join(into, "db"), "--checkpoint-id", String(c2.id)], () => join(into, "db", "cairn.db"), env, () => rmSync(into, { recursive: true, force: true })),
      });
    };
    await restoreFrom("directory", store);
    await restoreFrom("s3:// (s3rver on 127.0.0.1)", url);
    await restoreFrom(".tar.zst archive", archive);
    return {
      dbBytes,
      firstPush: { bytes: p1.status.last_uploaded_bytes, ms: p1.ms },
      churnPush: { bytes: p2.status.last_uploaded_bytes, ms: p2.ms },
      checkpoint2: { sizeBytes: c2.sizeBytes, newBytes: c2.newBytes },
      small: { sizeBytes: small.sizeBytes, t: smallExport },
      anchors,
      exports,
      restores,
    };
  } finally {
    if (node) await node.stop();
    await s3.stop();
    for (const d of [work, store, dir, s3dir]) ctx.tmp.remove(d);
  }
}

function render(r: Results): string {
  const med = (t: Timed) => median(t.ms);
  const rows: string[][] = [];
  for (const e of r.exports) {
    const a = r.anchors.find((x) => x.kind === e.kind);
    rows.push([
      `export to .${e.kind} / \`tar\` of the same database file`,
      a ? `tar ${secs(med(a.t))} (${a.t.ms.map(secs).join(", ")}), ${mib(a.t.bytes)}` : "`zstd` not installed",
      "–",
      a ? `${ratio(med(e.t) / med(a.t))}: ${secs(med(e.t))} (${e.t.ms.map(secs).join(", ")}), ${mib(e.t.bytes)}, peak RSS ${mib(median(e.t.rss))}` : `${secs(med(e.t))}`,
      "–",
    ]);
  }
  const bigTar = r.exports.find((e) => e.kind === "tar")!;
  const memRatio = median(bigTar.t.rss) / median(r.small.t.rss);
  rows.push([
    `peak memory of export to .tar: ${mib(r.checkpoint2.sizeBytes)} / ${mib(r.small.sizeBytes)} checkpoint`,
    `${mib(r.small.sizeBytes)}: ${mib(median(r.small.t.rss))} (${r.small.t.rss.map(mib).join(", ")})`,
    "independent of size (≤ 1.2×)",
    `${ratio(memRatio)}: ${mib(median(bigTar.t.rss))} (${bigTar.t.rss.map(mib).join(", ")})`,
    HAVE_TIME ? met(memRatio <= 1.2) : "not measured",
  ]);
  const share = r.churnPush.bytes / r.dbBytes;
  rows.push([
    "bytes uploaded by the copy after one churn step / database size",
    `first (full) copy: ${mib(r.firstPush.bytes)} in ${secs(r.firstPush.ms)}`,
    `≤ ${pct(TARGET.pushShare)}`,
    `${pct(share)}: ${mib(r.churnPush.bytes)} of ${mib(r.dbBytes)}, in ${secs(r.churnPush.ms)}`,
    met(share <= TARGET.pushShare),
  ]);
  const dirRestore = r.restores[0]!;
  for (const x of r.restores.slice(1)) {
    rows.push([
      `restore from ${x.from} / restore from the directory`,
      `directory ${secs(med(dirRestore.t))} (${dirRestore.t.ms.map(secs).join(", ")}), peak RSS ${mib(median(dirRestore.t.rss))}`,
      "–",
      `${ratio(med(x.t) / med(dirRestore.t))}: ${secs(med(x.t))} (${x.t.ms.map(secs).join(", ")}), peak RSS ${mib(median(x.t.rss))}`,
      "–",
    ]);
  }
  return [
    `One \`dist/cairn run\` node (\`max_background_operations: 2\`, \`sync: false\`, \`compression: none\`) with`,
    "`checkpoint_config.remote` pointing at s3rver (the S3-protocol server the tests use, a Node.js program",
    "storing objects as files) on 127.0.0.1; the database built over REST as in Checkpoints, a checkpoint",
    "after the first quarter of the blobs (the small one for export memory), a full one after the rest,",
    "and, after one churn step (1% of blobs replaced, 0.5% deleted, 1% added), an incremental one, each",
    "copied to the remote by the node in the background. The anchors and exports read the stopped node's",
    `\`cairn.db\` (${mib(r.dbBytes)}) and the last checkpoint (${mib(r.checkpoint2.sizeBytes)}, ${mib(r.checkpoint2.newBytes)} new) from page cache; an`,
    `untimed \`sync\` precedes every timed run; each series has one untimed first run, then ${RUNS} timed (median shown).`,
    "Export checks every block's digest on the way; `tar` copies bytes. Peak RSS is `/usr/bin/time -f %M`.",
    "",
    table([{ header: "figure" }, { header: "anchor" }, { header: "target" }, { header: "measured" }, { header: "met?" }], rows),
  ].join("\n");
}

export const offHostSection: Section = {
  title: "Off-host copies",
  async run(ctx) {
    await ensureBinary(ctx.log);
    return render(await measure(ctx));
  },
};
