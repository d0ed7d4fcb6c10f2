/**
 * Damaged or foreign input the other fault tests do not cover: a manifest or a store of a newer
 * format (with valid checksums), an empty (0-byte) manifest, an empty index and a pack truncated
 * to 0 bytes. Every command names the file, and restore leaves its target exactly as it was.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { indexPath, manifestPath, packPath, STORE_FILE } from "../../src/store/format.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { admin, createCheckpoint, listJson, putAll, verify } from "../helpers/checkpoint.ts";
import { checkDb, rewriteManifest, rewriteStoreInfo } from "../helpers/faults.ts";
import { type NodeHandle, pseudoRandomBytes, runCairn, startNode } from "../helpers/node.ts";
import { dirState, replacedDirsOf, restore, stagingDirOf, restoreTarget } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

let tpl = "";
let node: NodeHandle | undefined;
/** Checkpoint 2's own pack (checkpoint 1 does not need it) and checkpoint 1's pack. */
let pack1 = "";
let pack2 = "";

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-finput-");
  node = await startNode(tpl, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n  sync: false\n" });
  await putAll(node.url, Array.from({ length: 100 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) })));
  expect(createCheckpoint(node)).toBe(1);
  await putAll(node.url, Array.from({ length: 5 }, (_, i) => ({ id: `n${i}`, body: pseudoRandomBytes(900 + i, 20_000) })));
  expect(createCheckpoint(node)).toBe(2);
  const reader = new StoreReader(new DirBackend(join(tpl, "checkpoints")));
  const m1 = await reader.manifest(1);
  const m2 = await reader.manifest(2);
  expect(m1.packs).toHaveLength(1);
  pack1 = m1.packs[0]!;
  pack2 = m2.packs.find((p) => p !== pack1)!;
  expect(pack2).toBeDefined();
}, 30_000);

afterAll(async () => {
  if (node) await node.stop();
  if (tpl) rmSync(tpl, { recursive: true, force: true });
});

function copyStore(): string {
  const store = join(tmpDir(), "checkpoints");
  cpSync(join(tpl, "checkpoints"), store, { recursive: true });
  return store;
}

function target(): { dbPath: string; untouched: () => void } {
  return restoreTarget(join(tpl, "db"), tmpDir());
}

function expectFails(r: { code: number; stdout: string; stderr: string }, ...mentions: (string | RegExp)[]): void {
  expect({ code: r.code, stderr: r.stderr }).toMatchObject({ code: 1 });
  expect(r.stderr).toContain("error: ");
  for (const m of mentions) expect(r.stderr).toMatch(m);
}

const NEWER = /newer than this cairn understands/;

describe("a manifest of a newer format (valid checksum)", () => {
  test("list warns naming it and lists the rest; verify exits 1; restore of it exits 1 saying it is newer; the target is untouched", () => {
    const store = copyStore();
    const file = rewriteManifest(store, 2, { format: 2 });
    // the rewrite is valid apart from the format: the checksum matches
    const l = runCairn(["list-db-checkpoint", store, "--json"]);
    console.log(`list with a format-2 manifest: exit ${l.code}; stderr: ${l.stderr.trim()}`);
    expect(l.code).toBe(0);
    expect(JSON.parse(l.stdout).map((c: { id: number }) => c.id)).toEqual([1]);
    expect(l.stderr).toContain(file);
    expect(l.stderr).toMatch(NEWER);

    const v = verify(store);
    console.log(`verify with a format-2 manifest: exit ${v.code}; stdout: ${v.stdout.trim()}; stderr: ${v.stderr.trim()}`);
    expect(v.code).toBe(1);
    expect(`${v.stdout}${v.stderr}`).toContain(file);
    expect(`${v.stdout}${v.stderr}`).toMatch(NEWER);

    const t = target();
    const r = restore(store, t.dbPath, ["--checkpoint-id", "2", "--force"]);
    console.log(`restore --checkpoint-id 2 of a format-2 manifest: exit ${r.code}; stderr: ${r.stderr.trim()}`);
    expectFails(r, file, NEWER);
    t.untouched();

    // without --checkpoint-id: a newest checkpoint of a newer format needs a newer binary, not an
    // older checkpoint: restore stops (exit 1) naming it, and writes nothing
    const dbPath = join(tmpDir(), "fresh");
    const r2 = restore(store, dbPath);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(file);
    expect(r2.stderr).toMatch(NEWER);
    expect(r2.stderr).toContain("newer cairn binary");
    expect(existsSync(dbPath)).toBe(false);
  }, 30_000);
});

describe("a store of a newer format (cairn-store.json format 2)", () => {
  test("list, verify, restore and checkpoint create each exit 1 saying so; the target is untouched", () => {
    const store = copyStore();
    const file = rewriteStoreInfo(store, { format: 2 });
    const results: Record<string, { code: number; stdout: string; stderr: string }> = {
      list: runCairn(["list-db-checkpoint", store]),
      "list --json": runCairn(["list-db-checkpoint", store, "--json"]),
      verify: verify(store),
      "verify --checkpoint-id 1": verify(store, 1),
      "restore --dry-run": restore(store, join(tmpDir(), "dry"), ["--dry-run"]),
    };
    const t = target();
    results["restore --force"] = restore(store, t.dbPath, ["--force"]);
    t.untouched();
    results["checkpoint create --path"] = admin(node!, ["checkpoint", "create", "--path", store]);
    for (const [what, r] of Object.entries(results)) {
      console.log(`${what} on a format-2 store: exit ${r.code}; stderr: ${r.stderr.trim()}`);
      expect({ what, code: r.code }).toEqual({ what, code: 1 });
      expect(r.stderr).toContain("error: ");
      expect(r.stderr).toMatch(NEWER);
      expect(r.stderr).toContain(STORE_FILE);
    }
    // and nothing was added to the store
    expect(new Set(Object.keys(dirState(store)).filter((k) => k.startsWith("manifests/")))).toEqual(
      new Set(["manifests/", manifestPath(1), manifestPath(2)]),
    );
  }, 30_000);
});

describe("empty and truncated files", () => {
  test("a 0-byte manifest: list warns naming it, verify exits 1 naming it, restore of it exits 1 naming it; latest falls back to 1", () => {
    const store = copyStore();
    const file = join(store, manifestPath(2));
    writeFileSync(file, "");
    const l = runCairn(["list-db-checkpoint", store, "--json"]);
    console.log(`list with an empty manifest: exit ${l.code}; stderr: ${l.stderr.trim()}`);
    expect(l.code).toBe(0);
    expect(JSON.parse(l.stdout).map((c: { id: number }) => c.id)).toEqual([1]);
    expect(l.stderr).toContain(file);

    const v = verify(store);
    console.log(`verify with an empty manifest: exit ${v.code}; stdout: ${v.stdout.trim()}; stderr: ${v.stderr.trim()}`);
    expect(v.code).toBe(1);
    expect(`${v.stdout}${v.stderr}`).toContain(file);

    const t = target();
    expectFails(restore(store, t.dbPath, ["--checkpoint-id", "2", "--force"]), file);
    t.untouched();
    // the newest is unreadable: restore takes checkpoint 1, warning about 2
    const dbPath = join(tmpDir(), "fresh");
    const r = restore(store, dbPath);
    console.log(`restore (latest) with an empty newest manifest: exit ${r.code}; stdout: ${r.stdout.trim()}; stderr: ${r.stderr.trim()}`);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("Restored from latest (1) successfully.\n");
    expect(r.stderr).toContain(file);
    expect(checkDb(join(dbPath, "cairn.db"))).toEqual({ integrity: "ok", count: 100 });
  }, 30_000);

  test("a 0-byte pack index: verify names it, restore of a checkpoint needing it exits 1 naming it; the target is untouched", () => {
    const store = copyStore();
    const file = join(store, indexPath(pack1));
    writeFileSync(file, "");
    const v = verify(store);
    console.log(`verify with an empty index: exit ${v.code}; stdout: ${v.stdout.trim()}`);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("Checkpoint 1: DAMAGED");
    expect(v.stdout).toContain("Checkpoint 2: DAMAGED");
    expect(v.stdout).toContain(file);
    const t = target();
    const r = restore(store, t.dbPath, ["--checkpoint-id", "1", "--force"]);
    console.log(`restore with an empty index: exit ${r.code}; stderr: ${r.stderr.trim()}`);
    expectFails(r, file);
    t.untouched();
    const r2 = restore(store, t.dbPath, ["--force"]);
    expectFails(r2, file);
    t.untouched();
  }, 30_000);

  test("a pack truncated to 0 bytes: verify names it, restore of the checkpoint needing it exits 1 naming it; the target is untouched", () => {
    const store = copyStore();
    const file = join(store, packPath(pack2));
    truncateSync(file, 0);
    const v = verify(store);
    console.log(`verify with an empty pack: exit ${v.code}; stdout: ${v.stdout.trim()}`);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("Checkpoint 1: OK");
    expect(v.stdout).toContain("Checkpoint 2: DAMAGED");
    expect(v.stdout).toContain(file);
    const t = target();
    const r = restore(store, t.dbPath, ["--checkpoint-id", "2", "--force"]);
    console.log(`restore with an empty pack: exit ${r.code}; stderr: ${r.stderr.trim()}`);
    expectFails(r, file);
    t.untouched();
    // listing still shows both (it reads manifests only)
    expect(listJson(store).map((c) => c.id)).toEqual([1, 2]);
  }, 30_000);
});
