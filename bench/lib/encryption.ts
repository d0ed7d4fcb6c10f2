/**
 * "Encryption": what `checkpoint_config.encryption` costs, against the same node without it,
 * measured in one run.
 *
 *  1. s3rver on 127.0.0.1; two nodes built over REST with the same blobs (as in Checkpoints),
 *     one plaintext and one encrypted, each with `remote` pointing at its own prefix;
 *  2. full checkpoints into fresh directories, plaintext and encrypted in turn, RUNS each
 *     (an untimed first one each): encrypted / plaintext of the medians (target ≤ 1.15);
 *  3. on each node: a checkpoint into its configured store, copied; one churn step (1% of blobs
 *     replaced, 0.5% deleted, 1% added); a checkpoint, copied: the bytes the copy uploaded
 *     against the database size (target ≤ 3%, as plaintext);
 *  4. restore of that checkpoint from each s3:// prefix into fresh dirs, in turn, RUNS each:
 *     encrypted / plaintext of the medians (target ≤ 1.15).
 *
 * An untimed `sync` precedes every timed step.
 */
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { addBlobs, BUILD_BLOBS, Blobs, checkpoint, checkpointYaml, exec, must, rng, SEED, socketOf, stopChecked, syncAll } from "./blob-db.ts";
import { churn } from "./checkpoints.ts";
import { BINARY, ensureBinary, type RunningNode, startNode } from "./node.ts";
import { met, mib, pct, ratio, secs, table } from "./report.ts";
import type { BenchContext, Section } from "./section.ts";
import { median } from "./stats.ts";
import { benchScale } from "./workload.ts";

const RUNS = 3;
const TARGET = { full: 1.15, upload: 0.03, restore: 1.15 };

interface Side {
  name: "plaintext" | "encrypted";
  node: RunningNode;
  store: string;
  url: string;
  env: Record<string, string>;
  blobs: Blobs;
  stopped: boolean;
  full: number[];
  upload: { bytes: number; dbBytes: number };
  restore: number[];
}

async function lastUploaded(node: RunningNode, id: number): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const res = await fetch("http://localhost/v1/checkpoints/status", { unix: socketOf(node) } as RequestInit);
    const r = ((await res.json()) as { remote: { last_pushed_id: number | null; last_uploaded_bytes: number; failures: number; last_error: string | null } }).remote;
    if ((r.last_pushed_id ?? 0) >= id) return r.last_uploaded_bytes;
    if (r.failures > 0) throw new Error(`copying checkpoint ${id} failed: ${r.last_error}`);
    if (performance.now() - t0 > 600_000) throw new Error(`checkpoint ${id} was not copied within 10 min`);
    await Bun.sleep(50);
  }
}

async function measure(ctx: BenchContext): Promise<Side[]> {
  const { startS3 } = await import("../../test/helpers/s3.ts");
  const s3dir = ctx.tmp.make("cairn-bench-s3e-");
  const s3 = await startS3(s3dir);
  const s3env = s3.env;
  const sides: Side[] = [];
  const made: string[] = [s3dir];
  try {
    const keyDir = ctx.tmp.make("cairn-bench-key-");
    made.push(keyDir);
    const key = join(keyDir, "checkpoint.key");
    await must([BINARY, "key", "generate", "--output", key]);
    const total = Math.max(200, Math.round(BUILD_BLOBS * benchScale()));
    for (const name of ["plaintext", "encrypted"] as const) {
      const dir = ctx.tmp.make(`cairn-bench-${name}-`);
      const store = ctx.tmp.make(`cairn-bench-${name}s-`);
      made.push(dir, store);
      const url = s3.url(name);
      const yaml =
        `${checkpointYaml(store, { sync: false, compression: "none" }, 1)}  remote:\n    url: ${url}\n    max_remote_checkpoints: 0\n` +
        (name === "encrypted" ? `  encryption:\n    key_file: ${key}\n` : "");
      const node = await startNode(dir, yaml, s3env);
      const env = name === "encrypted" ? { ...s3env, CAIRN_KEY_FILE: key } : s3env;
      // the same blobs on both
      const blobs = new Blobs(rng(SEED + 11));
      sides.push({ name, node, store, url, env, blobs, stopped: false, full: [], upload: { bytes: 0, dbBytes: 0 }, restore: [] });
      await addBlobs(ctx, node.url, blobs, total, `encryption (${name})`);
    }
    for (let i = 0; i <= RUNS; i++) {
      for (const s of sides) {
        const fresh = ctx.tmp.make("cairn-bench-encf-");
        const c = await checkpoint(s.node, fresh, s.env);
        if (i > 0) s.full.push(c.durationMs);
        ctx.tmp.remove(fresh);
      }
    }
    ctx.log(`encryption: full checkpoints ${sides.map((s) => `${s.name} ${s.full.map(secs).join(", ")}`).join("; ")}`);
    for (const s of sides) {
      const c1 = await checkpoint(s.node, s.store, s.env);
      await lastUploaded(s.node, c1.id);
      await churn(ctx, s.node.url, s.blobs);
      const c2 = await checkpoint(s.node, s.store, s.env);
      s.upload = { bytes: await lastUploaded(s.node, c2.id), dbBytes: statSync(join(s.node.dir, "db", "cairn.db")).size };
      ctx.log(`encryption: ${s.name}: the copy after one churn step uploaded ${mib(s.upload.bytes)} of ${mib(s.upload.dbBytes)}`);
    }
    for (const s of sides) {
      await stopChecked(s.node);
      s.stopped = true;
    }
    for (let i = 0; i <= RUNS; i++) {
      for (const s of sides) {
        const into = ctx.tmp.make("cairn-bench-encr-");
        await syncAll();
        const r = await exec([BINARY, "restore", "--db-checkpoint-path", s.url, "--db-path", join(into, "db")], s.env);
        if (r.code !== 0) throw new Error(`restore from ${s.url}: exit ${r.code}: ${r.stderr.trim().slice(-500)}`);
        if (i > 0) s.restore.push(r.ms);
        rmSync(into, { recursive: true, force: true });
      }
    }
    ctx.log(`encryption: restores from s3:// ${sides.map((s) => `${s.name} ${s.restore.map(secs).join(", ")}`).join("; ")}`);
    return sides;
  } finally {
    for (const s of sides) if (!s.stopped) await s.node.stop();
    await s3.stop();
    for (const d of made) ctx.tmp.remove(d);
  }
}

function render(sides: Side[]): string {
  const [p, e] = sides as [Side, Side];
  const full = median(e.full) / median(p.full);
  const share = e.upload.bytes / e.upload.dbBytes;
  const restore = median(e.restore) / median(p.restore);
  const rows = [
    [
      "full checkpoint, encrypted / plaintext",
      `plaintext ${secs(median(p.full))} (${p.full.map(secs).join(", ")})`,
      `≤ ${TARGET.full}`,
      `${ratio(full)}: ${secs(median(e.full))} (${e.full.map(secs).join(", ")})`,
      met(full <= TARGET.full),
    ],
    [
      "bytes uploaded by the copy after one churn step / database size, encrypted",
      `plaintext ${pct(p.upload.bytes / p.upload.dbBytes)} (${mib(p.upload.bytes)} of ${mib(p.upload.dbBytes)})`,
      `≤ ${pct(TARGET.upload)}`,
      `${pct(share)} (${mib(e.upload.bytes)} of ${mib(e.upload.dbBytes)})`,
      met(share <= TARGET.upload),
    ],
    [
      "restore from s3rver, encrypted / plaintext",
      `plaintext ${secs(median(p.restore))} (${p.restore.map(secs).join(", ")})`,
      `≤ ${TARGET.restore}`,
      `${ratio(restore)}: ${secs(median(e.restore))} (${e.restore.map(secs).join(", ")})`,
      met(restore <= TARGET.restore),
    ],
  ];
  return [
    "Two `dist/cairn run` nodes (one worker, `sync: false`, `compression: none`), built over REST with the",
    "same blobs as in Checkpoints, one of them with `checkpoint_config.encryption` (blocks sealed with",
    "AES-256-CTR under a synthetic IV, their keyed BLAKE3 name; manifests and indexes with AES-256-GCM),",
    "each copying to its own prefix of s3rver on 127.0.0.1. Full checkpoints go into",
    `fresh directories, the two nodes in turn (one untimed round, then ${RUNS}; median shown, the node's own`,
    "duration); the upload is the node's copy after one churn step (1% of blobs replaced, 0.5% deleted,",
    `1% added); restores are of that checkpoint from each prefix, in turn (one untimed round, then ${RUNS}).`,
    "",
    table([{ header: "figure" }, { header: "anchor" }, { header: "target" }, { header: "measured" }, { header: "met?" }], rows),
  ].join("\n");
}

export const encryptionSection: Section = {
  title: "Encryption",
  async run(ctx) {
    await ensureBinary(ctx.log);
    return render(await measure(ctx));
  },
};
