/**
 * `cairn restore` as an operator runs it, against the compiled binary: round trips by id and
 * by latest (checked with the stock sqlite3 and by a node serving every blob), every guard
 * (running node, existing database, --force moving it aside, another node's database, unknown
 * id, --dry-run), and damaged stores (nothing is touched before every byte is checked; a
 * damaged newest checkpoint is skipped with a warning). Interruptions are in
 * restore-interrupt.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { indexPath, manifestPath, packPath } from "../../src/store/format.ts";
import { entryKind, readIndexEntry } from "../../src/store/pack.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { auditDb, createCheckpoint, deleteAll, flipByte, listJson, putAll } from "../helpers/checkpoint.ts";
import { getJson, pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import {
  contentState,
  dbFilesState,
  dirState,
  replacedDirsOf,
  restore,
  serveMismatches,
  stagingDirOf,
} from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const YAML = "checkpoint_config:\n  max_db_checkpoints: 0\n  max_background_operations: 2\n";

// The scenario: blobs a0..a59 (checkpoint 1); a0..a9 rewritten, a10..a14 deleted, n0..n79 added,
// 20 MB (checkpoint 2); then a20 rewritten, a21 deleted, z0 added (only in the live database).
const A = 60;
const aBody = (i: number, v: number) => pseudoRandomBytes(v * 100_000 + i + 1, 1000 + ((i * 7919) % 90_000));
const nBody = (i: number) => pseudoRandomBytes(500_000 + i, 250_000);
const zBody = () => pseudoRandomBytes(777, 5000);

function expectedAt(cp: 1 | 2): { blobs: Map<string, string>; absent: string[] } {
  const blobs = new Map<string, string>();
  const absent: string[] = ["z0"];
  for (let i = 0; i < A; i++) {
    if (cp === 2 && i >= 10 && i < 15) absent.push(`a${i}`);
    else blobs.set(`a${i}`, sha256(aBody(i, cp === 2 && i < 10 ? 2 : 1)));
  }
  for (let i = 0; i < 80; i++) {
    if (cp === 2) blobs.set(`n${i}`, sha256(nBody(i)));
    else if (i % 10 === 0) absent.push(`n${i}`);
  }
  return { blobs, absent };
}

let tpl = ""; // tpl/db: node 1's database, stopped cleanly; tpl/checkpoints: its checkpoints 1 and 2
let crashed = ""; // crashed/db: node 1's database after kill -9 (cairn.db, -wal, -shm)
let other = ""; // other/db: the database of another node
let store = "";
let node1 = "";
let node2 = "";
/** Packs only checkpoint 2 needs: one holding only blocks of the image, one holding its segments too. */
let dataPack = "";
let segmentPack = "";

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-rtpl-");
  store = join(tpl, "checkpoints");
  const node = await startNode(tpl, { extraYaml: YAML });
  try {
    node1 = (await getJson(`${node.url}/v1/status`)).node_id;
    await putAll(node.url, Array.from({ length: A }, (_, i) => ({ id: `a${i}`, body: aBody(i, 1) })));
    expect(createCheckpoint(node)).toBe(1);
    await putAll(node.url, [
      ...Array.from({ length: 10 }, (_, i) => ({ id: `a${i}`, body: aBody(i, 2) })),
      ...Array.from({ length: 80 }, (_, i) => ({ id: `n${i}`, body: nBody(i) })),
    ]);
    await deleteAll(node.url, ["a10", "a11", "a12", "a13", "a14"]);
    expect(createCheckpoint(node)).toBe(2);
    await putAll(node.url, [
      { id: "a20", body: aBody(20, 3) },
      { id: "z0", body: zBody() },
    ]);
    await deleteAll(node.url, ["a21"]);
  } finally {
    expect(await node.stop()).toBe(0);
  }
  expect(listJson(store).map((l) => l.id)).toEqual([1, 2]);

  const reader = new StoreReader(new DirBackend(store));
  const m1 = await reader.manifest(1);
  const m2 = await reader.manifest(2);
  for (const p of m2.packs.filter((p) => !m1.packs.includes(p))) {
    const idx = await reader.index(p);
    let segments = 0;
    for (let i = 0; i < idx.count; i++) if (entryKind(readIndexEntry(idx, i).flags) === 1) segments++;
    // (a worker stores the new segments of its ranges beside their blocks: a pack may hold both)
    if (segments < idx.count) dataPack ||= p;
    if (segments > 0) segmentPack ||= p;
  }
  // the damage tests need a pack of each kind
  expect(dataPack).not.toBe("");
  expect(segmentPack).not.toBe("");

  crashed = mkdtempSync("/tmp/cairn-rcrash-");
  cpSync(join(tpl, "db"), join(crashed, "db"), { recursive: true });
  const c = await startNode(crashed);
  await putAll(c.url, [{ id: "after-crash", body: pseudoRandomBytes(4242, 30_000) }]);
  await c.kill9();
  expect(readdirSync(join(crashed, "db")).sort()).toEqual(["cairn.db", "cairn.db-shm", "cairn.db-wal", "cairn.lock"]);
  expect(statSync(join(crashed, "db", "cairn.db-wal")).size).toBeGreaterThan(0);

  other = mkdtempSync("/tmp/cairn-rother-");
  const o = await startNode(other);
  try {
    node2 = (await getJson(`${o.url}/v1/status`)).node_id;
    await putAll(o.url, [{ id: "theirs", body: pseudoRandomBytes(99, 10_000) }]);
  } finally {
    expect(await o.stop()).toBe(0);
  }
  expect(node2).not.toBe(node1);
}, 60_000);

afterAll(() => {
  for (const d of [tpl, crashed, other]) if (d) rmSync(d, { recursive: true, force: true });
});

/** A fresh folder holding a copy of `from` at <folder>/db; returns the db path. */
function copyDbTo(from: string): string {
  const dbPath = join(tmpDir(), "db");
  cpSync(join(from, "db"), dbPath, { recursive: true });
  return dbPath;
}

/** Files in a restored target other than the storage lock. */
const dbDirFiles = (dbPath: string) => readdirSync(dbPath).filter((f) => f !== "cairn.lock").sort();

describe("round trip", () => {
  test("by id and by latest into fresh directories: the exact message, sqlite3 integrity_check ok, every blob as written at that checkpoint, nothing left beside it, and a node started on it serves every blob", async () => {
    const storeBefore = dirState(store);
    const cases = [
      { cp: 1 as const, args: ["--checkpoint-id", "1"], out: "Restored from 1 successfully.\n" },
      { cp: 2 as const, args: [], out: "Restored from latest (2) successfully.\n" },
    ];
    for (const c of cases) {
      const dir = tmpDir();
      const dbPath = join(dir, "db");
      const r = restore(store, dbPath, c.args);
      expect({ cp: c.cp, code: r.code, stdout: r.stdout }).toEqual({ cp: c.cp, code: 0, stdout: c.out });
      expect(r.stderr).not.toContain("error");
      // the result alone: no -wal/-shm beside it, no staging folder, nothing moved aside
      expect(dbDirFiles(dbPath)).toEqual(["cairn.db"]);
      expect(existsSync(stagingDirOf(dbPath))).toBe(false);
      expect(readdirSync(dir)).toEqual(["db"]);

      const want = expectedAt(c.cp);
      const a = auditDb(join(dbPath, "cairn.db"));
      expect(a.integrity).toBe("ok");
      expect(a.blobs).toEqual(want.blobs);
      expect(a.totals).toEqual({ blob_count: want.blobs.size, blob_bytes: a.bytes });
      expect(dbDirFiles(dbPath)).toEqual(["cairn.db"]);

      // a node on the restored storage (its config's storage_path is the restored dir)
      const node = await startNode(dir);
      try {
        const status = await getJson(`${node.url}/v1/status`);
        expect(status.node_id).toBe(node1);
        expect(status.blob_count).toBe(want.blobs.size);
        expect(await serveMismatches(node.url, want.blobs, want.absent)).toEqual([]);
      } finally {
        expect(await node.stop()).toBe(0);
      }
    }
    // restore only reads the store
    expect(dirState(store)).toEqual(storeBefore);
  }, 40_000);

  test("--json prints the result object", () => {
    const size2 = listJson(store).find((l) => l.id === 2)!.size_bytes;
    const byId = join(tmpDir(), "db");
    const r = restore(store, byId, ["--checkpoint-id", "2", "--json"]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ checkpoint_id: 2, latest: false, db_path: byId, size_bytes: size2, node_id: node1, move_aside_to: null });
    expect(statSync(join(byId, "cairn.db")).size).toBe(size2);

    const latest = join(tmpDir(), "db");
    const r2 = restore(store, latest, ["--json"]);
    expect(r2.code).toBe(0);
    expect(JSON.parse(r2.stdout)).toMatchObject({ checkpoint_id: 2, latest: true, db_path: latest, size_bytes: size2, move_aside_to: null });
    expect(auditDb(join(latest, "cairn.db")).blobs).toEqual(expectedAt(2).blobs);
  }, 60_000);
});

describe("guards", () => {
  test("a node running on --db-path: exit 1 naming its pid; the target is untouched and the node carries on", async () => {
    const dbPath = copyDbTo(tpl);
    const dir = dirname(dbPath);
    const node = await startNode(dir);
    try {
      const before = dirState(dbPath);
      const parentBefore = readdirSync(dir).sort();
      for (const extra of [[], ["--force"], ["--checkpoint-id", "1", "--force"]]) {
        const r = restore(store, dbPath, extra);
        expect({ extra, code: r.code }).toEqual({ extra, code: 1 });
        expect(r.stderr).toStartWith("error: ");
        expect(r.stderr).toContain(`pid ${node.proc.pid}`);
        expect(r.stdout).toBe("");
      }
      expect(dirState(dbPath)).toEqual(before);
      expect(readdirSync(dir).sort()).toEqual(parentBefore);
      expect(replacedDirsOf(dbPath)).toEqual([]);
      expect(await serveMismatches(node.url, new Map([["z0", sha256(zBody())]]))).toEqual([]);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 30_000);

  for (const [label, from] of [
    ["stopped cleanly", () => tpl],
    ["left by kill -9 (cairn.db, -wal, -shm)", () => crashed],
  ] as const) {
    test(`an existing database (${label}) without --force: exit 1 suggesting --force; the target and its parent are untouched`, () => {
      const dbPath = copyDbTo(from());
      const parent = dirname(dbPath);
      const before = dirState(parent);
      const dbBefore = dbFilesState(dbPath);
      const r = restore(store, dbPath);
      expect(r.code).toBe(1);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain("already holds a database");
      expect(r.stderr).toContain("--force");
      expect(r.stdout).toBe("");
      expect(dbFilesState(dbPath)).toEqual(dbBefore);
      // nothing created, changed or removed: not in the target, not beside it
      expect(dirState(parent)).toEqual(before);
    }, 20_000);

    test(`--force over an existing database (${label}): its files move to the named sibling folder byte for byte, and the checkpoint's database takes their place`, () => {
      const dbPath = copyDbTo(from());
      const before = dbFilesState(dbPath);
      const r = restore(store, dbPath, ["--force", "--checkpoint-id", "1"]);
      expect(r.code).toBe(0);
      expect(r.stdout.split("\n").at(-2)).toBe("Restored from 1 successfully.");
      const asides = replacedDirsOf(dbPath);
      expect(asides).toHaveLength(1);
      const aside = asides[0]!;
      expect(aside.startsWith(`${dbPath}.replaced-`)).toBe(true);
      expect(r.stdout).toContain(aside);
      // every old file, unchanged (same bytes, same mtime: moved, not copied), and nothing else
      expect(readdirSync(aside).sort()).toEqual(Object.keys(before).sort());
      expect(dbFilesState(aside)).toEqual(before);
      // the new database is checkpoint 1's, alone
      expect(dbDirFiles(dbPath)).toEqual(["cairn.db"]);
      expect(existsSync(stagingDirOf(dbPath))).toBe(false);
      const a = auditDb(join(dbPath, "cairn.db"));
      expect(a.integrity).toBe("ok");
      expect(a.blobs).toEqual(expectedAt(1).blobs);

      // again over the restored one, as JSON: move_aside_to names a second folder holding it
      const restored = dbFilesState(dbPath);
      const j = restore(store, dbPath, ["--force", "--json"]);
      expect(j.code).toBe(0);
      const res = JSON.parse(j.stdout);
      expect(res).toMatchObject({ checkpoint_id: 2, latest: true, db_path: dbPath });
      expect(res.move_aside_to).toStartWith(`${dbPath}.replaced-`);
      expect(replacedDirsOf(dbPath)).toEqual([aside, res.move_aside_to].sort());
      expect(dbFilesState(aside)).toEqual(before);
      expect(readdirSync(res.move_aside_to)).toEqual(["cairn.db"]);
      expect(dbFilesState(res.move_aside_to)).toEqual(restored);
      expect(auditDb(join(dbPath, "cairn.db")).blobs).toEqual(expectedAt(2).blobs);
    }, 30_000);
  }

  test("a checkpoint of another node over another node's database: exit 1 naming both, even with --force; untouched", () => {
    const dbPath = copyDbTo(other);
    const parent = dirname(dbPath);
    const before = dirState(parent);
    for (const extra of [[], ["--force"], ["--force", "--checkpoint-id", "1"]]) {
      const r = restore(store, dbPath, extra);
      expect({ extra, code: r.code }).toEqual({ extra, code: 1 });
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain(node1);
      expect(r.stderr).toContain(node2);
      expect(r.stdout).toBe("");
    }
    expect(replacedDirsOf(dbPath)).toEqual([]);
    expect(dirState(parent)).toEqual(before);
  }, 20_000);

  test("an unknown --checkpoint-id: exit 1 listing the ids there are; nothing created or touched", () => {
    const missing = join(tmpDir(), "db");
    const parent = dirname(missing);
    const before = dirState(parent);
    const r = restore(store, missing, ["--checkpoint-id", "7"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toStartWith("error: ");
    expect(r.stderr).toContain("7");
    expect(r.stderr).toMatch(/\b1, 2\b/);
    expect(dirState(parent)).toEqual(before);

    const dbPath = copyDbTo(tpl);
    const before2 = dirState(dirname(dbPath));
    const r2 = restore(store, dbPath, ["--checkpoint-id", "3", "--force"]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/\b1, 2\b/);
    expect(dirState(dirname(dbPath))).toEqual(before2);
  }, 20_000);

  test("--dry-run prints the plan and writes nothing (missing target; existing database with --force)", () => {
    const parent = tmpDir();
    writeFileSync(join(parent, "keep.txt"), "x");
    const missing = join(parent, "db");
    const storeBefore = dirState(store);
    const before = dirState(parent);
    const r = restore(store, missing, ["--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("checkpoint 2");
    expect(r.stdout).toContain(missing);
    expect(r.stdout).not.toContain("Restored from");
    expect(dirState(parent)).toEqual(before);

    const j = restore(store, missing, ["--dry-run", "--json", "--checkpoint-id", "1"]);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ checkpoint_id: 1, latest: false, db_path: missing });
    expect(dirState(parent)).toEqual(before);

    const dbPath = copyDbTo(tpl);
    const before2 = dirState(dirname(dbPath));
    const f = restore(store, dbPath, ["--dry-run", "--force"]);
    expect(f.code).toBe(0);
    expect(f.stdout).toContain(`${dbPath}.replaced-`);
    expect(f.stdout).not.toContain("Restored from");
    expect(dirState(dirname(dbPath))).toEqual(before2);
    expect(dirState(store)).toEqual(storeBefore);
  }, 20_000);
});

describe("a damaged store", () => {
  function copyStore(): string {
    const s = join(tmpDir(), "checkpoints");
    cpSync(store, s, { recursive: true });
    return s;
  }

  /** Damage to something checkpoint 2 needs and checkpoint 1 does not; returns the file named. */
  const damages: [string, (s: string) => string][] = [
    ["a flipped byte in a pack", (s) => {
      const f = join(s, packPath(dataPack));
      flipByte(f);
      return f;
    }],
    ["a flipped byte in a pack index (.idx)", (s) => {
      const f = join(s, indexPath(dataPack));
      flipByte(f);
      return f;
    }],
    ["a truncated pack", (s) => {
      const f = join(s, packPath(dataPack));
      truncateSync(f, Math.floor(statSync(f).size / 2));
      return f;
    }],
    ["a deleted pack (one holding image blocks)", (s) => {
      const f = join(s, packPath(dataPack));
      rmSync(f);
      return f;
    }],
    ["a deleted pack (one holding the checkpoint's segments)", (s) => {
      const f = join(s, packPath(segmentPack));
      rmSync(f);
      return f;
    }],
    ["a damaged manifest", (s) => {
      const f = join(s, manifestPath(2));
      flipByte(f);
      return f;
    }],
  ];

  for (const [what, damage] of damages) {
    test(`${what}: restore --checkpoint-id 2 fails naming the file, before the target is touched; without an id checkpoint 1 is restored with a warning`, () => {
      const s = copyStore();
      const file = damage(s);

      // over an existing database, with --force
      const dbPath = copyDbTo(tpl);
      const dbBefore = dbFilesState(dbPath);
      const contentBefore = contentState(dbPath);
      const r = restore(s, dbPath, ["--checkpoint-id", "2", "--force"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain(file);
      expect(r.stdout).not.toContain("Restored");
      expect(replacedDirsOf(dbPath)).toEqual([]);
      expect(dbFilesState(dbPath)).toEqual(dbBefore);
      expect(contentState(dbPath)).toEqual(contentBefore);

      // into a folder that does not exist yet: it still does not
      const missing = join(tmpDir(), "db");
      const r2 = restore(s, missing, ["--checkpoint-id", "2"]);
      expect(r2.code).toBe(1);
      expect(r2.stderr).toContain(file);
      expect(existsSync(missing)).toBe(false);
      expect(replacedDirsOf(missing)).toEqual([]);

      // the newest intact one instead, with a warning naming the damaged one
      const latest = join(tmpDir(), "db");
      const r3 = restore(s, latest);
      expect({ code: r3.code, stdout: r3.stdout, err: r3.code === 0 ? "" : r3.stderr }).toEqual({
        code: 0,
        stdout: "Restored from latest (1) successfully.\n",
        err: "",
      });
      expect(r3.stderr).toMatch(/checkpoint 2\b/i);
      expect(dbDirFiles(latest)).toEqual(["cairn.db"]);
      expect(existsSync(stagingDirOf(latest))).toBe(false);
      const a = auditDb(join(latest, "cairn.db"));
      expect(a.integrity).toBe("ok");
      expect(a.blobs).toEqual(expectedAt(1).blobs);
    }, 60_000);
  }

  test("an empty target folder stays empty when the restore fails on damage", () => {
    const s = copyStore();
    const file = join(s, packPath(dataPack));
    flipByte(file);
    const dbPath = join(tmpDir(), "db");
    mkdirSync(dbPath);
    const r = restore(s, dbPath, ["--checkpoint-id", "2"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(file);
    // (the storage lock is taken while it works and removed again; nothing else appears)
    expect(readdirSync(dbPath)).toEqual([]);
    expect(replacedDirsOf(dbPath)).toEqual([]);
  }, 20_000);
});
