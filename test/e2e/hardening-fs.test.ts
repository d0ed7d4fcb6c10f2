/**
 * File-system attacks on a cairn run as root, each reproduced against the compiled binary with
 * real files: what another user (`nobody`, uid 65534) can plant where root's cairn writes, and
 * the races between a restore or an export and the node's own housekeeping.
 *
 * - Lock files (cairn.lock of a restore target, cairn-store.lock of a checkpoint store) that
 *   are a symlink or a hard link to a file of root's, or that belong to nobody: refused with
 *   one E_UNSAFE_PATH line, the victim keeps its bytes.
 * - A store folder whose tmp/ is a symlink to a folder of root's, that belongs to nobody, or
 *   that anybody can write: refused, nothing removed or created; a refused --path (a folder
 *   that is not a store) gets no cairn-store.lock and an existing one is not truncated.
 * - export-db-checkpoint beside a planted `.<name>.partial` symlink: the victim is untouched,
 *   the output is a regular file of its own.
 * - A restore staging folder planted by nobody (with a genuine but doctored image): refused.
 *   Root's own staging folder whose image changed on disk: the changed ranges are restored
 *   again and the result is byte-identical to an uninterrupted restore.
 * - A restore holding the store while the node's retention wants to collect checkpoint 1:
 *   retention waits, the restore restores the latest checkpoint undamaged.
 * - Two exports to one output: the second is refused while the first runs.
 * - restore --force onto a dedicated volume (a tmpfs mounted at --db-path): the old database
 *   is moved aside inside the volume, not across filesystems.
 *
 * Root only (files are planted as another user); skipped with the reason otherwise.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { DEFAULT_BLOCK_SIZE } from "../../src/store/format.ts";
import { RESTORE_RANGE_BLOCKS } from "../../src/restore/rebuild.ts";
import { runCairnEnv } from "../helpers/archive.ts";
import { admin, createCheckpoint, listJson, putAll, verify } from "../helpers/checkpoint.ts";
import { waitFor } from "../helpers/wait.ts";
import { canMountTmpfs, isRoot, mountTmpfs, sameBytes } from "../helpers/faults.ts";
import { BINARY, type NodeHandle, pseudoRandomBytes, runCairn, sha256, sqlite3, startNode } from "../helpers/node.ts";
import { readProgress, replacedDirsOf, restore, restoreArgs, spawnRestore, stagingDirOf } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const NOBODY = 65534;
const root = isRoot();
if (!root) console.warn("hardening-fs: skipped: not running as root (the attacks plant files as another user)");
const rootTest = root ? test : test.skip;

const probeDir = mkdtempSync("/tmp/cairn-probe-");
const probe = root ? canMountTmpfs(probeDir) : { ok: false, why: "not running as root" };
rmSync(probeDir, { recursive: true, force: true });
if (!probe.ok) console.warn(`hardening-fs: the tmpfs test is skipped: ${probe.why}`);
const mountTest = probe.ok ? test : test.skip;

const NODE_YAML = "checkpoint_config:\n  max_db_checkpoints: 0\n  periodic_db_checkpoints: false\n  sync: false\n";
const PAUSED = (point: string) => `cairn: test pause point ${point} reached`;

/**
 * small: a running node with a few blobs and checkpoint 1 in its own store (its --path
 * checkpoints go wherever a test says). big: a stopped node's store of 24 blobs of 1 MB
 * (checkpoint 1) plus 4 more (checkpoint 2): a database of several 8 MiB restore ranges.
 */
let home = "";
let small: NodeHandle | undefined;
let smallStore = "";
let bigStore = "";
const bigBody = (i: number) => pseudoRandomBytes(9000 + i, 1_000_000);
const BIG_BLOBS = 24;

beforeAll(async () => {
  if (!root) return;
  home = mkdtempSync("/tmp/cairn-hfs-");
  mkdirSync(join(home, "small"));
  small = await startNode(join(home, "small"), { extraYaml: NODE_YAML });
  await putAll(small.url, Array.from({ length: 20 }, (_, i) => ({ id: `s${i}`, body: pseudoRandomBytes(100 + i, 20_000 + i * 1000) })));
  expect(createCheckpoint(small)).toBe(1);
  smallStore = join(home, "small", "checkpoints");

  mkdirSync(join(home, "big"));
  const big = await startNode(join(home, "big"), { extraYaml: NODE_YAML });
  try {
    await putAll(big.url, Array.from({ length: BIG_BLOBS }, (_, i) => ({ id: `b${i}`, body: bigBody(i) })), 4);
    expect(createCheckpoint(big)).toBe(1);
    await putAll(big.url, Array.from({ length: 4 }, (_, i) => ({ id: `c${i}`, body: pseudoRandomBytes(7000 + i, 200_000) })));
    expect(createCheckpoint(big)).toBe(2);
  } finally {
    expect(await big.stop()).toBe(0);
  }
  bigStore = join(home, "big", "checkpoints");
}, 60_000);

afterAll(async () => {
  if (small) await small.stop();
  if (home) rmSync(home, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

/** A root-owned file elsewhere, with content that must survive. */
function makeVictim(dir: string, name = "victim.txt"): { path: string; bytes: Buffer } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, name);
  const bytes = Buffer.from(`root's own data, not to be touched ${"#".repeat(200)}\n`);
  writeFileSync(path, bytes, { mode: 0o600 });
  return { path, bytes };
}

/** A file of root's folder planted "by nobody": created, then given to uid 65534. */
function plantAsNobody(path: string, content: string): void {
  writeFileSync(path, content);
  chownSync(path, NOBODY, NOBODY);
}

function chownTree(path: string, uid: number): void {
  chownSync(path, uid, uid);
  if (lstatSync(path).isDirectory()) for (const n of readdirSync(path)) chownTree(join(path, n), uid);
}

/**
 * How a run ended, for one comparison: its exit code, and "refuses PATH" if it printed exactly
 * one `error:` line refusing to use `path` (E_UNSAFE_PATH) for the reason `why`, else the
 * error lines it did print.
 */
function refusal(r: { code: number | null; stderr: string }, path: string, why: RegExp): { code: number | null; refusal: string } {
  const errors = r.stderr.split("\n").filter((l) => l.startsWith("error: "));
  const ok = errors.length === 1 && errors[0]!.includes(`refusing to use ${path}:`) && why.test(errors[0]!);
  return { code: r.code, refusal: ok ? `refuses ${path}` : errors.join(" | ") || "(no error line)" };
}

/** "intact" if `path` still holds `bytes`, else what it holds now. */
function fileState(path: string, bytes: Buffer): string {
  if (!existsSync(path)) return "gone";
  const now = readFileSync(path);
  return now.equals(bytes) ? "intact" : `changed: ${now.length} bytes, ${JSON.stringify(now.subarray(0, 40).toString("latin1"))}...`;
}

type LockPlant = "symlink" | "hardlink" | "nobody";
const WHY: Record<LockPlant, RegExp> = {
  symlink: /it is a symbolic link/,
  hardlink: /it has other hard links/,
  nobody: /it belongs to another user \(uid 65534\)/,
};

/** Plant `lockPath` as `kind` against `victim`; returns what must hold the old bytes afterwards. */
function plantLock(kind: LockPlant, lockPath: string, victim: { path: string }): string {
  if (kind === "symlink") symlinkSync(victim.path, lockPath);
  else if (kind === "hardlink") linkSync(victim.path, lockPath);
  else {
    plantAsNobody(lockPath, readFileSync(victim.path, "utf8"));
    return lockPath;
  }
  return victim.path;
}

describe("lock files: a symlink, a hard link or another user's file is refused, never truncated", () => {
  for (const kind of ["symlink", "hardlink", "nobody"] as const) {
    rootTest(`restore --db-path into a folder whose cairn.lock is ${kind === "nobody" ? "owned by nobody" : `a ${kind} to root's file`}: exit 1, E_UNSAFE_PATH, the file keeps its bytes, no database installed`, () => {
      const t = tmpDir("cairn-hfs-");
      const victim = makeVictim(join(t, "etc"));
      const target = join(t, "target");
      mkdirSync(target, { mode: 0o700 });
      const lock = join(target, "cairn.lock");
      const mustKeep = plantLock(kind, lock, victim);

      const r = restore(smallStore, target);
      expect({ ...refusal(r, lock, WHY[kind]), lockFile: fileState(mustKeep, victim.bytes), victim: fileState(victim.path, victim.bytes), installed: existsSync(join(target, "cairn.db")) }).toEqual({
        code: 1,
        refusal: `refuses ${lock}`,
        lockFile: "intact",
        victim: "intact",
        installed: false,
      });
      if (kind === "symlink") expect(readlinkSync(lock)).toBe(victim.path);
    }, 60_000);

    rootTest(`checkpoint create --path into a folder whose cairn-store.lock is ${kind === "nobody" ? "owned by nobody" : `a ${kind} to root's file`}: exit 1, E_UNSAFE_PATH, the file keeps its bytes, no store made`, () => {
      const t = tmpDir("cairn-hfs-");
      const victim = makeVictim(join(t, "etc"));
      const dir = join(t, "ckpt");
      mkdirSync(dir, { mode: 0o700 });
      const lock = join(dir, "cairn-store.lock");
      const mustKeep = plantLock(kind, lock, victim);

      const r = admin(small!, ["checkpoint", "create", "--path", dir]);
      expect({ ...refusal(r, lock, WHY[kind]), lockFile: fileState(mustKeep, victim.bytes), victim: fileState(victim.path, victim.bytes), folder: readdirSync(dir).sort() }).toEqual({
        code: 1,
        refusal: `refuses ${lock}`,
        lockFile: "intact",
        victim: "intact",
        folder: ["cairn-store.lock"],
      });
    }, 60_000);
  }
});

describe("store folders: only root's own folder, with real sub-folders, is used as a store", () => {
  rootTest("checkpoint create --path into a folder holding tmp -> root's folder and cairn-store.lock -> root's file: refused, every file of the victim folder survives", () => {
    const t = tmpDir("cairn-hfs-");
    const victim = makeVictim(join(t, "etc"));
    const victimDir = join(t, "precious");
    mkdirSync(victimDir, { mode: 0o700 });
    const files: Record<string, string> = {};
    for (let i = 0; i < 5; i++) {
      files[`f${i}.txt`] = `precious ${i}\n`;
      writeFileSync(join(victimDir, `f${i}.txt`), files[`f${i}.txt`]!);
    }
    mkdirSync(join(victimDir, "sub"));
    writeFileSync(join(victimDir, "sub", "deep.txt"), "deep\n");
    const dir = join(t, "ckpt");
    mkdirSync(dir, { mode: 0o700 });
    symlinkSync(victimDir, join(dir, "tmp"));
    symlinkSync(victim.path, join(dir, "cairn-store.lock"));

    const r = admin(small!, ["checkpoint", "create", "--path", dir]);
    const contents = (d: string) => Object.fromEntries(readdirSync(d, { recursive: true, encoding: "utf8" }).sort().map((n) => [n, lstatSync(join(d, n)).isDirectory() ? "dir" : readFileSync(join(d, n), "utf8")]));
    expect({ ...refusal(r, join(dir, "tmp"), /it is a symbolic link/), victimFolder: contents(victimDir), victim: fileState(victim.path, victim.bytes), folder: readdirSync(dir).sort() }).toEqual({
      code: 1,
      refusal: `refuses ${join(dir, "tmp")}`,
      victimFolder: { ...files, sub: "dir", "sub/deep.txt": "deep\n" },
      victim: "intact",
      folder: ["cairn-store.lock", "tmp"],
    });
  }, 60_000);

  rootTest("checkpoint create --path into an empty folder owned by nobody: refused (E_UNSAFE_PATH, another user's), nothing created in it", () => {
    const t = tmpDir("cairn-hfs-");
    const dir = join(t, "ckpt");
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, NOBODY, NOBODY);
    const r = admin(small!, ["checkpoint", "create", "--path", dir]);
    expect({ ...refusal(r, dir, /belongs to another user \(uid 65534\)/), created: readdirSync(dir).sort() }).toEqual({ code: 1, refusal: `refuses ${dir}`, created: [] });
  }, 60_000);

  rootTest("checkpoint create --path into an empty folder of mode 0777: refused (E_UNSAFE_PATH, others can write), nothing created in it", () => {
    const t = tmpDir("cairn-hfs-");
    const dir = join(t, "ckpt");
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const r = admin(small!, ["checkpoint", "create", "--path", dir]);
    expect({ ...refusal(r, dir, /other users can write into it \(mode 777\)/), created: readdirSync(dir).sort() }).toEqual({ code: 1, refusal: `refuses ${dir}`, created: [] });
  }, 60_000);

  rootTest("checkpoint create --path into a folder that is not a store (the node's live storage, an operator's folder): refused, no cairn-store.lock created, an existing one not truncated", () => {
    const storage = small!.storage;
    const storageLock = join(storage, "cairn-store.lock");
    expect(existsSync(storageLock)).toBe(false);
    const t = tmpDir("cairn-hfs-");
    const dir = join(t, "notes");
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, "readme.txt"), "an operator's folder\n");
    const keep = Buffer.from("a file of the operator's that happens to have this name\n");
    writeFileSync(join(dir, "cairn-store.lock"), keep, { mode: 0o600 });
    try {
      const live = admin(small!, ["checkpoint", "create", "--path", storage]);
      const notes = admin(small!, ["checkpoint", "create", "--path", dir]);
      const NOT_A_STORE = "is not empty and is not a cairn checkpoint store";
      expect({
        live: { code: live.code, notAStore: live.stderr.includes(NOT_A_STORE), lockCreated: existsSync(storageLock) },
        notes: { code: notes.code, notAStore: notes.stderr.includes(NOT_A_STORE), lock: fileState(join(dir, "cairn-store.lock"), keep), folder: readdirSync(dir).sort() },
      }).toEqual({
        live: { code: 1, notAStore: true, lockCreated: false },
        notes: { code: 1, notAStore: true, lock: "intact", folder: ["cairn-store.lock", "readme.txt"] },
      });
    } finally {
      // (the old code left one in the node's storage)
      rmSync(storageLock, { force: true });
    }
  }, 60_000);
});

describe("export-db-checkpoint: the temp file is new, never a planted one", () => {
  rootTest("with .<name>.partial planted as a symlink to root's file beside --output: the victim keeps its bytes, the output is a regular file that verifies, nothing else is left", () => {
    const t = tmpDir("cairn-hfs-");
    const victim = makeVictim(join(t, "etc"));
    const out = join(t, "out");
    mkdirSync(out, { mode: 0o700 });
    const output = join(out, "cp1.tar");
    const plant = join(out, ".cp1.tar.partial");
    symlinkSync(victim.path, plant);

    const r = runCairn(["export-db-checkpoint", smallStore, "--checkpoint-id", "1", "--output", output], { timeoutMs: 60_000 });
    const st = lstatSync(output);
    expect({
      code: r.code,
      errors: r.stderr.split("\n").filter((l) => l.startsWith("error: ")),
      victim: fileState(victim.path, victim.bytes),
      output: st.isSymbolicLink() ? `a symlink to ${readlinkSync(output)}` : st.isFile() ? "a regular file" : "something else",
      // the plant is left alone (still the same symlink) and nothing of the export's is left
      folder: readdirSync(out).sort(),
    }).toEqual({ code: 0, errors: [], victim: "intact", output: "a regular file", folder: [".cp1.tar.partial", "cp1.tar"] });
    expect(verify(output).code).toBe(0);
    expect(listJson(output).map((l) => l.id)).toEqual([1]);
    expect(readlinkSync(plant)).toBe(victim.path);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------

/** Bytes [offset, offset + length) of a file. */
function readRegion(file: string, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const fd = openSync(file, "r");
  try {
    const n = readSync(fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Bytes of one restore range (the unit progress.json counts) of a store of the default block size. */
const RANGE_BYTES = RESTORE_RANGE_BLOCKS * DEFAULT_BLOCK_SIZE;

/**
 * Leave a genuine staging folder of an interrupted restore of the big store into `dbPath`
 * (killed right after it saved progress), then overwrite blob bytes inside a range its
 * progress marks done, where SQLite's own checks cannot see it. Returns where, and the bytes
 * written there.
 */
function interruptedAndDoctored(dbPath: string): { offset: number; bytes: Buffer } {
  const r = runCairnEnv(restoreArgs(bigStore, dbPath), { CAIRN_TEST_CRASH_POINT: "restore:progress-saved", CAIRN_TEST_FLUSH_EVERY_BYTES: "1" });
  expect(r.signal).toBe("SIGKILL");
  const progress = readProgress(dbPath);
  expect(progress).toBeDefined();
  expect(progress!.ranges).toBeGreaterThanOrEqual(3);
  expect(progress!.done.length).toBeGreaterThan(0);
  const image = join(stagingDirOf(dbPath), "cairn.db");
  for (const range of progress!.done) {
    const region = readRegion(image, range * RANGE_BYTES, RANGE_BYTES);
    for (let i = 0; i < BIG_BLOBS; i++) {
      // a run of a blob's own bytes, which lies inside one page's payload wherever it is found
      const needle = Buffer.from(bigBody(i).subarray(600_000, 600_512));
      const at = region.indexOf(needle);
      if (at < 0) continue;
      const fd = openSync(image, "r+");
      try {
        const other = Buffer.from(needle.map((b) => b ^ 0x5a));
        writeSync(fd, other, 0, other.length, range * RANGE_BYTES + at);
        return { offset: range * RANGE_BYTES + at, bytes: other };
      } finally {
        closeSync(fd);
      }
    }
  }
  throw new Error(`no blob bytes found in the done ranges ${progress!.done.join(", ")} of ${image}`);
}

describe("restore's staging folder: believed only if it is root's own, and even then checked again", () => {
  rootTest("a staging folder planted by nobody (parent writable by all) with a doctored image: refused with E_UNSAFE_PATH naming it, nothing installed", () => {
    const t = tmpDir("cairn-hfs-");
    const parent = join(t, "pub");
    mkdirSync(parent, { mode: 0o700 });
    const dbPath = join(parent, "db");
    const doctored = interruptedAndDoctored(dbPath);
    const staging = stagingDirOf(dbPath);
    expect(readdirSync(staging).sort()).toEqual(["cairn.db", "plan.json", "progress.json"]);
    chmodSync(parent, 0o777);
    chownTree(staging, NOBODY);

    const r = restore(bigStore, dbPath);
    const db = join(dbPath, "cairn.db");
    const installed = !existsSync(db) ? "nothing" : readRegion(db, doctored.offset, doctored.bytes.length).equals(doctored.bytes) ? "the doctored image" : "a database";
    expect({ ...refusal(r, staging, /belongs to another user \(uid 65534\)/), installed }).toEqual({ code: 1, refusal: `refuses ${staging}`, installed: "nothing" });
    expect(readdirSync(parent).sort()).toEqual([".db.cairn-restore", "db"]);
  }, 90_000);

  rootTest("root's own staging folder whose image was changed on disk after the interruption: the changed range is restored again (warned), the result is byte-identical to an uninterrupted restore", () => {
    const t = tmpDir("cairn-hfs-");
    const dbPath = join(t, "db");
    const doctored = interruptedAndDoctored(dbPath);
    const ref = join(t, "ref");
    expect(restore(bigStore, ref).code).toBe(0);

    const r = restore(bigStore, dbPath);
    const db = join(dbPath, "cairn.db");
    expect({
      code: r.code,
      stdout: r.stdout,
      warned: /1 range\(s\) written by the earlier run did not match the checkpoint and were restored again/.test(r.stderr),
      doctoredBytesInstalled: existsSync(db) && readRegion(db, doctored.offset, doctored.bytes.length).equals(doctored.bytes),
      sameAsUninterrupted: sameBytes(db, join(ref, "cairn.db")),
    }).toEqual({ code: 0, stdout: "Restored from latest (2) successfully.\n", warned: true, doctoredBytesInstalled: false, sameAsUninterrupted: true });
    expect(sqlite3(db, "PRAGMA integrity_check")).toBe("ok");
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------

describe("races with the node and between exports", () => {
  rootTest("a restore holding the store while a new checkpoint's retention would remove checkpoint 1: retention is postponed, the restore restores latest (3) with no damage, the store verifies", async () => {
    const t = tmpDir("cairn-hfs-");
    const ndir = join(t, "node");
    mkdirSync(ndir);
    const node = await startNode(ndir, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 2\n  periodic_db_checkpoints: false\n  sync: false\n" });
    const release = join(t, "release");
    let run: ReturnType<typeof spawnRestore> | undefined;
    try {
      const store = join(ndir, "checkpoints");
      const body = (i: number, v: number) => pseudoRandomBytes(v * 1000 + i, 150_000);
      await putAll(node.url, Array.from({ length: 20 }, (_, i) => ({ id: `r${i}`, body: body(i, 1) })));
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, Array.from({ length: 10 }, (_, i) => ({ id: `r${i}`, body: body(i, 2) })));
      expect(createCheckpoint(node)).toBe(2);

      run = spawnRestore(store, join(t, "restored"), [], { CAIRN_TEST_PAUSE_POINT: "restore:store-held", CAIRN_TEST_PAUSE_RELEASE_FILE: release });
      const r = run;
      await waitFor(() => r.stderr().includes(PAUSED("restore:store-held")) || r.proc.exitCode !== null, { timeoutMs: 20_000, what: "the restore to hold the store" });
      expect(r.stderr()).toContain(PAUSED("restore:store-held"));

      await putAll(node.url, Array.from({ length: 20 }, (_, i) => ({ id: `r${i}`, body: body(i, 3) })));
      expect(createCheckpoint(node)).toBe(3);
      await waitFor(() => node.logs().includes("retention postponed"), { timeoutMs: 20_000, what: "the node to postpone its retention" });
      writeFileSync(release, "");

      const done = await r.done();
      expect({ code: done.code, stdout: done.stdout }).toEqual({ code: 0, stdout: "Restored from latest (3) successfully.\n" });
      expect(done.stderr).not.toContain("damaged");
      expect(node.logs()).not.toContain("retention removed");
      expect(verify(store).code).toBe(0);
    } finally {
      writeFileSync(release, "");
      if (run && run.proc.exitCode === null) run.proc.kill("SIGKILL");
      await node.stop();
    }
  }, 90_000);

  rootTest("two exports to one --output: while the first writes, the second is refused at once; the first finishes, its archive verifies, no lock or temp file is left", async () => {
    const t = tmpDir("cairn-hfs-");
    const out = join(t, "out");
    mkdirSync(out, { mode: 0o700 });
    const output = join(out, "big.tar.zst");
    const release = join(t, "release");
    const a = Bun.spawn([BINARY, "export-db-checkpoint", bigStore, "--checkpoint-id", "1", "--output", output], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, CAIRN_TEST_PAUSE_POINT: "export:writing", CAIRN_TEST_PAUSE_RELEASE_FILE: release },
    });
    let aErr = "";
    const pump = (async () => {
      const d = new TextDecoder();
      for await (const c of a.stderr) aErr += d.decode(c, { stream: true });
    })();
    const aOut = new Response(a.stdout).text();
    try {
      await waitFor(() => aErr.includes(PAUSED("export:writing")) || a.exitCode !== null, { timeoutMs: 20_000, what: "export A to start writing" });
      expect(aErr).toContain(PAUSED("export:writing"));

      const t0 = performance.now();
      const b = runCairn(["export-db-checkpoint", bigStore, "--checkpoint-id", "2", "--output", output], { timeoutMs: 20_000 });
      expect(b.code).toBe(1);
      expect(b.stderr).toContain(`another export to ${output} is running`);
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(a.exitCode).toBeNull();

      writeFileSync(release, "");
      expect(await a.exited).toBe(0);
      await pump;
      expect(await aOut).toContain("Exported checkpoint 1");
      expect(verify(output).code).toBe(0);
      expect(listJson(output).map((l) => l.id)).toEqual([1]);
      expect(readdirSync(out)).toEqual(["big.tar.zst"]);
    } finally {
      writeFileSync(release, "");
      if (a.exitCode === null) a.kill("SIGKILL");
    }
  }, 90_000);
});

// ---------------------------------------------------------------------------------------------

describe("restore --force onto a dedicated volume", () => {
  mountTest("a tmpfs mounted at --db-path itself: --force moves the old database aside inside the volume (byte for byte), and --dry-run --force announces such a path", () => {
    const t = tmpDir("cairn-hfs-");
    const vol = join(t, "vol");
    const unmount = mountTmpfs(vol, "64m");
    try {
      const first = restore(smallStore, vol);
      expect(first.code).toBe(0);
      const before = sha256(readFileSync(join(vol, "cairn.db")));

      const r = restore(smallStore, vol, ["--force"]);
      expect({ code: r.code, errors: r.stderr.split("\n").filter((l) => l.startsWith("error: ")) }).toEqual({ code: 0, errors: [] });
      const moved = /was moved to (\S+)\n/.exec(r.stdout)?.[1];
      expect(moved).toBeDefined();
      expect(moved!.startsWith(`${vol}/`)).toBe(true);
      expect(statSync(moved!).dev).toBe(statSync(vol).dev);
      expect(sha256(readFileSync(join(moved!, "cairn.db")))).toBe(before);
      expect(replacedDirsOf(vol)).toEqual([]);
      expect(sqlite3(join(vol, "cairn.db"), "PRAGMA quick_check")).toBe("ok");

      const dry = restore(smallStore, vol, ["--dry-run", "--force"]);
      expect(dry.code).toBe(0);
      const announced = /aside to (\S+)\n/.exec(dry.stdout)?.[1];
      expect(announced).toBeDefined();
      expect(announced!.startsWith(`${vol}/.cairn-replaced-`)).toBe(true);
    } finally {
      unmount();
    }
  }, 60_000);
});
