import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { closeSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BlobStore, isValidBlobId } from "../../src/engine/blobs.ts";
import { DB_PAGE_SIZE, dbPathIn, openNodeDatabase, SCHEMA_VERSION } from "../../src/engine/database.ts";
import { DEFAULT_BLOCK_SIZE } from "../../src/store/format.ts";
import { StorageLock } from "../../src/engine/lock.ts";
import { walFrameBytes } from "../../src/engine/sqlite-files.ts";
import { WalCheckpointer } from "../../src/engine/wal.ts";
import { PAUSE_POINT_ENV, PAUSE_RELEASE_ENV, pauseReleaseFile } from "../../src/util/crash-point.ts";
import { isCairnError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import { FakeClock } from "../helpers/clock.ts";
import { thrown } from "../helpers/errors.ts";
import { pseudoRandomBytes } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
// bun test takes no default timeout from bunfig.toml: a test without a limit of its own
// would get Bun's 5 s, too little for this file's tests on a busy machine
setDefaultTimeout(30_000);

describe("database", () => {
  test("created with schema version, WAL mode, no autocheckpoint, and a node id that persists", () => {
    const dir = tmpDir();
    const a = openNodeDatabase(dir);
    expect(a.created).toBe(true);
    expect(a.nodeId).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.db.query("PRAGMA user_version").get()).toEqual({ user_version: SCHEMA_VERSION });
    expect(a.db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(a.db.query("PRAGMA wal_autocheckpoint").get()).toEqual({ wal_autocheckpoint: 0 });
    expect(a.db.query("PRAGMA synchronous").get()).toEqual({ synchronous: 2 });
    a.db.close();
    const b = openNodeDatabase(dir);
    expect(b.created).toBe(false);
    expect(b.nodeId).toBe(a.nodeId);
    b.db.close();
  });

  test("a new database has pages of the store's block size; an existing one keeps its own", async () => {
    expect(DB_PAGE_SIZE).toBe(DEFAULT_BLOCK_SIZE);
    const fresh = openNodeDatabase(tmpDir());
    expect(fresh.db.query("PRAGMA page_size").get()).toEqual({ page_size: DB_PAGE_SIZE });
    expect(fresh.pageSize).toBe(DB_PAGE_SIZE);
    fresh.db.close();
    const asked = openNodeDatabase(tmpDir(), { pageSize: 4096 });
    expect([asked.pageSize, asked.db.query("PRAGMA journal_mode").get()]).toEqual([4096, { journal_mode: "wal" }]);
    asked.db.close();

    // as an earlier cairn (or a restore of its checkpoint) left it: WAL mode, 4 KiB pages
    const dir = tmpDir();
    const raw = new Database(dbPathIn(dir), { create: true });
    raw.exec("PRAGMA page_size = 4096");
    raw.exec("PRAGMA journal_mode = WAL");
    raw.close();
    const old = openNodeDatabase(dir);
    const blobs = new BlobStore(old.db, undefined, silentLogger);
    await blobs.put("kept", pseudoRandomBytes(1, 20_000));
    blobs.close();
    old.db.close();
    const again = openNodeDatabase(dir, { pageSize: 16384 });
    expect(again.db.query("PRAGMA page_size").get()).toEqual({ page_size: 4096 });
    expect(again.pageSize).toBe(4096);
    expect(new BlobStore(again.db, undefined, silentLogger).get("kept")?.data.byteLength).toBe(20_000);
    again.db.close();
  });

  test("a database from a newer cairn is refused, not migrated", () => {
    const dir = tmpDir();
    openNodeDatabase(dir).db.close();
    const raw = new Database(dbPathIn(dir));
    raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    const e = thrown(() => openNodeDatabase(dir));
    expect(isCairnError(e) && e.code).toBe("E_DB_SCHEMA");
    expect(String((e as Error).message)).toContain("newer than this cairn understands");
  });

  test("an SQLite database that is not cairn's is refused", () => {
    const dir = tmpDir();
    const raw = new Database(dbPathIn(dir), { create: true });
    raw.exec("CREATE TABLE other (x)");
    raw.close();
    expect(String((thrown(() => openNodeDatabase(dir)) as Error).message)).toContain("not a cairn database");
  });
});

describe("blob store", () => {
  function store() {
    const dir = tmpDir();
    const { db } = openNodeDatabase(dir);
    return { db, blobs: new BlobStore(db, undefined, silentLogger) };
  }

  test("ids follow the contract", () => {
    expect(isValidBlobId("a")).toBe(true);
    expect(isValidBlobId("A-z_0.9")).toBe(true);
    expect(isValidBlobId("x".repeat(256))).toBe(true);
    expect(isValidBlobId("x".repeat(257))).toBe(false);
    expect(isValidBlobId("")).toBe(false);
    expect(isValidBlobId("a/b")).toBe(false);
    expect(isValidBlobId("a b")).toBe(false);
    expect(isValidBlobId("é")).toBe(false);
  });

  test("put, get, replace, delete, and the running totals", async () => {
    const { db, blobs } = store();
    expect(await blobs.put("a", new Uint8Array([1, 2, 3]))).toEqual({ created: true });
    expect(await blobs.put("b", new Uint8Array(10))).toEqual({ created: true });
    expect(await blobs.put("a", new Uint8Array([9]))).toEqual({ created: false });
    expect(blobs.get("a")!.data).toEqual(new Uint8Array([9]));
    expect(blobs.head("b")!.size).toBe(10);
    expect(blobs.totals()).toEqual({ count: 2, bytes: 11 });
    expect(await blobs.delete("b")).toEqual({ existed: true });
    expect(await blobs.delete("b")).toEqual({ existed: false });
    expect(blobs.get("b")).toBeNull();
    expect(blobs.totals()).toEqual({ count: 1, bytes: 1 });
    db.close();
  });

  test("concurrent writes share commits and all land", async () => {
    const { db, blobs } = store();
    const n = 200;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => blobs.put(`k${i}`, pseudoRandomBytes(i + 1, 1000))));
    expect(results.every((r) => r.created)).toBe(true);
    expect(blobs.stats.committedOps).toBe(n);
    expect(blobs.stats.commits).toBeLessThan(n / 10);
    expect(blobs.totals()).toEqual({ count: n, bytes: n * 1000 });
    expect(db.query("SELECT count(*) AS n, sum(size) AS s FROM blobs").get()).toEqual({ n, s: n * 1000 });
    db.close();
  });

  test("several writes to one id in one group apply in order", async () => {
    const { db, blobs } = store();
    const r = await Promise.all([blobs.put("x", new Uint8Array([1])), blobs.delete("x"), blobs.put("x", new Uint8Array([2, 2]))]);
    expect(r).toEqual([{ created: true }, { existed: true }, { created: true }]);
    expect(blobs.get("x")!.data).toEqual(new Uint8Array([2, 2]));
    expect(blobs.totals()).toEqual({ count: 1, bytes: 2 });
    db.close();
  });

  test("listing by prefix and after, in id order, with paging", async () => {
    const { db, blobs } = store();
    for (const id of ["b2", "a1", "b1", "b3", "c", "b"]) await blobs.put(id, new Uint8Array(id.length));
    expect(blobs.list({ limit: 100 }).blobs.map((b) => b.id)).toEqual(["a1", "b", "b1", "b2", "b3", "c"]);
    const p1 = blobs.list({ prefix: "b", limit: 2 });
    expect(p1).toEqual({ blobs: [{ id: "b", size: 1 }, { id: "b1", size: 2 }], nextAfter: "b1" });
    const p2 = blobs.list({ prefix: "b", after: "b1", limit: 2 });
    expect(p2).toEqual({ blobs: [{ id: "b2", size: 2 }, { id: "b3", size: 2 }], nextAfter: null });
    db.close();
  });

  test("a blob whose bytes no longer match its digest is reported, not served", async () => {
    const { db, blobs } = store();
    await blobs.put("x", new Uint8Array([1, 2, 3, 4]));
    db.query("UPDATE blobs SET data = ? WHERE id = 'x'").run(new Uint8Array([1, 2, 3, 5]));
    const e = thrown(() => blobs.get("x"));
    expect(isCairnError(e) && e.code).toBe("E_BLOB_CORRUPT");
    db.close();
  });

  test("writes after close are refused, queued ones still commit", async () => {
    const { db, blobs } = store();
    const queued = blobs.put("a", new Uint8Array(1));
    blobs.close();
    await expect(blobs.put("b", new Uint8Array(1))).rejects.toThrow("shutting down");
    await expect(queued).resolves.toEqual({ created: true });
    await blobs.flushed();
    db.close();
  });
});

describe("storage lock", () => {
  test("a second holder is refused with the first one's pid; released, it can be taken again", () => {
    const dir = tmpDir();
    const first = StorageLock.acquire(dir, "node");
    expect(StorageLock.isHeld(dir)).toBe(true);
    const e = thrown(() => StorageLock.acquire(dir, "node"));
    expect(isCairnError(e) && e.code).toBe("E_LOCKED");
    expect((e as Error).message).toContain(`pid ${process.pid}`);
    first.release();
    expect(StorageLock.isHeld(dir)).toBe(false);
    StorageLock.acquire(dir, "node").release();
  });
});

describe("WAL checkpointer", () => {
  test("keeps the WAL bounded under a steady write load, and pauses on demand", async () => {
    const dir = tmpDir();
    const { db } = openNodeDatabase(dir);
    const threshold = 256 * 1024;
    const wal = new WalCheckpointer({ dbFile: dbPathIn(dir), thresholdBytes: threshold, intervalMs: 50, logger: silentLogger });
    wal.start();
    const blobs = new BlobStore(db, wal, silentLogger);
    // 12 MiB in waves of 16 concurrent 8 KiB writes
    const written = 96 * 16 * 8192;
    for (let wave = 0; wave < 96; wave++) {
      await Promise.all(Array.from({ length: 16 }, (_, i) => blobs.put(`w${wave}-${i}`, pseudoRandomBytes(wave * 16 + i + 1, 8192))));
    }
    await waitFor(() => wal.stats.runs > 0, { what: "a WAL checkpoint" });
    expect(wal.stats.runs).toBeGreaterThan(0);
    expect(wal.stats.failures).toBe(0);
    // a WAL that were never checkpointed would hold every write (> 12 MiB); bounded, it stays
    // far below that. How far depends on how long each WAL checkpoint takes, while the writes
    // go on: a few times the threshold on an idle machine, more when the checkpointer's worker
    // and its fsyncs are slowed down by a busy one; never half of what was written.
    expect(wal.stats.walHighWaterBytes).toBeLessThan(written / 2);

    const { resume, folding } = await wal.pause();
    // a PASSIVE fold running at the pause goes on beside it; none starts after
    await folding;
    const runsBefore = wal.stats.runs;
    // every commit past the threshold asks for a checkpoint (so does the timer, as here):
    // paused, none starts
    for (let i = 0; i < 64; i++) await blobs.put(`p${i}`, pseudoRandomBytes(i + 7, 16384));
    wal.trigger();
    // a second pause: none started, none runs beside it
    const again = await wal.pause();
    expect(again.folding).toBeUndefined();
    again.resume();
    expect(wal.stats.runs).toBe(runsBefore);
    expect(wal.walSize()).toBeGreaterThan(threshold);
    resume();
    wal.trigger();
    await waitFor(() => wal.stats.runs > runsBefore, { what: "a WAL checkpoint once resumed" });
    expect(wal.stats.runs).toBeGreaterThan(runsBefore);
    await wal.stop();
    expect(blobs.totals().count).toBe(96 * 16 + 64);
    db.close();
  });
  test("a pause lets a running PASSIVE fold go on beside it, and waits for a fold behind the write barrier", async () => {
    const dir = tmpDir();
    const base = join(dir, "release");
    const passive = pauseReleaseFile(base, "wal:fold:passive");
    const barrier = pauseReleaseFile(base, "wal:fold:truncate");
    const env = { point: process.env[PAUSE_POINT_ENV], release: process.env[PAUSE_RELEASE_ENV] };
    process.env[PAUSE_POINT_ENV] = "wal:fold:passive,wal:fold:truncate";
    process.env[PAUSE_RELEASE_ENV] = base;
    const { db } = openNodeDatabase(dir);
    const threshold = 64 * 1024;
    const wal = new WalCheckpointer({ dbFile: dbPathIn(dir), thresholdBytes: threshold, intervalMs: 3_600_000, logger: silentLogger });
    try {
      wal.start();
      const blobs = new BlobStore(db, wal, silentLogger);
      // past the threshold: the commit starts a PASSIVE fold, held before it writes
      for (let i = 0; i < 12; i++) await blobs.put(`a${i}`, pseudoRandomBytes(i + 1, 8192));
      expect(wal.foldRunning()).toBeDefined();
      expect(wal.writeBarrier()).toBeUndefined();
      let paused: Awaited<ReturnType<WalCheckpointer["pause"]>> | undefined;
      void wal.pause().then((r) => (paused = r));
      await waitFor(() => paused !== undefined, { what: "the pause beside a running PASSIVE fold" });
      expect(paused!.folding).toBe(wal.foldRunning()!);
      writeFileSync(passive, "");
      await paused!.folding;
      expect(wal.stats.runs).toBe(1);
      // paused, nothing starts however far the WAL grows
      for (let i = 0; i < 40; i++) await blobs.put(`b${i}`, pseudoRandomBytes(i + 100, 8192));
      wal.trigger();
      expect(wal.foldRunning()).toBeUndefined();
      paused!.resume();
      // past four times the threshold: a TRUNCATE behind the barrier, held before it writes
      wal.trigger();
      expect(wal.writeBarrier()).toBeDefined();
      const second = wal.pause();
      writeFileSync(barrier, "");
      const r = await second;
      // it resolved only once that fold had ended
      expect(r.folding).toBeUndefined();
      expect(wal.foldRunning()).toBeUndefined();
      expect(wal.stats.truncations).toBe(1);
      r.resume();
    } finally {
      writeFileSync(passive, "");
      writeFileSync(barrier, "");
      await wal.stop();
      db.close();
      for (const [k, v] of [[PAUSE_POINT_ENV, env.point], [PAUSE_RELEASE_ENV, env.release]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  /** A node-like checkpointer: it reads what the WAL holds from the wal-index, on a clock the test moves. */
  function indexedCheckpointer(dir: string, threshold: number) {
    const { db } = openNodeDatabase(dir);
    // the test's own descriptor of -shm, closed only after the database (closing it drops the process's locks)
    const shm = openSync(`${dbPathIn(dir)}-shm`, "r");
    const clock = new FakeClock();
    const wal = new WalCheckpointer({ dbFile: dbPathIn(dir), thresholdBytes: threshold, intervalMs: 1000, logger: silentLogger, clock, walBytes: () => walFrameBytes(shm) });
    wal.start();
    const blobs = new BlobStore(db, wal, silentLogger);
    const walBytes = () => walFrameBytes(shm)!;
    const close = async () => {
      await wal.stop();
      db.close();
      closeSync(shm);
    };
    return { db, wal, blobs, clock, walBytes, close };
  }

  test("a WAL grown while folds were paused is folded beside the writes (no barrier), started over in place, and emptied only once writes pause", async () => {
    const dir = tmpDir();
    const threshold = 256 * 1024;
    const { wal, blobs, clock, walBytes, close } = indexedCheckpointer(dir, threshold);
    try {
      const paused = await wal.pause();
      for (let i = 0; i < 80; i++) await blobs.put(`a${i}`, pseudoRandomBytes(i + 1, 16384));
      expect(walBytes().pending).toBeGreaterThan(4 * threshold);
      paused.resume();
      wal.trigger();
      // much left to fold: a PASSIVE fold, and writes go on beside it
      expect(wal.foldRunning()).toBeDefined();
      expect(wal.writeBarrier()).toBeUndefined();
      await waitFor(() => wal.foldRunning() === undefined && walBytes().pending === 0, { what: "the PASSIVE folds" });
      expect(wal.stats.truncations).toBe(0);
      expect(wal.stats.restarts).toBe(0);
      // every frame folded in: the next writer starts the WAL over itself, in the same file
      await blobs.put("b", pseudoRandomBytes(999, 100));
      expect(walBytes().total).toBeLessThan(threshold);
      expect(wal.walSize()).toBeGreaterThan(4 * threshold);
      // the timer's next look finds a commit since the last: the file is left as it is
      clock.advance(1000);
      await waitFor(() => wal.foldRunning() === undefined && walBytes().pending === 0, { what: "the timer's PASSIVE fold" });
      expect(wal.stats.truncations).toBe(0);
      expect(wal.walSize()).toBeGreaterThan(4 * threshold);
      // the look after finds none: the large file is emptied behind the barrier
      clock.advance(1000);
      await waitFor(() => wal.stats.truncations === 1 && wal.foldRunning() === undefined, { what: "the TRUNCATE once writes paused" });
      expect(wal.walSize()).toBe(0);
      expect(wal.stats.failures).toBe(0);
      expect(blobs.totals().count).toBe(81);
    } finally {
      await close();
    }
  });

  test("under a steady write load past the threshold, folds follow one another until a catch-up starts the WAL over in place; no TRUNCATE", async () => {
    const dir = tmpDir();
    const threshold = 256 * 1024;
    const { wal, blobs, walBytes, close } = indexedCheckpointer(dir, threshold);
    try {
      let high = 0;
      for (let wave = 0; wave < 60; wave++) {
        await Promise.all(Array.from({ length: 8 }, (_, i) => blobs.put(`w${wave}-${i}`, pseudoRandomBytes(wave * 8 + i + 1, 16384))));
        high = Math.max(high, walBytes().total);
      }
      await waitFor(() => wal.foldRunning() === undefined, { what: "the last fold" });
      expect(wal.stats.runs).toBeGreaterThan(1);
      expect(wal.stats.failures).toBe(0);
      expect(wal.stats.truncations).toBe(0);
      expect(wal.stats.restarts).toBeGreaterThan(0);
      // 60 waves of 8 × 16 KiB; started over in place, the WAL never held half of them (see the test above on how far below)
      expect(high).toBeLessThan((60 * 8 * 16384) / 2);
    } finally {
      await close();
    }
  });

  test("another connection's read holding the PASSIVE folds back: past four times the threshold a TRUNCATE behind the barrier waits for that read, then empties the WAL", async () => {
    const dir = tmpDir();
    const threshold = 64 * 1024;
    const { wal, blobs, clock, walBytes, close } = indexedCheckpointer(dir, threshold);
    const reader = new Database(dbPathIn(dir), { readonly: true });
    try {
      await blobs.put("first", pseudoRandomBytes(1, 8192));
      // an operator's sqlite3 in a read transaction: its snapshot keeps the frames after it out of the database file
      reader.exec("BEGIN");
      reader.query("SELECT count(*) FROM blobs").get();
      for (let i = 0; i < 20; i++) await blobs.put(`a${i}`, pseudoRandomBytes(i + 2, 8192));
      await waitFor(() => wal.foldRunning() === undefined && wal.stats.runs > 0, { what: "the PASSIVE folds held back" });
      const runs = wal.stats.runs;
      let more = 0;
      for (; more < 20 && walBytes().total <= 4 * threshold; more++) await blobs.put(`b${more}`, pseudoRandomBytes(more + 50, 8192));
      expect(walBytes().total).toBeGreaterThan(4 * threshold);
      if (wal.foldRunning() === undefined) wal.trigger();
      await waitFor(() => wal.writeBarrier() !== undefined || wal.stats.truncations > 0, { what: "a TRUNCATE behind the barrier" });
      await waitFor(() => wal.foldRunning() === undefined, { what: "the TRUNCATE to give up on the reader" });
      expect(wal.stats.runs).toBeGreaterThan(runs);
      expect(wal.stats.truncations).toBe(1);
      expect(walBytes().total).toBeGreaterThan(4 * threshold);
      // the read ends; once the hold-off has passed, the next TRUNCATE empties the WAL
      reader.exec("COMMIT");
      clock.advance(1000);
      if (wal.foldRunning() === undefined) wal.trigger();
      await waitFor(() => wal.stats.truncations === 2 && wal.foldRunning() === undefined, { what: "the second TRUNCATE" });
      expect(wal.walSize()).toBe(0);
      expect(blobs.totals().count).toBe(21 + more);
      expect(wal.stats.failures).toBe(0);
    } finally {
      reader.close();
      await close();
    }
  });
});

test("lock file lives in the storage dir", () => {
  const dir = tmpDir();
  const l = StorageLock.acquire(dir, "node");
  expect(l.path).toBe(join(dir, "cairn.lock"));
  l.release();
});
