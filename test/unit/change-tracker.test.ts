/**
 * The change tracker (engine/change-tracker.ts) against real SQLite connections on a real
 * database file: which pages it records, when it must say it lost track, and what a clean
 * stop saves and the next start takes back.
 */
import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ChangeTracker, CHANGES_FILE } from "../../src/engine/change-tracker.ts";
import { applyConnectionPragmas } from "../../src/engine/database.ts";
import { LiveFiles } from "../../src/engine/live-files.ts";
import { readWalIndexHeader } from "../../src/engine/sqlite-files.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

let dir: string;
let db: Database;
let live: LiveFiles;
let file: string;

function open(): void {
  db = new Database(file, { create: true, readwrite: true });
  applyConnectionPragmas(db);
  db.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)");
  live = LiveFiles.open(file);
}

function close(): void {
  db.close();
  live.closeAfterDatabase();
}

cleanTmpDirsAfterEach();

beforeEach(() => {
  dir = tmpDir("tracker-");
  file = join(dir, "cairn.db");
  open();
});

afterEach(() => {
  try {
    close();
  } catch {
    // closed by the test
  }
});

/** The pages whose bits are set. */
function pagesOf(bits: Uint8Array | undefined): number[] {
  const out: number[] = [];
  if (!bits) return out;
  for (let i = 0; i < bits.length * 8; i++) if (bits[i >>> 3]! & (1 << (i & 7))) out.push(i + 1);
  return out;
}

/** The pages of every frame in the WAL now, from the wal-index (what a full read of it would find). */
function walPages(): number[] {
  const hdr = readWalIndexHeader(live.shmFd);
  const rows = new Set<number>();
  // the frame headers in the -wal file: page number at offset 0 of each 24-byte header
  const wal = readFileSync(`${file}-wal`);
  const pageSize = hdr.pageSize;
  for (let f = 1; f <= hdr.mxFrame; f++) rows.add(new DataView(wal.buffer, wal.byteOffset + 32 + (f - 1) * (24 + pageSize), 4).getUint32(0, false));
  return [...rows].sort((a, b) => a - b);
}

const pin = () => readWalIndexHeader(live.shmFd);

function put(tracker: ChangeTracker | undefined, id: number, size: number): void {
  db.query("INSERT OR REPLACE INTO t (id, v) VALUES (?, randomblob(?))").run(id, size);
  tracker?.noteCommit();
}

describe("change tracker", () => {
  test("records the pages of every frame the node commits, across WAL restarts", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    const first = tracker.take("store", undefined, pin());
    expect(first.fallback).toMatch(/no record|no checkpoint/);
    first.commit("store", 1);
    const seen = new Set<number>();
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 20; i++) put(tracker, round * 100 + i, 3000);
      for (const p of walPages()) seen.add(p);
      // fold and restart the WAL (as the node's TRUNCATE does): the next commits start again from frame 1
      db.query("PRAGMA wal_checkpoint(TRUNCATE)").get();
      tracker.noteFold();
    }
    const taken = tracker.take("store", 1, pin());
    expect(taken.fallback).toBeUndefined();
    expect(pagesOf(taken.pages)).toEqual([...seen].sort((a, b) => a - b));
    taken.commit("store", 2);
    expect(tracker.status()).toMatchObject({ since_checkpoint: 2, changed_pages: 0, lost: null });
  });

  test("PASSIVE folds and the node's own restarts of the WAL lose nothing", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("store", undefined, pin()).commit("store", 1);
    const seen = new Set<number>();
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 10; i++) {
        put(tracker, round * 50 + i, 5000);
        for (const p of walPages()) seen.add(p);
      }
      // PASSIVE backfills everything (no reader): the next commit restarts the WAL itself
      db.query("PRAGMA wal_checkpoint(PASSIVE)").get();
      tracker.noteFold();
    }
    const taken = tracker.take("store", 1, pin());
    expect(taken.fallback).toBeUndefined();
    expect(pagesOf(taken.pages)).toEqual([...seen].sort((a, b) => a - b));
  });

  test("another connection's commit loses track, and the next checkpoint starts it again", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("store", undefined, pin()).commit("store", 1);
    put(tracker, 1, 1000);
    const other = new Database(file, { readwrite: true });
    other.exec("PRAGMA busy_timeout = 5000");
    other.query("INSERT INTO t (id, v) VALUES (999, randomblob(100))").run();
    other.close();
    put(tracker, 2, 1000);
    expect(tracker.status().lost).toMatch(/another program committed/);
    const taken = tracker.take("store", 1, pin());
    expect(taken.pages).toBeUndefined();
    expect(taken.fallback).toMatch(/another program committed/);
    taken.commit("store", 2);
    // tracking starts again from that checkpoint's pin
    put(tracker, 3, 1000);
    const next = tracker.take("store", 2, pin());
    expect(next.fallback).toBeUndefined();
    expect(pagesOf(next.pages).length).toBeGreaterThan(0);
  });

  test("a commit between the tracker's last look and the pin is refused", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("store", undefined, pin()).commit("store", 1);
    put(tracker, 1, 1000);
    const before = pin();
    // a commit the tracker is not told of (another program's), then the pin
    db.query("INSERT INTO t (id, v) VALUES (50, randomblob(100))").run();
    const taken = tracker.take("store", 1, { ...pin(), iChange: before.iChange });
    expect(taken.fallback).toMatch(/another program committed/);
  });

  test("the database file changed by anything but the node's folds loses track", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("store", undefined, pin()).commit("store", 1);
    put(tracker, 1, 1000);
    // a fold the node did not run (an operator's sqlite3 checkpointing the WAL, say)
    db.query("PRAGMA wal_checkpoint(PASSIVE)").get();
    const taken = tracker.take("store", 1, pin());
    expect(taken.fallback).toMatch(/changed by something other than the node/);
  });

  test("another store, or a newest checkpoint other than the one tracked, falls back", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("a", undefined, pin()).commit("a", 1);
    put(tracker, 1, 1000);
    const other = tracker.take("b", 7, pin());
    expect(other.fallback).toMatch(/another store/);
    other.abandon();
    // abandoned: the changes since checkpoint 1 of "a" still stand
    const gap = tracker.take("a", 2, pin());
    expect(gap.fallback).toMatch(/since checkpoint 1, and the store's newest is 2/);
    gap.abandon();
    put(tracker, 2, 1000);
    const ok = tracker.take("a", 1, pin());
    expect(ok.fallback).toBeUndefined();
    expect(pagesOf(ok.pages).length).toBeGreaterThan(0);
  });

  test("a failed checkpoint gives back what it took", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("s", undefined, pin()).commit("s", 1);
    put(tracker, 1, 4000);
    const failed = tracker.take("s", 1, pin());
    const first = pagesOf(failed.pages);
    expect(first.length).toBeGreaterThan(0);
    failed.abandon();
    put(tracker, 2, 4000);
    const next = tracker.take("s", 1, pin());
    expect(next.fallback).toBeUndefined();
    for (const p of first) expect(pagesOf(next.pages)).toContain(p);
  });

  test("a clean stop saves the set; the next start takes it back if the file is unchanged", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("s", undefined, pin()).commit("s", 1);
    for (let i = 0; i < 10; i++) put(tracker, i, 3000);
    const expected = walPages();
    // the last connection's close folds the WAL in (as the node's stop does), then the set is saved
    close();
    tracker.save(dir, file);
    expect(existsSync(join(dir, CHANGES_FILE))).toBe(true);
    const mark = ChangeTracker.markBeforeOpen(file);
    open();
    const resumed = ChangeTracker.resume(dir, live, mark);
    // taken back and removed at once: a crash from here on cannot bring it back
    expect(existsSync(join(dir, CHANGES_FILE))).toBe(false);
    expect(resumed.status()).toMatchObject({ since_checkpoint: 1, lost: null });
    const taken = resumed.take("s", 1, pin());
    expect(taken.fallback).toBeUndefined();
    for (const p of expected) expect(pagesOf(taken.pages)).toContain(p);
  });

  test("a saved set is refused if the database file changed while the node was stopped", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("s", undefined, pin()).commit("s", 1);
    put(tracker, 1, 3000);
    close();
    tracker.save(dir, file);
    // an operator's tool touched the file (even restoring its mtime changes its ctime)
    const st = Bun.file(file);
    const mtime = new Date(st.lastModified);
    utimesSync(file, mtime, mtime);
    const mark = ChangeTracker.markBeforeOpen(file);
    open();
    const resumed = ChangeTracker.resume(dir, live, mark);
    expect(resumed.take("s", 1, pin()).fallback).toMatch(/changed while the node was stopped/);
  });

  test("a damaged saved set is refused, never trusted", () => {
    const tracker = ChangeTracker.resume(dir, live, undefined);
    tracker.take("s", undefined, pin()).commit("s", 1);
    put(tracker, 1, 3000);
    close();
    tracker.save(dir, file);
    const saved = readFileSync(join(dir, CHANGES_FILE));
    saved[saved.length - 40]! ^= 0xff;
    writeFileSync(join(dir, CHANGES_FILE), saved);
    const mark = ChangeTracker.markBeforeOpen(file);
    open();
    const resumed = ChangeTracker.resume(dir, live, mark);
    expect(resumed.take("s", 1, pin()).fallback).toMatch(/cannot be read/);
  });
});
