/**
 * The snapshot's WAL overlay comes from the wal-index (-shm), as SQLite's readers find frames.
 * Checked against SQLite itself: the database file with the overlay laid over it must be byte
 * for byte the file the stock sqlite3 tool writes when it recovers a copy of the same database
 * and WAL and checkpoints it. The WAL spans several wal-index blocks (more than 4062 frames),
 * and one case has frames already copied into the database file (nBackfill > 0).
 */
import { Database } from "bun:sqlite";
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readWalIndexHeader, scanWal } from "../../src/engine/sqlite-files.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(30_000);

/** Descriptors of a database's -wal and -shm, as the node holds them (engine/live-files.ts). */
function withWalFds<T>(dbFile: string, fn: (walFd: number, shmFd: number) => T): T {
  const walFd = openSync(`${dbFile}-wal`, "r");
  const shmFd = openSync(`${dbFile}-shm`, "r");
  try {
    return fn(walFd, shmFd);
  } finally {
    closeSync(walFd);
    closeSync(shmFd);
  }
}

/** The database image as a checkpoint worker reads it: the file, zero-filled, with the overlay's pages laid over it. */
function imageOf(dbFile: string): { image: Uint8Array; frames: number; backfilled: number } {
  const { hdr, o } = withWalFds(dbFile, (walFd, shmFd) => {
    const hdr = readWalIndexHeader(shmFd);
    return { hdr, o: scanWal(walFd, shmFd, hdr) };
  });
  const image = new Uint8Array(o.pageCount * hdr.pageSize);
  const file = readFileSync(dbFile);
  image.set(file.subarray(0, Math.min(file.length, image.length)));
  const fd = openSync(`${dbFile}-wal`, "r");
  try {
    o.pages.forEach((p, i) => {
      if (p <= o.pageCount) expect(readSync(fd, image, (p - 1) * hdr.pageSize, hdr.pageSize, o.offsets[i]!)).toBe(hdr.pageSize);
    });
  } finally {
    closeSync(fd);
  }
  return { image, frames: hdr.mxFrame, backfilled: hdr.nBackfill };
}

/** What SQLite makes of the same files: a copy of the database and WAL, recovered and checkpointed by the sqlite3 tool. */
function sqliteImageOf(dbFile: string): Uint8Array {
  const dir = tmpDir("cairn-walref-");
  const copy = join(dir, "copy.db");
  copyFileSync(dbFile, copy);
  copyFileSync(`${dbFile}-wal`, `${copy}-wal`);
  const r = Bun.spawnSync(["sqlite3", copy, "PRAGMA wal_checkpoint(TRUNCATE);"], { stdout: "pipe", stderr: "pipe" });
  expect(r.stderr.toString()).toBe("");
  expect(r.exitCode).toBe(0);
  // (closing the last connection folds the WAL in and removes it)
  expect(existsSync(`${copy}-wal`) ? statSync(`${copy}-wal`).size : 0).toBe(0);
  return readFileSync(copy);
}

function openWalDb(file: string): Database {
  const db = new Database(file, { create: true, readwrite: true });
  db.exec("PRAGMA page_size = 1024");
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA wal_autocheckpoint = 0");
  db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, x BLOB)");
  return db;
}

function fill(db: Database, rows: number, from: number, size: number): void {
  const put = db.prepare("INSERT OR REPLACE INTO t (id, x) VALUES (?, ?)");
  for (let i = 0; i < rows; i += 100) {
    db.transaction(() => {
      for (let k = i; k < Math.min(rows, i + 100); k++) put.run(from + k, crypto.getRandomValues(new Uint8Array(size)));
    })();
  }
}

describe("the WAL overlay read from the wal-index", () => {
  test("a WAL of more than two wal-index blocks of frames, none copied yet: the image is SQLite's, byte for byte", () => {
    const file = join(tmpDir(), "w.db");
    const db = openWalDb(file);
    try {
      fill(db, 10_000, 0, 900);
      fill(db, 500, 0, 700); // rewrites: pages with several frames, the newest must win
      const ours = imageOf(file);
      expect(ours.frames).toBeGreaterThan(2 * 4096);
      expect(ours.backfilled).toBe(0);
      expect(Buffer.from(ours.image).equals(Buffer.from(sqliteImageOf(file)))).toBe(true);
    } finally {
      db.close();
    }
  });

  test("frames partly copied into the database file (nBackfill > 0): the image is still SQLite's", () => {
    const file = join(tmpDir(), "w.db");
    const db = openWalDb(file);
    const reader = new Database(file, { readwrite: true });
    try {
      fill(db, 5_000, 0, 900);
      // a reader pins the WAL's end here, so the checkpoint below stops there
      reader.exec("BEGIN");
      reader.query("SELECT count(*) FROM t").get();
      fill(db, 3_000, 2_000, 800);
      db.exec("PRAGMA wal_checkpoint(PASSIVE)");
      reader.exec("COMMIT");
      const ours = imageOf(file);
      expect(ours.backfilled).toBeGreaterThan(0);
      expect(ours.frames).toBeGreaterThan(ours.backfilled);
      expect(Buffer.from(ours.image).equals(Buffer.from(sqliteImageOf(file)))).toBe(true);
    } finally {
      reader.close();
      db.close();
    }
  });

  test("a WAL that does not match its index is refused", () => {
    const file = join(tmpDir(), "w.db");
    const db = openWalDb(file);
    try {
      fill(db, 300, 0, 900);
      const hdr = withWalFds(file, (_w, shmFd) => readWalIndexHeader(shmFd));
      const wal = readFileSync(`${file}-wal`);
      // another WAL (other salts) in its place
      wal[16] = wal[16]! ^ 0xff;
      writeFileSync(`${file}-wal`, wal);
      withWalFds(file, (walFd, shmFd) => expect(() => scanWal(walFd, shmFd, hdr)).toThrow(/salts differ/));
    } finally {
      db.close();
    }
  });
});
