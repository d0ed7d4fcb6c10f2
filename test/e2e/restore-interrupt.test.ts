/**
 * `cairn restore` interrupted: kill -9 at several points (early, once progress is first made
 * durable about half-way, and with every range done but before the swap) and SIGINT / SIGTERM
 * / SIGHUP. The same command run again finishes, the result is byte-identical (cmp) to an
 * uninterrupted restore of the same checkpoint, and ranges already done are not fetched again:
 * before the second run the test damages, in the store, a block that only a finished range
 * needs, which the second run would trip over if it fetched that range again.
 *
 * One ~256 MB database (64 blobs of 4 MB), so that a restore takes long enough to be caught
 * part-way.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { packPath } from "../../src/store/format.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { auditDb, createCheckpoint, flipByte, listJson, putAll } from "../helpers/checkpoint.ts";
import { pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import {
  allocatedBytes,
  readProgress,
  restore,
  signalWhen,
  spawnRestore,
  stagingDirOf,
  uniqueBlockIn,
} from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const BLOBS = 64;
const BLOB_BYTES = 4_000_000;

let tpl = "";
let store = "";
/** An uninterrupted restore of checkpoint 1, the yardstick. */
let reference = "";
let imageBytes = 0;

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-rbig-");
  store = join(tpl, "checkpoints");
  const node = await startNode(tpl, { extraYaml: "checkpoint_config:\n  max_background_operations: 2\n  sync: false\n" });
  const expected = new Map<string, string>();
  try {
    for (let k = 0; k < BLOBS; k += 16) {
      const batch = Array.from({ length: 16 }, (_, j) => ({ id: `big${k + j}`, body: pseudoRandomBytes(31_000 + k + j, BLOB_BYTES) }));
      for (const b of batch) expected.set(b.id, sha256(b.body));
      await putAll(node.url, batch, 4);
    }
    expect(createCheckpoint(node)).toBe(1);
  } finally {
    expect(await node.stop()).toBe(0);
  }
  imageBytes = listJson(store)[0]!.size_bytes;
  expect(imageBytes).toBeGreaterThan(BLOBS * BLOB_BYTES);

  const refPath = join(tpl, "reference");
  const r = restore(store, refPath, ["--checkpoint-id", "1"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toBe("Restored from 1 successfully.\n");
  reference = join(refPath, "cairn.db");
  expect(statSync(reference).size).toBe(imageBytes);
  const a = auditDb(reference);
  expect(a.integrity).toBe("ok");
  expect(a.blobs).toEqual(expected);
}, 180_000);

afterAll(() => {
  if (tpl) rmSync(tpl, { recursive: true, force: true });
});

/** A copy of the store, for a test that damages it. */
function copyStore(): string {
  const s = join(tmpDir(), "checkpoints");
  cpSync(store, s, { recursive: true });
  return s;
}

function sameBytes(a: string, b: string): boolean {
  return Bun.spawnSync(["cmp", "-s", a, b]).exitCode === 0;
}

/** After the interrupted run: the target holds no database yet and the staging folder exists. */
function expectNotSwapped(dbPath: string): void {
  expect(existsSync(join(dbPath, "cairn.db"))).toBe(false);
  expect(existsSync(stagingDirOf(dbPath))).toBe(true);
}

/** After the run that finished: byte-identical to the reference, alone, no staging folder left. */
function expectFinished(dbPath: string, r: { code: number; stdout: string }): void {
  expect(r.code).toBe(0);
  expect(r.stdout).toBe("Restored from latest (1) successfully.\n");
  expect(sameBytes(join(dbPath, "cairn.db"), reference)).toBe(true);
  expect(readdirSync(dbPath).filter((f) => f !== "cairn.lock")).toEqual(["cairn.db"]);
  expect(existsSync(stagingDirOf(dbPath))).toBe(false);
}

/**
 * Damage, in the store, one block that only ranges already done need: the next run succeeds
 * only if it does not fetch those ranges again. Returns the pack damaged.
 */
async function damageFinishedRange(s: string, done: number[]): Promise<string> {
  const sorted = [...done].sort((x, y) => x - y);
  const b = await uniqueBlockIn(s, 1, [sorted[Math.floor(sorted.length / 2)]!, ...sorted]);
  const pack = join(s, packPath(b.packId));
  flipByte(pack, b.offset + Math.floor(b.storedLength / 2));
  // any fetch of that block now fails its digest check
  await expect(new StoreReader(new DirBackend(s)).block(b.loc)).rejects.toThrow(pack);
  return pack;
}

describe("kill -9 of restore, then the same command again", () => {
  test("early (about 10% of the image written): the second run finishes, byte-identical", async () => {
    const dbPath = join(tmpDir(), "db");
    const image = join(stagingDirOf(dbPath), "cairn.db");
    const run = spawnRestore(store, dbPath);
    expect(await signalWhen(run, () => allocatedBytes(image) >= imageBytes * 0.1, "SIGKILL")).toBe(true);
    const killed = await run.done();
    expect(killed.signal).toBe("SIGKILL");
    expect(killed.stdout).toBe("");
    expectNotSwapped(dbPath);
    const progress = readProgress(dbPath);

    const again = restore(store, dbPath);
    expectFinished(dbPath, again);
    if (progress && progress.done.length > 0) expect(again.stderr).toContain(`${progress.done.length} of ${progress.ranges} ranges were already restored`);
    else expect(again.stderr).not.toContain("ranges were already restored");
  }, 60_000);

  test("once progress is first made durable (about half-way): the second run does not fetch the finished ranges again, byte-identical", async () => {
    const s = copyStore();
    const dbPath = join(tmpDir(), "db");
    const run = spawnRestore(s, dbPath);
    expect(await signalWhen(run, () => readProgress(dbPath) !== undefined, "SIGKILL")).toBe(true);
    expect((await run.done()).signal).toBe("SIGKILL");
    expectNotSwapped(dbPath);
    const progress = readProgress(dbPath)!;
    expect(progress.done.length).toBeGreaterThan(0);
    expect(progress.done.length).toBeLessThan(progress.ranges);

    const pack = await damageFinishedRange(s, progress.done);
    const again = restore(s, dbPath);
    expect(again.stderr).not.toContain(pack);
    expectFinished(dbPath, again);
    expect(again.stderr).toContain(`${progress.done.length} of ${progress.ranges} ranges were already restored`);
  }, 60_000);

  test("right at the end (every range done, before the swap): the second run fetches nothing, byte-identical", async () => {
    const s = copyStore();
    const dbPath = join(tmpDir(), "db");
    // the restore waits before its swap, so the kill lands between "all done" and the swap
    const run = spawnRestore(s, dbPath, [], BEFORE_SWAP_PAUSE);
    const allDone = () => {
      const p = readProgress(dbPath);
      return p !== undefined && p.done.length === p.ranges;
    };
    expect(await signalWhen(run, allDone, "SIGKILL")).toBe(true);
    expect((await run.done()).signal).toBe("SIGKILL");
    expectNotSwapped(dbPath);
    const progress = readProgress(dbPath)!;
    expect(progress.done.length).toBe(progress.ranges);

    const pack = await damageFinishedRange(s, progress.done);
    const again = restore(s, dbPath);
    expect(again.stderr).not.toContain(pack);
    expectFinished(dbPath, again);
    expect(again.stderr).toContain(`${progress.ranges} of ${progress.ranges} ranges were already restored`);
  }, 60_000);
});

/** Makes a restore wait 3 s between its last check and its swap (see pausePoint). */
const BEFORE_SWAP_PAUSE = { CAIRN_TEST_PAUSE_POINT: "restore:before-swap" };

describe("a signal to restore", () => {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    test(`${signal} part-way: exit 130 saying to run the same command again; that finishes without fetching the done ranges again, byte-identical`, async () => {
      const s = copyStore();
      const dbPath = join(tmpDir(), "db");
      const image = join(stagingDirOf(dbPath), "cairn.db");
      const run = spawnRestore(s, dbPath);
      expect(await signalWhen(run, () => allocatedBytes(image) >= imageBytes * 0.3, signal)).toBe(true);
      const stopped = await run.done();
      expect({ code: stopped.code, signal: stopped.signal }).toEqual({ code: 130, signal: null });
      expect(stopped.stderr).toContain("run the same command again");
      expect(stopped.stdout).toBe("");
      expectNotSwapped(dbPath);
      const progress = readProgress(dbPath)!;
      expect(progress.done.length).toBeGreaterThan(0);

      const pack = progress.done.length < progress.ranges ? await damageFinishedRange(s, progress.done) : "";
      const again = restore(s, dbPath);
      if (pack) expect(again.stderr).not.toContain(pack);
      expectFinished(dbPath, again);
      expect(again.stderr).toContain(`${progress.done.length} of ${progress.ranges} ranges were already restored`);
    }, 60_000);
  }

  test("SIGINT after the final check (every range done, before the swap): exit 130, nothing put in place; the same command then finishes, byte-identical", async () => {
    const dbPath = join(tmpDir(), "db");
    const run = spawnRestore(store, dbPath, [], BEFORE_SWAP_PAUSE);
    const allDone = () => {
      const p = readProgress(dbPath);
      return p !== undefined && p.done.length === p.ranges;
    };
    expect(await signalWhen(run, allDone, "SIGINT")).toBe(true);
    const stopped = await run.done();
    expect({ code: stopped.code, stdout: stopped.stdout }).toEqual({ code: 130, stdout: "" });
    expect(stopped.stderr).toContain("run the same command again");
    expectNotSwapped(dbPath);

    const again = restore(store, dbPath);
    expectFinished(dbPath, again);
  }, 60_000);
});
