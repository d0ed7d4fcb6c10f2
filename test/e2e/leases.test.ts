/**
 * Readers' leases on a remote store (src/store/lease.ts), against a real S3-protocol server
 * (s3rver) on 127.0.0.1: a reader registers before it reads and renews while it reads; the
 * owner's remote retention deletes nothing while a live lease exists (looked for before the
 * manifests go and again before any pack does); a lease of a reader that died stops
 * protecting once it expires. End to end: a restore from s3:// held open in one process while
 * the owning node's retention runs in another completes byte for byte.
 *
 * s3rver runs inside this test process, so every command that talks to it is spawned
 * asynchronously.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { Logger } from "../../src/log.ts";
import { readLeases, takeLease } from "../../src/store/lease.ts";
import { applyRemoteRetention, keepLast } from "../../src/store/retention.ts";
import { S3Backend } from "../../src/store/s3/backend.ts";
import { createCheckpointAsync, putAll } from "../helpers/checkpoint.ts";
import { BINARY, type NodeHandle, pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import { auditDb } from "../helpers/checkpoint.ts";
import { listObjects, putObject, type S3Server, startS3 } from "../helpers/s3.ts";
import { makeImage, StoreFixture } from "../helpers/store-fixture.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
setDefaultTimeout(60_000);

let s3: S3Server;
let s3Dir = "";

beforeAll(async () => {
  s3Dir = mkdtempSync("/tmp/cairn-s3l-");
  s3 = await startS3(s3Dir);
});

afterAll(async () => {
  await s3?.stop();
  if (s3Dir) rmSync(s3Dir, { recursive: true, force: true });
});

const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, trace() {} };

function backend(prefix: string): S3Backend {
  return new S3Backend({ url: s3.url(prefix), endpoint: s3.endpoint, region: "us-east-1", accessKeyId: "S3RVER", secretAccessKey: "S3RVER" });
}

/** A store of two checkpoints (the second rewriting most blocks) uploaded under `prefix`. */
async function uploadedStore(prefix: string): Promise<void> {
  const dir = tmpDir();
  const fx = new StoreFixture(dir);
  fx.addCheckpoint(makeImage(1, 64), { packTargetBytes: 64 * 1024 });
  fx.addCheckpoint(makeImage(9, 64), { packTargetBytes: 64 * 1024 });
  const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  for (const f of walk(dir)) await putObject(s3, `${prefix}/${relative(dir, f)}`, readFileSync(f));
}

const keys = async (prefix: string) => [...(await listObjects(s3, `${prefix}/`)).keys()].map((k) => k.slice(prefix.length + 1)).sort();

describe("readers' leases", () => {
  test("a lease is written before the read, renewed while it lasts, and deleted when it is released", async () => {
    const b = backend("lease/one");
    const hold = await takeLease(b, b.location, { ttlMs: 3000 });
    const first = await readLeases(b);
    expect(first.live).toHaveLength(1);
    expect(first.dead).toEqual([]);
    expect(first.live[0]!.pid).toBe(process.pid);
    const expires = Date.parse(first.live[0]!.expires);
    await waitFor(async () => Date.parse((await readLeases(b)).live[0]?.expires ?? "0") > expires, { what: "the lease renewed" });
    await hold.release();
    expect(await keys("lease/one")).toEqual([]);
  });

  test("a live lease postpones remote retention; an expired one does not, and is removed", async () => {
    const prefix = "lease/two";
    await uploadedStore(prefix);
    const b = backend(prefix);
    const before = await keys(prefix);
    const hold = await takeLease(b, b.location, { ttlMs: 60_000 });
    const r = await applyRemoteRetention(b, keepLast(1), quiet);
    expect(r.removed).toEqual([]);
    expect(r.skipped).toMatch(/^1 reader\(s\) registered \(e\.g\. \S+ pid \d+ since /);
    expect((await keys(prefix)).filter((k) => !k.startsWith("leases/"))).toEqual(before);
    await hold.release();
    // a reader that died long ago: its lease protects nothing
    const stale = { format: 1, holder: "gone", pid: 1, created: "2026-01-01T00:00:00.000Z", expires: "2026-01-01T00:05:00.000Z", ttl_ms: 300_000 };
    await putObject(s3, `${prefix}/leases/dead.json`, JSON.stringify(stale));
    const r2 = await applyRemoteRetention(b, keepLast(1), quiet);
    expect(r2.removed).toEqual([1]);
    expect(r2.skipped).toBeUndefined();
    const after = await keys(prefix);
    expect(after.filter((k) => k.startsWith("leases/"))).toEqual([]);
    expect(after).not.toContain("manifests/0000000001.json");
    expect(after.filter((k) => k.startsWith("packs/")).length).toBeLessThan(before.filter((k) => k.startsWith("packs/")).length);
  });

  test("a reader registered between retention's two looks: the manifests go, every pack stays until a later run", async () => {
    const prefix = "lease/three";
    await uploadedStore(prefix);
    const b = backend(prefix);
    const packsBefore = (await keys(prefix)).filter((k) => k.startsWith("packs/"));
    let hold: { release(): void | Promise<void> } | undefined;
    // the reader arrives just as the first manifest is deleted
    const remote = {
      location: b.location,
      random: b,
      writes: {
        put: (p: string, d: Uint8Array) => b.put(p, d),
        putFile: (p: string, f: string) => b.putFile(p, f),
        delete: async (p: string) => {
          if (p.startsWith("manifests/") && !hold) hold = await takeLease(b, b.location, { ttlMs: 60_000 });
          await b.delete(p);
        },
      },
    };
    const r = await applyRemoteRetention(remote, keepLast(1), quiet);
    expect(r.removed).toEqual([1]);
    expect(r.skipped).toContain("collected next time");
    expect((await keys(prefix)).filter((k) => k.startsWith("packs/"))).toEqual(packsBefore);
    await hold!.release();
  });
});

describe("a restore from s3:// while the owning node's retention runs", () => {
  test("the restore, registered first, completes byte for byte; retention waits for it, then collects", async () => {
    const dir = tmpDir("cairn-ln-");
    const url = s3.url("lease/node");
    const node = await startNode(dir, {
      env: s3.env,
      extraYaml: `checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 0\n  remote:\n    url: ${url}\n    max_remote_checkpoints: 1\n    retry_backoff_secs: 1\n`,
    });
    let restore: Bun.Subprocess<"ignore", "pipe", "pipe"> | undefined;
    try {
      const blobs = Array.from({ length: 300 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) }));
      await putAll(node.url, blobs);
      expect(await createCheckpointAsync(node)).toBe(1);
      await waitFor(() => node.logs().includes("copied checkpoint(s) 1 to") || /remote.*\b1\b/.test(node.logs()), { what: "checkpoint 1 copied", detail: () => node.logs(), timeoutMs: 30_000 }).catch(() => {});
      await waitFor(async () => (await keys("lease/node")).includes("manifests/0000000001.json"), { what: "checkpoint 1 on the remote" });

      // the restore of checkpoint 1 registers, then waits at a pause point until told to go on
      const target = join(tmpDir("cairn-lr-"), "db");
      const release = join(dir, "go");
      restore = Bun.spawn([BINARY, "restore", "--db-checkpoint-path", url, "--db-path", target, "--checkpoint-id", "1"], {
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, ...s3.env, CAIRN_TEST_PAUSE_POINT: "restore:store-held", CAIRN_TEST_PAUSE_RELEASE_FILE: release },
      });
      const stderr = new Response(restore.stderr).text();
      await waitFor(async () => (await keys("lease/node")).some((k) => k.startsWith("leases/")), { what: "the restore's lease" });

      // two more checkpoints: each copy's retention would remove checkpoint 1 and its packs
      const logFrom = node.logs().length;
      for (const id of [2, 3]) {
        await putAll(node.url, blobs.slice(0, 250).map((b, i) => ({ id: b.id, body: pseudoRandomBytes(id * 10_000 + i, 20_000) })));
        expect(await createCheckpointAsync(node)).toBe(id);
        await waitFor(async () => (await keys("lease/node")).includes(`manifests/${String(id).padStart(10, "0")}.json`), { what: `checkpoint ${id} on the remote` });
      }
      await waitFor(() => node.logs().slice(logFrom).includes("remote retention postponed: 1 reader(s) registered"), { what: "retention postponed", detail: () => node.logs() });
      expect((await keys("lease/node")).filter((k) => k.startsWith("manifests/"))).toContain("manifests/0000000001.json");

      writeFileSync(release, "");
      expect(await restore.exited).toBe(0);
      expect(await stderr).not.toContain("error");
      const a = auditDb(join(target, "cairn.db"));
      expect(a.integrity).toBe("ok");
      expect(a.blobs).toEqual(new Map(blobs.map((b) => [b.id, sha256(b.body)])));
      // its lease is gone, and the next copy's retention goes ahead
      expect((await keys("lease/node")).filter((k) => k.startsWith("leases/"))).toEqual([]);
      await putAll(node.url, [{ id: "x", body: pseudoRandomBytes(99, 20_000) }]);
      expect(await createCheckpointAsync(node)).toBe(4);
      await waitFor(async () => (await keys("lease/node")).filter((k) => k.startsWith("manifests/")).join() === "manifests/0000000004.json", {
        what: "remote retention down to checkpoint 4",
        detail: () => node.logs(),
      });
    } finally {
      restore?.kill("SIGKILL");
      expect(await node.stop()).toBe(0);
    }
    expect(existsSync(dir)).toBe(true);
  }, 120_000);
});
