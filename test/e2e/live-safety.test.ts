/**
 * An operator's stock `sqlite3` beside a live node (CONTRACT: "Sharing the database with
 * sqlite3"). Plain and -readonly connections run queries, `.backup`, `PRAGMA quick_check` and
 * `integrity_check` against the node's database after checkpoints, while a checkpoint is
 * pinned, while garbage collection runs and while the node folds its WAL under a write load.
 * Each time: the node keeps serving and never dies, its -wal and -shm are still the files it
 * uses, it still holds its SQLite locks (/proc/locks), the next checkpoint succeeds, and after
 * more writes and kill -9 every acknowledged write reads back byte for byte.
 *
 * Then the fail-closed path: a WAL or wal-index unlinked or replaced under the node makes it
 * refuse writes with 503 before it acknowledges one it cannot keep.
 */
import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCheckpoint, createCheckpointAsync, putAll } from "../helpers/checkpoint.ts";
import { waitFor } from "../helpers/wait.ts";
import { getJson, type NodeHandle, pseudoRandomBytes, sha256, startNode, startNodeWithConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

/** What the operator runs: [label, sqlite3 flags, SQL or dot-command (OUT is replaced by a fresh file)]. */
const OPERATOR_COMMANDS: [string, string[], string][] = [
  ["select", [], "SELECT count(*) FROM blobs;"],
  ["select, -readonly", ["-readonly"], "SELECT count(*) FROM blobs;"],
  [".backup", [], ".backup OUT"],
  [".backup, -readonly", ["-readonly"], ".backup OUT"],
  ["PRAGMA quick_check", [], "PRAGMA quick_check;"],
  ["PRAGMA integrity_check, -readonly", ["-readonly"], "PRAGMA integrity_check;"],
];

/** Run every operator command against the live database; each must succeed. Returns what each printed. */
async function runOperatorCommands(dbFile: string, dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let k = 0;
  for (const [label, flags, sql] of OPERATOR_COMMANDS) {
    const backup = join(dir, `operator-backup-${k++}.db`);
    const p = Bun.spawn(["sqlite3", ...flags, dbFile, sql.replace("OUT", backup)], { stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) throw new Error(`sqlite3 ${label} failed (exit ${code}): ${stderr}`);
    if (sql.startsWith(".backup")) {
      // the operator's copy is a good database too
      const check = Bun.spawnSync(["sqlite3", backup, "PRAGMA integrity_check;"], { stdout: "pipe" });
      expect(check.stdout.toString().trim()).toBe("ok");
    }
    if (sql.includes("check")) expect(stdout.trim()).toBe("ok");
    out.set(label, stdout.trim());
  }
  return out;
}

/** Inode numbers of the node's database files as they are on disk now. */
function inodes(node: NodeHandle): Record<string, number> {
  const db = join(node.storage, "cairn.db");
  return { db: statSync(db).ino, wal: statSync(`${db}-wal`).ino, shm: statSync(`${db}-shm`).ino };
}

/**
 * The POSIX locks `pid` holds, as inode numbers: SQLite holds a read lock on the database file
 * and one on the wal-index (its "dead man switch") for as long as its connection is open.
 */
function lockedInodes(pid: number): Set<number> {
  const held = new Set<number>();
  for (const line of readFileSync("/proc/locks", "utf8").split("\n")) {
    // "1: POSIX  ADVISORY  READ 7846 fe:00:2162833 128 128"
    const f = line.trim().split(/\s+/);
    if (f[1] === "POSIX" && Number(f[4]) === pid) held.add(Number(f[5]!.split(":")[2]));
  }
  return held;
}

function expectSqliteLocksHeld(node: NodeHandle): void {
  const ino = inodes(node);
  const held = lockedInodes(node.proc.pid);
  expect({ database: held.has(ino.db!), walIndex: held.has(ino.shm!) }).toEqual({ database: true, walIndex: true });
}

/** Writes the test made and the node acknowledged: id → sha256. */
class Acked {
  readonly blobs = new Map<string, string>();
  private n = 0;
  constructor(private readonly seed: number) {}
  async put(node: NodeHandle, count: number, size = 6000): Promise<void> {
    const batch = Array.from({ length: count }, () => {
      const k = this.n++;
      return { id: `b${this.seed}-${k}`, body: pseudoRandomBytes(this.seed * 100_000 + k, size + (k % 7) * 1000) };
    });
    await putAll(node.url, batch, 4);
    for (const b of batch) this.blobs.set(b.id, sha256(b.body));
  }
  /** Every acknowledged blob, byte for byte, from the node at `url`. */
  async missingOrWrong(url: string): Promise<string[]> {
    const bad: string[] = [];
    for (const [id, digest] of this.blobs) {
      const r = await fetch(`${url}/v1/blobs/${id}`);
      if (r.status !== 200 || sha256(await r.arrayBuffer()) !== digest) bad.push(`${id} (${r.status})`);
    }
    return bad;
  }
}

/** After the operator's commands: more writes, a checkpoint, kill -9, a restart; nothing acknowledged is lost. */
async function survivesAndKeepsEverything(node: NodeHandle, acked: Acked, before: Record<string, number>): Promise<void> {
  expect(node.proc.exitCode).toBeNull();
  expect(inodes(node)).toEqual(before);
  expectSqliteLocksHeld(node);
  await acked.put(node, 40);
  createCheckpoint(node);
  expectSqliteLocksHeld(node);
  await acked.put(node, 20);
  expect(node.proc.exitCode).toBeNull();
  await node.kill9();
  const again = await startNodeWithConfig(node.dir, node.configFile, node.url);
  try {
    expect(await acked.missingOrWrong(again.url)).toEqual([]);
    createCheckpoint(again);
  } finally {
    expect(await again.stop()).toBe(0);
  }
}

/** Start a node that pauses at `point` until the test creates the release file. */
async function nodePausingAt(dir: string, point: string, extraYaml = ""): Promise<{ node: NodeHandle; release: () => void }> {
  const releaseFile = join(dir, "release-pause");
  const node = await startNode(dir, {
    extraYaml,
    env: { CAIRN_TEST_PAUSE_POINT: point, CAIRN_TEST_PAUSE_RELEASE_FILE: releaseFile },
  });
  return { node, release: () => writeFileSync(releaseFile, "") };
}

const reached = (node: NodeHandle, point: string) => () => node.logs().includes(`cairn: test pause point ${point} reached`);

describe("the stock sqlite3 beside a live node", () => {
  test("after checkpoints: plain and -readonly queries, .backup and checks change nothing the node relies on", async () => {
    const dir = tmpDir();
    const node = await startNode(dir);
    const acked = new Acked(1);
    try {
      await acked.put(node, 60);
      createCheckpoint(node);
      await acked.put(node, 30);
      createCheckpoint(node);
      expectSqliteLocksHeld(node);
      const before = inodes(node);
      const printed = await runOperatorCommands(join(node.storage, "cairn.db"), dir);
      expect(printed.get("select")).toBe("90");
      expect(printed.get("select, -readonly")).toBe("90");
      await survivesAndKeepsEverything(node, acked, before);
    } finally {
      if (node.proc.exitCode === null) await node.kill9();
    }
  }, 60_000);

  test("while a checkpoint holds its snapshot: the checkpoint still succeeds and the node serves throughout", async () => {
    const dir = tmpDir();
    const { node, release } = await nodePausingAt(dir, "checkpoint:pinned");
    const acked = new Acked(2);
    try {
      await acked.put(node, 50);
      release(); // the first checkpoint goes through
      createCheckpoint(node);
      unlinkSync(join(dir, "release-pause"));
      const running = createCheckpointAsync(node);
      await waitFor(reached(node, "checkpoint:pinned"), { timeoutMs: 30_000, what: "the checkpoint to pin its snapshot" });
      const before = inodes(node);
      const writes = acked.put(node, 30);
      await runOperatorCommands(join(node.storage, "cairn.db"), dir);
      await writes;
      release();
      expect(await running).toBe(2);
      await survivesAndKeepsEverything(node, acked, before);
    } finally {
      release();
      if (node.proc.exitCode === null) await node.kill9();
    }
  }, 90_000);

  test("while garbage collection runs after retention", async () => {
    const dir = tmpDir();
    const { node, release } = await nodePausingAt(dir, "gc:collecting", "checkpoint_config:\n  max_db_checkpoints: 1\n");
    const acked = new Acked(3);
    try {
      release(); // the first collections go through
      await acked.put(node, 50);
      createCheckpoint(node);
      unlinkSync(join(dir, "release-pause"));
      await acked.put(node, 20);
      const done = createCheckpointAsync(node);
      await waitFor(reached(node, "gc:collecting"), { timeoutMs: 30_000, what: "garbage collection to start" });
      const before = inodes(node);
      const writes = acked.put(node, 20);
      await runOperatorCommands(join(node.storage, "cairn.db"), dir);
      await writes;
      release();
      expect(await done).toBe(2);
      await survivesAndKeepsEverything(node, acked, before);
    } finally {
      release();
      if (node.proc.exitCode === null) await node.kill9();
    }
  }, 90_000);

  test("again and again while writes make the node fold and truncate its WAL, and checkpoints run", async () => {
    const dir = tmpDir();
    // a small threshold: every few writes fold the WAL, and it is truncated often
    const node = await startNode(dir, { extraYaml: "wal_checkpoint_threshold_bytes: 65536\nwal_checkpoint_interval_secs: 0.05\n" });
    const acked = new Acked(4);
    try {
      await acked.put(node, 20);
      const before = inodes(node);
      const foldsAtStart = (await getJson(`${node.url}/v1/status`)).wal_checkpoints.runs as number;
      let writing = true;
      const writer = (async () => {
        while (writing) await acked.put(node, 8, 20_000);
      })();
      const checkpoints = (async () => {
        for (let i = 0; i < 3; i++) await createCheckpointAsync(node);
      })();
      for (let round = 0; round < 4; round++) await runOperatorCommands(join(node.storage, "cairn.db"), dir);
      await checkpoints;
      writing = false;
      await writer;
      const status = await getJson(`${node.url}/v1/status`);
      expect(status.wal_checkpoints.runs).toBeGreaterThan(foldsAtStart);
      expect(status.wal_checkpoints.failures).toBe(0);
      expect(status.checkpoints.failures).toBe(0);
      await survivesAndKeepsEverything(node, acked, before);
    } finally {
      if (node.proc.exitCode === null) await node.kill9();
    }
  }, 120_000);
});

describe("the node's files replaced under it: writes refused, nothing acknowledged lost", () => {
  for (const [label, damage] of [
    ["cairn.db-wal unlinked", (db: string) => unlinkSync(`${db}-wal`)],
    ["cairn.db-shm replaced by a copy", (db: string) => {
      copyFileSync(`${db}-shm`, `${db}-shm.copy`);
      renameSync(`${db}-shm.copy`, `${db}-shm`);
    }],
  ] as const) {
    test(`${label}: the next PUT is 503 naming the problem; reads, status and a clean shutdown work`, async () => {
      const dir = tmpDir();
      const node = await startNode(dir);
      const acked = new Acked(5);
      try {
        await acked.put(node, 30);
        createCheckpoint(node);
        const db = join(node.storage, "cairn.db");
        damage(db);
        const r = await fetch(`${node.url}/v1/blobs/after-damage`, { method: "PUT", body: "never acknowledged" });
        expect(r.status).toBe(503);
        const body = (await r.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe("E_DB_FILES_LOST");
        expect(body.error.message).toContain(label.startsWith("cairn.db-wal") ? "cairn.db-wal was deleted" : "cairn.db-shm was replaced");
        // still refused; reads go on
        expect((await fetch(`${node.url}/v1/blobs/again`, { method: "PUT", body: "x" })).status).toBe(503);
        expect((await fetch(`${node.url}/v1/blobs/x`, { method: "DELETE" })).status).toBe(503);
        expect(await acked.missingOrWrong(node.url)).toEqual([]);
        const status = await getJson(`${node.url}/v1/status`);
        expect(status.writes_refused).toContain("writes are refused");
        expect(await (await fetch(`${node.url}/metrics`)).text()).toContain("cairn_writes_refused 1");
        expect(node.logs()).toContain("writes are refused");
        expect(await node.stop()).toBe(0);
        const again = await startNodeWithConfig(dir, node.configFile, node.url);
        try {
          expect(await acked.missingOrWrong(again.url)).toEqual([]);
          expect((await fetch(`${again.url}/v1/blobs/after-damage`)).status).toBe(404);
        } finally {
          expect(await again.stop()).toBe(0);
        }
      } finally {
        if (node.proc.exitCode === null) await node.kill9();
      }
    }, 60_000);
  }
});

test("the hook's smoke test: 5 writes after an operator's sqlite3, kill -9, all 5 there", async () => {
  const dir = tmpDir();
  const node = await startNode(dir);
  try {
    await putAll(node.url, Array.from({ length: 5 }, (_, i) => ({ id: `e${i}`, body: new TextEncoder().encode(`early ${i}`) })));
    createCheckpoint(node);
    Bun.spawnSync(["sqlite3", join(node.storage, "cairn.db"), "select count(*) from blobs;"]);
    expect(existsSync(join(node.storage, "cairn.db-wal"))).toBe(true);
    await putAll(node.url, Array.from({ length: 5 }, (_, i) => ({ id: `l${i}`, body: new TextEncoder().encode(`late ${i}`) })));
    createCheckpoint(node);
    await node.kill9();
    const again = await startNodeWithConfig(dir, node.configFile, node.url);
    try {
      for (let i = 0; i < 5; i++) expect(await (await fetch(`${again.url}/v1/blobs/l${i}`)).text()).toBe(`late ${i}`);
    } finally {
      expect(await again.stop()).toBe(0);
    }
  } finally {
    if (node.proc.exitCode === null) await node.kill9();
  }
}, 60_000);
