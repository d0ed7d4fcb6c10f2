/**
 * `cairn restore --force` killed (SIGKILL, via CAIRN_TEST_CRASH_POINT) at each of its crash
 * points, over an existing database of the same node. After each crash --db-path holds either
 * the old complete database or the new complete one (never a half-written cairn.db), the old
 * one is intact in the .replaced- folder once moved, and the same command run again finishes
 * with a result byte-identical (cmp) to an uninterrupted restore.
 *
 * The checkpoint is ~152 MB (38 blobs of 4 MB) so that restore:progress-saved (reached once
 * 128 MiB of the image has been written) is reached.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createCheckpoint, listJson, putAll } from "../helpers/checkpoint.ts";
import { checkDb, sameBytes } from "../helpers/faults.ts";
import { BINARY, pseudoRandomBytes, startNode } from "../helpers/node.ts";
import { replacedDirsOf, restoreArgs, stagingDirOf } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const BLOBS = 38;
const BLOB_BYTES = 4_000_000;
/** Blobs written after the checkpoint: only the old database has them. */
const EXTRA = 3;
const NEW_COUNT = BLOBS;
const OLD_COUNT = BLOBS + EXTRA;

let tpl = "";
let store = "";
/** The node's own database after the checkpoint (the "old" database restore replaces). */
let oldDb = "";
/** An uninterrupted restore of checkpoint 1. */
let reference = "";

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-fcrash-");
  store = join(tpl, "checkpoints");
  const node = await startNode(tpl, { extraYaml: "checkpoint_config:\n  max_background_operations: 2\n  sync: false\n" });
  try {
    for (let k = 0; k < BLOBS; k += 19) {
      await putAll(
        node.url,
        Array.from({ length: 19 }, (_, j) => ({ id: `big${k + j}`, body: pseudoRandomBytes(41_000 + k + j, BLOB_BYTES) })),
        4,
      );
    }
    expect(createCheckpoint(node)).toBe(1);
    await putAll(node.url, Array.from({ length: EXTRA }, (_, i) => ({ id: `extra${i}`, body: pseudoRandomBytes(77 + i, 10_000) })));
  } finally {
    expect(await node.stop()).toBe(0);
  }
  expect(listJson(store)[0]!.size_bytes).toBeGreaterThan(150_000_000);
  oldDb = join(tpl, "db", "cairn.db");
  expect(checkDb(oldDb)).toEqual({ integrity: "ok", count: OLD_COUNT });

  const refPath = join(tpl, "reference");
  const r = run(refPath);
  expect(r).toMatchObject({ code: 0, signal: null });
  reference = join(refPath, "cairn.db");
  expect(checkDb(reference)).toEqual({ integrity: "ok", count: NEW_COUNT });
}, 60_000);

afterAll(() => {
  if (tpl) rmSync(tpl, { recursive: true, force: true });
});

/** `cairn restore --db-checkpoint-path STORE --db-path dbPath --force`, optionally with a crash point. */
function run(dbPath: string, crashPoint?: string, extra: string[] = []) {
  const env: Record<string, string | undefined> = { ...process.env };
  if (crashPoint) env.CAIRN_TEST_CRASH_POINT = crashPoint;
  else delete env.CAIRN_TEST_CRASH_POINT;
  const r = Bun.spawnSync([BINARY, ...restoreArgs(store, dbPath, ["--force", ...extra])], { stdout: "pipe", stderr: "pipe", env, timeout: 60_000 });
  return {
    code: r.exitCode,
    signal: r.signalCode ?? null,
    stdout: r.stdout.toString(),
    stderr: r.stderr.toString(),
  };
}

/** A copy of the node's database folder (the target of a --force restore). */
function oldTarget(): string {
  const dbPath = join(tmpDir(), "db");
  cpSync(join(tpl, "db"), dbPath, { recursive: true });
  return dbPath;
}

/** What --db-path holds: "old", "new", or "none"; anything else (half-written, wrong) fails. */
function targetHolds(dbPath: string): "old" | "new" | "none" {
  const file = join(dbPath, "cairn.db");
  if (!existsSync(file)) return "none";
  const c = checkDb(file);
  expect(c.integrity).toBe("ok");
  if (sameBytes(file, oldDb)) {
    expect(c.count).toBe(OLD_COUNT);
    return "old";
  }
  expect(sameBytes(file, reference)).toBe(true);
  expect(c.count).toBe(NEW_COUNT);
  return "new";
}

/** Every .replaced- folder holds the old database complete (byte-identical, integrity ok). */
function expectOldAside(dbPath: string, folders: number): void {
  const aside = replacedDirsOf(dbPath);
  expect(aside).toHaveLength(folders);
  const first = join(aside[0]!, "cairn.db");
  expect(sameBytes(first, oldDb)).toBe(true);
  expect(checkDb(first)).toEqual({ integrity: "ok", count: OLD_COUNT });
}

/** The finished state: the new database alone in --db-path, no staging folder. */
function expectFinished(dbPath: string, r: ReturnType<typeof run>): void {
  expect({ code: r.code, signal: r.signal, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, signal: null, stderr: "" });
  expect(r.stdout).toMatch(/^(The previous database \(cairn\.db\) was moved to \S+\.replaced-\S+\n)?Restored from latest \(1\) successfully\.\n$/);
  expect(targetHolds(dbPath)).toBe("new");
  expect(sameBytes(join(dbPath, "cairn.db"), reference)).toBe(true);
  expect(readdirSync(dbPath).filter((f) => f !== "cairn.lock")).toEqual(["cairn.db"]);
  expect(existsSync(stagingDirOf(dbPath))).toBe(false);
}

describe("kill -9 of restore --force at each crash point, then the same command again", () => {
  /** point → what --db-path holds right after the crash, and how many .replaced- folders exist. */
  const cases: [string, "old" | "new" | "none", number][] = [
    ["restore:progress-saved", "old", 0],
    ["restore:checked", "old", 0],
    // the old database has been moved aside and the new one is not in yet: --db-path holds no
    // database for that instant (see the report); never a half-written one
    ["restore:moved-aside", "none", 1],
    ["restore:swapped", "new", 1],
  ];

  for (const [point, holds, asideFolders] of cases) {
    test(`${point}: the target holds a complete database (${holds}), the rerun finishes byte-identical, the old one is intact aside`, () => {
      const dbPath = oldTarget();
      const crashed = run(dbPath, point);
      expect({ point, code: crashed.code as number | null, signal: crashed.signal }).toEqual({ point, code: null, signal: "SIGKILL" });
      expect(crashed.stdout).toBe("");
      expect(targetHolds(dbPath)).toBe(holds);
      // no stray -wal/-shm beside whatever is there
      expect(readdirSync(dbPath).filter((f) => f.startsWith("cairn.db-"))).toEqual([]);
      if (asideFolders > 0) expectOldAside(dbPath, asideFolders);
      else expect(replacedDirsOf(dbPath)).toEqual([]);
      expect(existsSync(stagingDirOf(dbPath))).toBe(true);

      const again = run(dbPath);
      expectFinished(dbPath, again);
      // the old database is never lost: after a crash past the swap, the rerun moves the
      // restored copy aside once more, so two folders; the first holds the original
      expectOldAside(dbPath, point === "restore:swapped" ? 2 : 1);
      if (point === "restore:swapped") {
        const second = join(replacedDirsOf(dbPath)[1]!, "cairn.db");
        expect(sameBytes(second, reference)).toBe(true);
      }
    }, 60_000);
  }

  // A crash after the swap leaves the staging folder with plan.json and a progress.json saying
  // every range is done, but no image (it was renamed into --db-path). The rerun "continues"
  // it: the image is re-created empty and sparse, no range is fetched again.
  test("restore:swapped, then the rerun with --integrity-check none: never an all-zero cairn.db put in place", () => {
    const dbPath = oldTarget();
    const crashed = run(dbPath, "restore:swapped");
    expect(crashed.signal).toBe("SIGKILL");
    expect(targetHolds(dbPath)).toBe("new");
    const again = run(dbPath, undefined, ["--integrity-check", "none"]);
    // whatever the exit status, --db-path must hold a complete database afterwards
    const file = join(dbPath, "cairn.db");
    expect({ code: again.code, integrity: checkDb(file).integrity }).toEqual({ code: 0, integrity: "ok" });
    expectFinished(dbPath, again);
  }, 60_000);
});
