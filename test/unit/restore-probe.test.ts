import { expect, test } from "bun:test";
import { copyFileSync, existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { dbPathIn, openNodeDatabase } from "../../src/engine/database.ts";
import { existingNodeId } from "../../src/restore/target.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

function snapshot(dir: string) {
  return readdirSync(dir)
    .sort()
    .map((n) => {
      const st = statSync(join(dir, n));
      return `${n}:${st.size}:${st.mtimeMs}`;
    });
}

test("the node id of a cleanly closed database is read without creating -wal or -shm", () => {
  const dir = tmpDir();
  const { db, nodeId } = openNodeDatabase(dir);
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  db.close();
  const before = snapshot(dir);
  expect(existsSync(`${dbPathIn(dir)}-wal`)).toBe(false);
  expect(existingNodeId(dbPathIn(dir))).toBe(nodeId);
  expect(snapshot(dir)).toEqual(before);
});

test("the node id of a crashed database, present only in its WAL, is read without touching the files", () => {
  const live = tmpDir();
  const { db, nodeId } = openNodeDatabase(live);
  // copy the files while the connection is open and nothing was checkpointed: like kill -9
  const dir = tmpDir();
  for (const f of ["cairn.db", "cairn.db-wal", "cairn.db-shm"]) copyFileSync(join(live, f), join(dir, f));
  db.close();
  const before = snapshot(dir);
  expect(existingNodeId(join(dir, "cairn.db"))).toBe(nodeId);
  expect(snapshot(dir)).toEqual(before);
});

test("a file that is not a database gives no node id", async () => {
  const dir = tmpDir();
  await Bun.write(join(dir, "cairn.db"), "not a database at all");
  expect(existingNodeId(join(dir, "cairn.db"))).toBeNull();
});
