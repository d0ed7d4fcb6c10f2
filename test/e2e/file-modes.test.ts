/**
 * Everything cairn creates is owner-only (files 0600, folders 0700) whatever the umask: the
 * node's database and side files, lock files, the admin socket, every file and folder of a
 * checkpoint store, a restore's staging folder and progress files, the restored database, an
 * exported archive and the entries inside it. Run under umask 022, the usual shell default.
 * An installation made before that (wider modes) is tightened when the node starts, with a
 * warning.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gnuTarListVerbose } from "../helpers/archive.ts";
import { createCheckpoint, putAll } from "../helpers/checkpoint.ts";
import { pseudoRandomBytes, runCairn, startNode, startNodeWithConfig } from "../helpers/node.ts";
import { spawnRestore, stagingDirOf } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

let savedUmask = 0;
beforeAll(() => {
  savedUmask = process.umask(0o022);
});
afterAll(() => {
  process.umask(savedUmask);
});

/** Every path under `root` (itself included) whose mode is not owner-only: "path mode". */
function notOwnerOnly(root: string): string[] {
  const bad: string[] = [];
  const visit = (p: string) => {
    const st = lstatSync(p);
    const mode = st.mode & 0o777;
    const want = st.isDirectory() ? 0o700 : 0o600;
    if (!st.isSymbolicLink() && mode !== want) bad.push(`${p} ${mode.toString(8)}`);
    if (st.isDirectory()) for (const n of readdirSync(p)) visit(join(p, n));
  };
  visit(root);
  return bad;
}

async function fill(url: string, blobs: number, size: number): Promise<void> {
  await putAll(url, Array.from({ length: blobs }, (_, i) => ({ id: `m${i}`, body: pseudoRandomBytes(700 + i, size) })), 4);
}

describe("under umask 022", () => {
  test("the node, its database, locks, socket and checkpoint store; an export and the entries inside it; a restore", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    try {
      await fill(node.url, 30, 50_000);
      createCheckpoint(node);
      await fill(node.url, 5, 10_000);
      createCheckpoint(node);
      expect(notOwnerOnly(node.storage)).toEqual([]);
      expect(notOwnerOnly(join(dir, "checkpoints"))).toEqual([]);
      expect((lstatSync(node.socket).mode & 0o777).toString(8)).toBe("600");

      const archive = join(dir, "out.tar");
      const x = runCairn(["export-db-checkpoint", join(dir, "checkpoints"), "--checkpoint-id", "2", "--output", archive]);
      expect(x.code).toBe(0);
      expect(notOwnerOnly(archive)).toEqual([]);
      for (const line of gnuTarListVerbose(archive, "tar")) expect(line).toStartWith("-rw------- ");

      const target = join(dir, "restored");
      const r = runCairn(["restore", "--db-checkpoint-path", join(dir, "checkpoints"), "--db-path", target]);
      expect(r.code).toBe(0);
      expect(notOwnerOnly(target)).toEqual([]);
    } finally {
      await node.stop();
    }
  }, 60_000);

  test("an interrupted restore's staging folder, plan and progress files", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    try {
      // three restore ranges (8 MiB each) at least, so progress is saved part-way
      await fill(node.url, 24, 1_000_000);
      createCheckpoint(node);
    } finally {
      await node.stop();
    }
    const target = join(dir, "restored");
    const run = spawnRestore(join(dir, "checkpoints"), target, [], {
      CAIRN_TEST_CRASH_POINT: "restore:progress-saved",
      CAIRN_TEST_FLUSH_EVERY_BYTES: "1",
    });
    const done = await run.done();
    expect(done.signal).toBe("SIGKILL"); // killed at the crash point
    const staging = stagingDirOf(target);
    expect(readdirSync(staging).sort()).toEqual(["cairn.db", "plan.json", "progress.json"]);
    expect(notOwnerOnly(staging)).toEqual([]);
    expect(notOwnerOnly(target)).toEqual([]);
  }, 60_000);

  test("an existing installation with wider modes is tightened when the node starts, with a warning", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    await fill(node.url, 10, 10_000);
    createCheckpoint(node);
    expect(await node.stop()).toBe(0);
    const widen = (p: string) => {
      const st = lstatSync(p);
      chmodSync(p, st.isDirectory() ? 0o755 : 0o644);
      if (st.isDirectory()) for (const n of readdirSync(p)) widen(join(p, n));
    };
    widen(node.storage);
    widen(join(dir, "checkpoints"));
    expect(notOwnerOnly(node.storage).length).toBeGreaterThan(1);
    const again = await startNodeWithConfig(dir, node.configFile, node.url);
    try {
      expect(again.logs()).toMatch(/open to other users; made owner-only/);
      expect(notOwnerOnly(node.storage)).toEqual([]);
      expect(notOwnerOnly(join(dir, "checkpoints"))).toEqual([]);
    } finally {
      await again.stop();
    }
  }, 60_000);
});
