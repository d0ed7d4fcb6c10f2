/**
 * Full disks, on small tmpfs mounts (root only; skipped with the reason printed otherwise):
 * a checkpoint into a folder too small for it, a restore into one, and the node's own storage
 * filling up under PUTs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { admin, createCheckpoint, listJson, putAll } from "../helpers/checkpoint.ts";
import { canMountTmpfs, mountTmpfs, sqlite3, targetFiles } from "../helpers/faults.ts";
import { type NodeHandle, pseudoRandomBytes, runCairn, sha256, startNode } from "../helpers/node.ts";
import { restore } from "../helpers/restore.ts";

const probe = canMountTmpfs(mkdtempSync("/tmp/cairn-probe-"));
if (!probe.ok) console.warn(`faults-disk: skipped: ${probe.why}`);
const maybe = probe.ok ? test : test.skip;

const NO_SPACE = /no space|disk (is )?full|ENOSPC|out of space/i;

/** A node with a ~52 MB database (13 blobs of 4 MB) and one checkpoint in its own dir. */
let dir = "";
let node: NodeHandle | undefined;
const unmounts: (() => void)[] = [];
const blobs = Array.from({ length: 13 }, (_, i) => ({ id: `big${i}`, body: pseudoRandomBytes(500 + i, 4_000_000) }));

beforeAll(async () => {
  if (!probe.ok) return;
  dir = mkdtempSync("/tmp/cairn-fdisk-");
  node = await startNode(dir, { extraYaml: "checkpoint_config:\n  sync: false\n" });
  await putAll(node.url, blobs, 4);
  expect(createCheckpoint(node)).toBe(1);
}, 30_000);

afterAll(async () => {
  if (node) await node.stop();
  for (const u of unmounts.splice(0)) {
    try {
      u();
    } catch (e) {
      console.warn(String(e));
    }
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function tmpfs(name: string, size: string): string {
  const d = join(dir, name);
  unmounts.push(mountTmpfs(d, size));
  return d;
}

describe("disk full", () => {
  maybe("checkpoint create --path into a 30 MB tmpfs: exit 1 saying the disk is full, nothing listed, tmp/ cleaned, the node carries on", async () => {
    const small = tmpfs("small-ckpt", "30m");
    const r = admin(node!, ["checkpoint", "create", "--path", small]);
    console.log(`checkpoint into a full disk: exit ${r.code}\n  stdout: ${r.stdout.trim()}\n  stderr: ${r.stderr.trim()}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toStartWith("error: ");
    expect(r.stderr).toMatch(NO_SPACE);
    // nothing listed there (the store may or may not have been initialised)
    const l = runCairn(["list-db-checkpoint", small, "--json"]);
    console.log(`list-db-checkpoint after it: exit ${l.code} ${l.stdout.trim()} ${l.stderr.trim()}`);
    if (l.code === 0) expect(JSON.parse(l.stdout)).toEqual([]);
    expect(existsSync(join(small, "manifests")) ? readdirSync(join(small, "manifests")) : []).toEqual([]);
    expect(existsSync(join(small, "tmp")) ? readdirSync(join(small, "tmp")) : []).toEqual([]);
    expect(existsSync(join(small, "packs")) ? targetFiles(join(small, "packs")) : []).toEqual([]);

    // the node keeps serving
    const put = await fetch(`${node!.url}/v1/blobs/after-full`, { method: "PUT", body: "still here" });
    expect(put.status).toBe(201);
    const get = await fetch(`${node!.url}/v1/blobs/big3`);
    expect(get.status).toBe(200);
    expect(sha256(await get.arrayBuffer())).toBe(sha256(blobs[3]!.body));
    // and a later checkpoint into a roomy folder succeeds
    const roomy = join(dir, "roomy");
    const id = createCheckpoint(node!, ["--path", roomy]);
    expect(listJson(roomy).map((c) => c.id)).toEqual([id]);
  }, 30_000);

  maybe("restore into a 30 MB tmpfs: exit 1 saying the disk is full, no cairn.db and no partial files in the target", () => {
    const small = tmpfs("small-restore", "30m");
    const dbPath = join(small, "db");
    const r = restore(join(dir, "checkpoints"), dbPath);
    console.log(`restore into a full disk: exit ${r.code}\n  stderr: ${r.stderr.trim().split("\n").slice(-3).join("\n  ")}`);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("error: ");
    expect(r.stderr).toMatch(NO_SPACE);
    expect(existsSync(join(dbPath, "cairn.db"))).toBe(false);
    // nothing left on the small filesystem: no target folder, no staging folder
    expect(targetFiles(small)).toEqual([]);
  }, 30_000);

  maybe("export into a 20 MB tmpfs, as .tar, .tar.gz and .tar.zst: exit 1 saying the disk is full, within seconds, no partial file left", () => {
    const small = tmpfs("small-export", "20m");
    for (const ext of ["tar", "tar.gz", "tar.zst"]) {
      const t0 = performance.now();
      const r = runCairn(["export-db-checkpoint", join(dir, "checkpoints"), "--checkpoint-id", "1", "--output", join(small, `cp1.${ext}`)], { timeoutMs: 20_000 });
      console.log(`export .${ext} into a full disk: exit ${r.code} in ${Math.round(performance.now() - t0)} ms; stderr: ${r.stderr.trim()}`);
      expect(r.code).toBe(1);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toMatch(NO_SPACE);
      expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(readdirSync(small)).toEqual([]);
    }
  }, 60_000);

  maybe("node storage on a 30 MB tmpfs: the PUT that does not fit gets 507, every acknowledged blob stays readable, the node keeps serving", async () => {
    const ndir = mkdtempSync("/tmp/cairn-fdnode-");
    unmounts.push(mountTmpfs(join(ndir, "db"), "30m"));
    unmounts.push(() => rmSync(ndir, { recursive: true, force: true }));
    const n = await startNode(ndir, { extraYaml: "wal_checkpoint_threshold_bytes: 4194304\n" });
    const acked = new Map<string, string>();
    let failed: { status: number; body: string } | undefined;
    try {
      for (let i = 0; i < 60 && !failed; i++) {
        const body = pseudoRandomBytes(9000 + i, 1_000_000);
        const r = await fetch(`${n.url}/v1/blobs/f${i}`, { method: "PUT", body });
        if (r.status === 201) {
          await r.arrayBuffer();
          acked.set(`f${i}`, sha256(body));
        } else failed = { status: r.status, body: await r.text() };
      }
      console.log(`PUT on a full disk: after ${acked.size} blobs: HTTP ${failed?.status} ${failed?.body}`);
      expect(failed).toBeDefined();
      expect(failed!.status).toBe(507);
      expect(JSON.parse(failed!.body).error.code).toBe("E_DISK_FULL");
      expect(acked.size).toBeGreaterThan(10);

      // every acknowledged blob is readable, byte for byte
      for (const [id, digest] of acked) {
        const g = await fetch(`${n.url}/v1/blobs/${id}`);
        expect({ id, status: g.status }).toEqual({ id, status: 200 });
        expect(sha256(await g.arrayBuffer())).toBe(digest);
      }
      const st = await fetch(`${n.url}/v1/status`);
      expect(st.status).toBe(200);
      expect(((await st.json()) as { blob_count: number }).blob_count).toBe(acked.size);

      // deleting some blobs: report what the node answers; GETs and status keep working
      const dels: number[] = [];
      for (const id of [...acked.keys()].slice(0, 5)) {
        const d = await fetch(`${n.url}/v1/blobs/${id}`, { method: "DELETE" });
        await d.arrayBuffer();
        dels.push(d.status);
        if (d.status === 204) acked.delete(id);
      }
      console.log(`DELETE on a full disk: ${dels.join(", ")}`);
      for (const [id, digest] of acked) {
        const g = await fetch(`${n.url}/v1/blobs/${id}`);
        expect({ id, status: g.status }).toEqual({ id, status: 200 });
        expect(sha256(await g.arrayBuffer())).toBe(digest);
      }
      expect((await fetch(`${n.url}/v1/status`)).status).toBe(200);
    } finally {
      const code = await n.stop();
      console.log(`node on a full disk: stop exit ${code}; log errors:\n${n.logs().split("\n").filter((l) => /ERROR|WARN/.test(l)).slice(0, 5).join("\n")}`);
    }
    // after the stop the database is intact (read with its WAL, from a copy on a roomy disk:
    // the shutdown may not have been able to fold the WAL into the database on a full disk)
    const left = readdirSync(join(ndir, "db")).sort();
    console.log(`storage folder after the stop: ${left.join(", ")}`);
    const copy = mkdtempSync("/tmp/cairn-fdcopy-");
    try {
      for (const f of left.filter((f) => f.startsWith("cairn.db"))) cpSync(join(ndir, "db", f), join(copy, f));
      expect(sqlite3(join(copy, "cairn.db"), "PRAGMA integrity_check")).toBe("ok");
      expect(Number(sqlite3(join(copy, "cairn.db"), "SELECT count(*) FROM blobs"))).toBe(acked.size);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  }, 60_000);
});
