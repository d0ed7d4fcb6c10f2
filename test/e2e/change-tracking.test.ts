/**
 * Incremental checkpoints from the node's change tracking (engine/change-tracker.ts), end to
 * end with the compiled binary: every checkpoint is rebuilt and compared byte for byte with a
 * copy of the database taken at the same instant (while the checkpoint holds its pin and
 * nothing writes), after random writes and deletes and WAL folds of both kinds; a crash at
 * each point of the tracking, another program writing, a restore and a second store each
 * make the next checkpoint read everything and say why, and it is still exact.
 */
import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adminAsync, checkpointStatus, createCheckpointAsync, CREATED_RE, materialize } from "../helpers/checkpoint.ts";
import { type NodeHandle, pseudoRandomBytes, runCairn, sqlite3, startNode, startNodeWithConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { headerPageSize } from "../../src/engine/sqlite-files.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { SEGMENT_ENTRY_BYTES } from "../../src/store/format.ts";
import { toHex } from "../../src/store/hash.ts";
import { readIndexEntry } from "../../src/store/pack.ts";
import { LOC_WORDS, StoreReader } from "../../src/store/reader.ts";
import { waitFor } from "../helpers/wait.ts";
import { pauseReleaseFile } from "../../src/util/crash-point.ts";

cleanTmpDirsAfterEach();

// folds often (PASSIVE past 64 KiB of WAL, TRUNCATE past 256 KiB), checkpoints kept three deep
const YAML = `wal_checkpoint_threshold_bytes: 65536
wal_checkpoint_interval_secs: 0.05
checkpoint_config:
  db_checkpoint_dir: ./ckpt
  max_db_checkpoints: 3
  sync: false
`;
const PAUSED = "cairn: test pause point checkpoint:pinned reached";

/** Deterministic choices for a test's writes. */
class Rng {
  constructor(private x: number) {}
  next(): number {
    this.x ^= this.x << 13;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    this.x >>>= 0;
    return this.x / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** A node whose checkpoints stop at their pin until `release` exists, so the test can copy the database there. */
interface Pausing {
  node: NodeHandle;
  dir: string;
  releaseFile: string;
}

async function startPausing(dir: string, env: Record<string, string> = {}, extraYaml = ""): Promise<Pausing> {
  const releaseFile = join(dir, "release");
  const node = await startNode(dir, { extraYaml: YAML + extraYaml, env: { CAIRN_TEST_PAUSE_POINT: "checkpoint:pinned", CAIRN_TEST_PAUSE_RELEASE_FILE: releaseFile, ...env } });
  return { node, dir, releaseFile };
}

async function restartPausing(p: Pausing, env: Record<string, string> = {}): Promise<Pausing> {
  const node = await startNodeWithConfig(p.dir, p.node.configFile, p.node.url, 10_000, {
    CAIRN_TEST_PAUSE_POINT: "checkpoint:pinned",
    CAIRN_TEST_PAUSE_RELEASE_FILE: p.releaseFile,
    ...env,
  });
  return { ...p, node };
}

/** Random creates, overwrites and deletes; returns the ids that exist afterwards. */
async function randomWrites(node: NodeHandle, rng: Rng, ids: Set<string>, ops: number): Promise<void> {
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < ops; i++) {
    const existing = [...ids];
    const r = rng.next();
    let req: Promise<Response>;
    let id: string;
    if (r < 0.2 && existing.length > 0) {
      id = existing[rng.int(existing.length)]!;
      ids.delete(id);
      req = fetch(`${node.url}/v1/blobs/${id}`, { method: "DELETE" });
    } else {
      id = r < 0.5 && existing.length > 0 ? existing[rng.int(existing.length)]! : `b${rng.int(1e9)}`;
      ids.add(id);
      // mostly small rows, some spilling onto overflow pages
      const size = rng.next() < 0.15 ? 20_000 + rng.int(200_000) : 100 + rng.int(8000);
      req = fetch(`${node.url}/v1/blobs/${id}`, { method: "PUT", body: pseudoRandomBytes(rng.int(1e9) + 1, size) });
    }
    jobs.push(
      req.then(async (res) => {
        await res.arrayBuffer();
        if (![201, 204, 404].includes(res.status)) throw new Error(`${id}: HTTP ${res.status}`);
      }),
    );
    if (jobs.length >= 8) await Promise.all(jobs.splice(0));
  }
  await Promise.all(jobs);
}

interface Taken {
  id: number;
  scan: string;
  scanReason?: string;
  /** The database as it was at the checkpoint's pin, folded into one file. */
  copy: string;
}

/**
 * Take a checkpoint (into `path` if given) and, while it holds its pin, copy cairn.db and its
 * WAL; the copy is then folded into one file by the stock sqlite3 (its recovery replays the
 * committed frames), which is the database as of that instant, page for page.
 */
async function checkpointWithCopy(p: Pausing, copyDir: string, path?: string, whilePinned?: () => Promise<void>): Promise<Taken> {
  if (existsSync(p.releaseFile)) unlinkSync(p.releaseFile);
  const before = p.node.logs().split(PAUSED).length;
  const running = adminAsync(p.node, ["checkpoint", "create", ...(path ? ["--path", path] : [])]);
  await waitFor(() => p.node.logs().split(PAUSED).length > before, { timeoutMs: 30_000, what: "the checkpoint to pin its snapshot" });
  mkdirSync(copyDir, { recursive: true });
  const copy = join(copyDir, "copy.db");
  copyFileSync(join(p.node.storage, "cairn.db"), copy);
  if (existsSync(join(p.node.storage, "cairn.db-wal"))) copyFileSync(join(p.node.storage, "cairn.db-wal"), `${copy}-wal`);
  await whilePinned?.();
  writeFileSync(p.releaseFile, "");
  const r = await running;
  const m = CREATED_RE.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`checkpoint failed (exit ${r.code}): ${r.stdout}${r.stderr}\n${p.node.logs()}`);
  fold(copy);
  const status = await checkpointStatus(p.node);
  const result = status.last.result;
  return { id: Number(m[1]), scan: result.scan, scanReason: result.scanReason, copy };
}

/** Writes and a first checkpoint, then writes and an incremental one on top (returned). */
async function twoCheckpoints(p: Pausing, rng: Rng, ids: Set<string>, dir: string): Promise<Taken> {
  await randomWrites(p.node, rng, ids, 150);
  await checkpointWithCopy(p, join(dir, "c1"));
  await randomWrites(p.node, rng, ids, 60);
  const second = await checkpointWithCopy(p, join(dir, "c2"));
  expect(second.scan).toBe("changes");
  return second;
}

/** Fold a copied database's WAL into it (sqlite3 recovers it, checkpoints it on close). */
function fold(file: string): void {
  const r = Bun.spawnSync(["sqlite3", file, "PRAGMA wal_checkpoint(TRUNCATE);"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`sqlite3: ${r.stderr.toString()}`);
  rmSync(`${file}-wal`, { force: true });
  rmSync(`${file}-shm`, { force: true });
}

/** Checkpoint `id` of `storeDir`, rebuilt, is the copy byte for byte. */
async function expectExact(storeDir: string, t: Taken, work: string): Promise<void> {
  const out = join(work, `rebuilt-${t.id}.db`);
  await materialize(storeDir, t.id, out);
  const a = readFileSync(out);
  const b = readFileSync(t.copy);
  expect(a.length).toBe(b.length);
  if (!a.equals(b)) {
    let at = 0;
    while (a[at] === b[at]) at++;
    throw new Error(`checkpoint ${t.id} (${t.scan}) differs from the database at its pin, first at byte ${at} (page ${Math.floor(at / headerPageSize(b)) + 1})`);
  }
  rmSync(out);
}

/**
 * Checkpoint `id` names exactly the packs it needs: every block and segment of it is in one of
 * them (else restore fails), and each holds at least one (else garbage collection could never
 * free it, nor a remote's retention).
 */
async function expectPacksExact(storeDir: string, id: number): Promise<void> {
  const reader = new StoreReader(new DirBackend(storeDir));
  const m = await reader.manifest(id);
  const where = await reader.locateSome(m.packs, m.segments);
  expect(m.segments.filter((d) => !where.has(d))).toEqual([]);
  const list = await reader.blockList(m, where);
  const out = new Uint32Array(m.block_count * LOC_WORDS);
  await reader.locateList(m.packs, list, m.block_count, out, (b) => `checkpoint ${id}: block ${b}`);
  const needed = new Set(m.segments);
  for (let b = 0; b < m.block_count; b++) needed.add(toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)));
  const idle: string[] = [];
  for (const p of m.packs) {
    const idx = await reader.index(p);
    let holds = false;
    for (let i = 0; i < idx.count && !holds; i++) holds = needed.has(toHex(readIndexEntry(idx, i).digest));
    if (!holds) idle.push(p);
  }
  expect({ id, packsHoldingNothingItNeeds: idle }).toEqual({ id, packsHoldingNothingItNeeds: [] });
}

async function metric(node: NodeHandle, name: string): Promise<number> {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)`, "m").exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

describe("incremental checkpoints from the tracked changes", () => {
  // a page a block (the default), two pages a block (an older database, or db_page_size: 4096),
  // two blocks a page
  for (const pageSize of [8192, 4096, 16384])
  test(`after random writes, deletes and WAL folds of both kinds, every checkpoint is the database at its pin (pages of ${pageSize} bytes)`, async () => {
    const dir = tmpDir();
    const p = await startPausing(dir, {}, `db_page_size: ${pageSize}\n`);
    const rng = new Rng(12345);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    try {
      await randomWrites(p.node, rng, ids, 300);
      const first = await checkpointWithCopy(p, join(dir, "c0"));
      expect(first.scan).toBe("full");
      expect(first.scanReason).toMatch(/no checkpoint to build on/);
      expect(headerPageSize(readFileSync(first.copy))).toBe(pageSize);
      await expectExact(store, first, dir);
      for (let round = 1; round <= 8; round++) {
        await randomWrites(p.node, rng, ids, 40 + rng.int(120));
        const t = await checkpointWithCopy(p, join(dir, `c${round}`));
        expect({ round, scan: t.scan, reason: t.scanReason }).toEqual({ round, scan: "changes", reason: undefined });
        await expectExact(store, t, dir);
        await expectPacksExact(store, t.id);
        if (round % 4 === 0) {
          // the same state read whole into a second store: the same bytes
          const other = join(dir, `other-${round}`);
          const full = await checkpointWithCopy(p, join(dir, `o${round}`), other);
          expect(full.scan).toBe("full");
          await expectExact(other, full, dir);
          expect(readFileSync(full.copy).equals(readFileSync(t.copy))).toBe(true);
        }
      }
      // retention's garbage collection rewrote packs under the node's remembered checkpoint
      expect(p.node.logs()).toMatch(/garbage collection: \d+ pack\(s\) removed, [1-9]\d* rewritten/);
      // folds of every kind ran under the checkpoints: PASSIVE, and those that start the WAL over
      const folds = await metric(p.node, "cairn_wal_checkpoints_total");
      const overs = (await metric(p.node, "cairn_wal_restarts_total")) + (await metric(p.node, "cairn_wal_truncations_total"));
      expect(overs).toBeGreaterThan(0);
      expect(folds).toBeGreaterThan(overs);
      const status = await checkpointStatus(p.node);
      expect(status.change_tracking).toMatchObject({ lost: null });
      expect(runCairn(["verify-db-checkpoint", store]).code).toBe(0);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 180_000);

  test("the README's page-size change (sqlite3 VACUUM with the node stopped): the next checkpoint reads everything, says why, and both are exact", async () => {
    const dir = tmpDir();
    let p = await startPausing(dir, {}, "db_page_size: 4096\n");
    const rng = new Rng(4242);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    try {
      const before = await twoCheckpoints(p, rng, ids, dir);
      await expectExact(store, before, dir);
      expect(await p.node.stop()).toBe(0);
      const db = join(p.node.storage, "cairn.db");
      expect(sqlite3(db, "PRAGMA journal_mode=DELETE; PRAGMA page_size=8192; VACUUM; PRAGMA journal_mode=WAL")).toBe("delete\nwal");
      expect(sqlite3(db, "PRAGMA page_size")).toBe("8192");
      p = await restartPausing(p);
      await randomWrites(p.node, rng, ids, 40);
      const t = await checkpointWithCopy(p, join(dir, "c3"));
      expect(t.scan).toBe("full");
      expect(t.scanReason).toMatch(/the database file changed while the node was stopped/);
      expect(headerPageSize(readFileSync(t.copy))).toBe(8192);
      await expectExact(store, t, dir);
      await randomWrites(p.node, rng, ids, 40);
      const next = await checkpointWithCopy(p, join(dir, "c4"));
      expect(next.scan).toBe("changes");
      await expectExact(store, next, dir);
      // the checkpoints of both page sizes restore: the oldest kept, 4 KiB pages, too
      await expectExact(store, before, dir);
      expect(runCairn(["verify-db-checkpoint", store]).code).toBe(0);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 120_000);

  for (const point of ["changes:before-save", "changes:saved", "changes:taken-back", "kill -9 while running"]) {
    test(`a crash at ${point}: the next checkpoint is exact, and reads everything unless the record survived whole`, async () => {
      const dir = tmpDir();
      const crashEnv: Record<string, string> = point.startsWith("changes:") ? { CAIRN_TEST_CRASH_POINT: point } : {};
      let p = await startPausing(dir, point === "changes:taken-back" ? {} : crashEnv);
      const rng = new Rng(777);
      const ids = new Set<string>();
      const store = join(dir, "ckpt");
      try {
        await twoCheckpoints(p, rng, ids, dir);
        await randomWrites(p.node, rng, ids, 60);
        if (point === "kill -9 while running") await p.node.kill9();
        else {
          // the stop saves the record: a crash point there kills the node (SIGKILL) on the way
          const code = await p.node.stop();
          if (point !== "changes:taken-back") expect(code).not.toBe(0);
          else expect(code).toBe(0);
        }
        if (point === "changes:taken-back") {
          // the start takes the record back and dies right after
          const dying = await startNodeWithConfig(dir, p.node.configFile, p.node.url, 10_000, crashEnv).catch((e: Error) => e);
          expect(dying).toBeInstanceOf(Error);
        }
        p = await restartPausing(p);
        await randomWrites(p.node, rng, ids, 40);
        const t = await checkpointWithCopy(p, join(dir, "c3"));
        if (point === "changes:saved") expect(t.scan).toBe("changes");
        else {
          expect(t.scan).toBe("full");
          expect(t.scanReason).toMatch(/no record of the changes/);
        }
        await expectExact(store, t, dir);
        // and tracking goes on from there
        await randomWrites(p.node, rng, ids, 40);
        const next = await checkpointWithCopy(p, join(dir, "c4"));
        expect(next.scan).toBe("changes");
        await expectExact(store, next, dir);
      } finally {
        writeFileSync(p.releaseFile, "");
        if (p.node.proc.exitCode === null) await p.node.stop();
      }
    }, 120_000);
  }

  test("a checkpoint pinned while a PASSIVE fold runs: the fold writes the file under it, and the checkpoint is incremental and exact", async () => {
    const dir = tmpDir();
    // two pause points: the checkpoint at its pin, and a PASSIVE fold before it writes anything
    const base = join(dir, "release");
    const foldRelease = pauseReleaseFile(base, "wal:fold:passive");
    writeFileSync(foldRelease, "");
    const node = await startNode(dir, { extraYaml: YAML, env: { CAIRN_TEST_PAUSE_POINT: "checkpoint:pinned,wal:fold:passive", CAIRN_TEST_PAUSE_RELEASE_FILE: base } });
    const p: Pausing = { node, dir, releaseFile: pauseReleaseFile(base, "checkpoint:pinned") };
    const rng = new Rng(777);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    const held = () => node.logs().split("cairn: test pause point wal:fold:passive reached").length;
    const folded = () => [...node.logs().matchAll(/WAL checkpoint \(passive\): (\d+)\/(\d+) frames/g)];
    try {
      expect((await adminAsync(node, ["log-level", "--level", "debug"])).code).toBe(0);
      await randomWrites(node, rng, ids, 200);
      const first = await checkpointWithCopy(p, join(dir, "c0"));
      expect(first.scan).toBe("full");
      await expectExact(store, first, dir);
      for (let round = 1; round <= 2; round++) {
        // the next PASSIVE fold stops before it writes; the writes go on beside it
        unlinkSync(foldRelease);
        const before = held();
        await randomWrites(node, rng, ids, 60);
        await waitFor(() => held() > before, { timeoutMs: 30_000, what: "a PASSIVE fold to start" });
        await randomWrites(node, rng, ids, 40);
        const foldsBefore = folded().length;
        const t = await checkpointWithCopy(p, join(dir, `c${round}`), undefined, async () => {
          // pinned (and copied): now the fold copies frames into cairn.db under the checkpoint
          writeFileSync(foldRelease, "");
          await waitFor(() => folded().length > foldsBefore, { timeoutMs: 30_000, what: "the fold beside the pin to finish" });
        });
        const fold = folded()[foldsBefore]!;
        expect(Number(fold[1])).toBeGreaterThan(0);
        expect({ round, scan: t.scan, reason: t.scanReason }).toEqual({ round, scan: "changes", reason: undefined });
        await expectExact(store, t, dir);
      }
      expect(node.logs()).toContain("checkpoint pinned beside a running WAL fold");
      // and the tracking goes on from the fold's file: the next one is incremental and exact
      await randomWrites(node, rng, ids, 80);
      const after = await checkpointWithCopy(p, join(dir, "c9"));
      expect({ scan: after.scan, reason: after.scanReason }).toEqual({ scan: "changes", reason: undefined });
      await expectExact(store, after, dir);
      expect((await checkpointStatus(node)).change_tracking).toMatchObject({ lost: null });
      expect(runCairn(["verify-db-checkpoint", store]).code).toBe(0);
    } finally {
      writeFileSync(p.releaseFile, "");
      writeFileSync(foldRelease, "");
      if (node.proc.exitCode === null) await node.stop();
    }
  }, 180_000);

  test("another program writing beside the node: the next checkpoint reads everything, says why, and is exact", async () => {
    const dir = tmpDir();
    const p = await startPausing(dir);
    const rng = new Rng(99);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    const db = join(p.node.storage, "cairn.db");
    try {
      await randomWrites(p.node, rng, ids, 120);
      await checkpointWithCopy(p, join(dir, "c1"));
      await randomWrites(p.node, rng, ids, 40);
      // an operator's sqlite3 commits into the live database
      const r = Bun.spawnSync(["sqlite3", "-cmd", ".timeout 10000", db, "CREATE TABLE IF NOT EXISTS notes (x BLOB); INSERT INTO notes VALUES (randomblob(30000));"], {
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(r.stderr.toString()).toBe("");
      expect((await checkpointStatus(p.node)).change_tracking.lost).toMatch(/another program committed/);
      const t = await checkpointWithCopy(p, join(dir, "c2"));
      expect(t.scan).toBe("full");
      expect(t.scanReason).toMatch(/another program committed/);
      await expectExact(store, t, dir);
      // from that checkpoint on the node tracks again
      await randomWrites(p.node, rng, ids, 40);
      const next = await checkpointWithCopy(p, join(dir, "c3"));
      expect(next.scan).toBe("changes");
      await expectExact(store, next, dir);
      // an operator's sqlite3 folding the WAL itself changes the database file under the node
      await randomWrites(p.node, rng, ids, 30);
      const f = Bun.spawnSync(["sqlite3", "-cmd", ".timeout 10000", db, "PRAGMA wal_checkpoint(PASSIVE);"], { stdout: "pipe", stderr: "pipe" });
      expect(f.exitCode).toBe(0);
      const after = await checkpointWithCopy(p, join(dir, "c4"));
      if (after.scan === "full") expect(after.scanReason).toMatch(/changed by something other than the node/);
      await expectExact(store, after, dir);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 120_000);

  test("a tracking that missed a change (a fault injected): the sample finds it, the checkpoint reads everything and is exact", async () => {
    const dir = tmpDir();
    const p = await startPausing(dir, { CAIRN_TEST_TRACKER_FORGETS: "1" });
    const store = join(dir, "ckpt");
    try {
      // rows spilling onto overflow pages, then every one of them rewritten: most blocks change,
      // and the tracker says none did
      const put = async (id: string, seed: number) => {
        const res = await fetch(`${p.node.url}/v1/blobs/${id}`, { method: "PUT", body: pseudoRandomBytes(seed, 30_000) });
        await res.arrayBuffer();
        expect([201, 204]).toContain(res.status);
      };
      for (let i = 0; i < 60; i++) await put(`r${i}`, i + 1);
      const first = await checkpointWithCopy(p, join(dir, "c1"));
      expect(first.scan).toBe("full");
      for (let i = 0; i < 60; i++) await put(`r${i}`, 1000 + i);
      const t = await checkpointWithCopy(p, join(dir, "c2"));
      expect(t.scan).toBe("full");
      expect(t.scanReason).toMatch(/the change tracking missed a change at block \d+/);
      expect(p.node.logs()).toContain("the change tracking missed a change");
      await expectExact(store, t, dir);
      await expectPacksExact(store, t.id);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 60_000);

  test("segments whose blocks are in more packs than the node's table can say (a pack a block): the next checkpoints look them up in the packs' indexes and are exact", async () => {
    const dir = tmpDir();
    // every block closes its pack: a segment's 256 blocks in 256 packs, past what blockPackOf holds
    const p = await startPausing(dir, { CAIRN_TEST_PACK_TARGET_BYTES: "1" });
    const rng = new Rng(4242);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    try {
      // more than a segment's worth of blocks (2 MiB)
      await randomWrites(p.node, rng, ids, 200);
      while (statSync(join(p.node.storage, "cairn.db")).size < 3 * 1024 * 1024) await randomWrites(p.node, rng, ids, 50);
      const first = await checkpointWithCopy(p, join(dir, "c1"));
      await expectExact(store, first, dir);
      for (let round = 2; round <= 3; round++) {
        await randomWrites(p.node, rng, ids, 25);
        const t = await checkpointWithCopy(p, join(dir, `c${round}`));
        expect(t.scan).toBe("changes");
        await expectExact(store, t, dir);
        await expectPacksExact(store, t.id);
      }
      expect((await checkpointStatus(p.node)).last.result.rangeMs.indexLoads).toBeGreaterThan(0);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 90_000);

  test("a restore, then a start: the next checkpoint reads everything and is exact", async () => {
    const dir = tmpDir();
    let p = await startPausing(dir);
    const rng = new Rng(4242);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    try {
      await randomWrites(p.node, rng, ids, 120);
      const one = await checkpointWithCopy(p, join(dir, "c1"));
      await randomWrites(p.node, rng, ids, 60);
      await checkpointWithCopy(p, join(dir, "c2"));
      await randomWrites(p.node, rng, ids, 30);
      expect(await p.node.stop()).toBe(0);
      expect(existsSync(join(p.node.storage, "cairn-changes"))).toBe(true);
      const r = runCairn(["restore", "--db-checkpoint-path", store, "--db-path", p.node.storage, "--checkpoint-id", String(one.id), "--force"]);
      expect(r.code).toBe(0);
      expect(existsSync(join(p.node.storage, "cairn-changes"))).toBe(false);
      p = await restartPausing(p);
      expect((await checkpointStatus(p.node)).change_tracking.lost).toMatch(/no record/);
      await randomWrites(p.node, rng, ids, 30);
      const t = await checkpointWithCopy(p, join(dir, "c3"));
      expect(t.scan).toBe("full");
      await expectExact(store, t, dir);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 120_000);

  test("a record saved at a clean stop is refused if the database was replaced while the node was stopped", async () => {
    const dir = tmpDir();
    let p = await startPausing(dir);
    const rng = new Rng(5150);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    try {
      await randomWrites(p.node, rng, ids, 100);
      await checkpointWithCopy(p, join(dir, "c1"));
      await randomWrites(p.node, rng, ids, 40);
      expect(await p.node.stop()).toBe(0);
      // an operator puts back an older copy of the file by hand, timestamps and all
      const db = join(p.node.storage, "cairn.db");
      const saved = readFileSync(db);
      const st = statSync(db);
      writeFileSync(db, saved);
      utimesSync(db, st.atime, st.mtime);
      p = await restartPausing(p);
      expect((await checkpointStatus(p.node)).change_tracking.lost).toMatch(/changed while the node was stopped/);
      const t = await checkpointWithCopy(p, join(dir, "c2"));
      expect(t.scan).toBe("full");
      await expectExact(store, t, dir);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 90_000);

  test("a checkpoint into a second store leaves the tracking of the configured one alone", async () => {
    const dir = tmpDir();
    const p = await startPausing(dir);
    const rng = new Rng(31337);
    const ids = new Set<string>();
    const store = join(dir, "ckpt");
    const elsewhere = join(dir, "elsewhere");
    try {
      await randomWrites(p.node, rng, ids, 120);
      await checkpointWithCopy(p, join(dir, "c1"));
      await randomWrites(p.node, rng, ids, 40);
      const a = await checkpointWithCopy(p, join(dir, "e1"), elsewhere);
      expect(a.scan).toBe("full");
      await expectExact(elsewhere, a, dir);
      await randomWrites(p.node, rng, ids, 40);
      const b = await checkpointWithCopy(p, join(dir, "e2"), elsewhere);
      expect(b.scan).toBe("full");
      expect(b.scanReason).toMatch(/not tracked for this store/);
      await expectExact(elsewhere, b, dir);
      await randomWrites(p.node, rng, ids, 40);
      const c = await checkpointWithCopy(p, join(dir, "c2"));
      expect(c.scan).toBe("changes");
      await expectExact(store, c, dir);
    } finally {
      writeFileSync(p.releaseFile, "");
      if (p.node.proc.exitCode === null) await p.node.stop();
    }
  }, 120_000);
});
