/**
 * Checkpoints and faults: kill -9 of the node at every crash point of taking a checkpoint and
 * of the garbage collection after it, and damaged stores found by verify-db-checkpoint.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { indexPath, manifestPath, packPath, SEGMENT_ENTRY_BYTES } from "../../src/store/format.ts";
import { readIndexEntry } from "../../src/store/pack.ts";
import { toHex } from "../../src/store/hash.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { writeManifestFile } from "../../src/store/dir/writer.ts";
import { segmentPacksFound } from "../helpers/store-fixture.ts";
import { admin, auditDb, createCheckpoint, flipByte, leftovers, listJson, materialize, putAll, verify } from "../helpers/checkpoint.ts";
import { pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const BLOBS = 120;
const SIZE = 20_000;
/** Blob i as first written, and as rewritten before the crashing checkpoint (first 80%). */
const original = (i: number) => pseudoRandomBytes(i + 1, SIZE);
const rewritten = (i: number) => pseudoRandomBytes(50_000 + i, SIZE);
const REWRITTEN = Math.floor(BLOBS * 0.8);
const xVersion = (v: number) => pseudoRandomBytes(90_000 + v, SIZE);

/** What each checkpoint of the scenario holds: id → sha256. */
function stateAt(step: 2 | 3): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < BLOBS; i++) m.set(`b${i}`, sha256(step === 3 && i < REWRITTEN ? rewritten(i) : original(i)));
  m.set("x", sha256(xVersion(step)));
  return m;
}

describe("kill -9 at every crash point", () => {
  // A template, prepared once: checkpoint 1, blob x rewritten, checkpoint 2 (retention keeps
  // one, so 1 is gone). Each crash point starts from a copy of it.
  let template = "";
  const yaml = "checkpoint_config:\n  max_db_checkpoints: 1\n  max_background_operations: 2\n  compression: zstd\n";

  beforeAll(async () => {
    template = mkdtempSync("/tmp/cairn-tpl-");
    const node = await startNode(template, { extraYaml: yaml });
    try {
      await putAll(node.url, [
        ...Array.from({ length: BLOBS }, (_, i) => ({ id: `b${i}`, body: original(i) })),
        { id: "x", body: xVersion(1) },
      ]);
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, [{ id: "x", body: xVersion(2) }]);
      expect(createCheckpoint(node)).toBe(2);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    expect(listJson(join(template, "checkpoints")).map((l) => l.id)).toEqual([2]);
  }, 30_000);

  afterAll(() => {
    if (template) rmSync(template, { recursive: true, force: true });
  });

  /**
   * The checkpoints listed after the crash (retention runs only once a checkpoint exists), and
   * whether the crash leaves files no checkpoint needs (in tmp/, or unreferenced packs).
   */
  const cases: [string, number[], boolean][] = [
    ["checkpoint:snapshot-pinned", [2], false],
    ["checkpoint:blocks-read", [2], true],
    ["checkpoint:pack-written", [2], true],
    ["checkpoint:index-written", [2], true],
    ["checkpoint:packs-written", [2], true],
    ["checkpoint:packs-published", [2], true],
    ["checkpoint:before-manifest", [2], true],
    ["checkpoint:after-manifest", [2, 3], false],
    ["gc:removed-pack", [3], false],
    ["gc:pack-rewritten", [3], true],
    ["gc:manifest-rewritten", [3], true],
  ];

  for (const [point, expectListed, leavesFiles] of cases) {
    test(`${point}: only complete checkpoints are listed, they verify and restore, and the node carries on`, async () => {
      const dir = tmpDir();
      cpSync(template, dir, { recursive: true });
      const store = join(dir, "checkpoints");
      const node = await startNode(dir, { extraYaml: yaml, env: { CAIRN_TEST_CRASH_POINT: point } });
      let r: ReturnType<typeof admin>;
      let died = false;
      try {
        await putAll(node.url, [
          ...Array.from({ length: REWRITTEN }, (_, i) => ({ id: `b${i}`, body: rewritten(i) })),
          { id: "x", body: xVersion(3) },
        ]);
        r = admin(node, ["checkpoint", "create"]);
        died = await Promise.race([node.proc.exited.then(() => true), Bun.sleep(10_000).then(() => false)]);
      } finally {
        if (!died) await node.kill9();
      }
      expect({ point, died, signal: node.proc.signalCode }).toEqual({ point, died: true, signal: "SIGKILL" });
      // the node died under the command: it must not claim success
      expect(r.code).toBe(1);
      // the crash came at a point that matters: it left half-made files behind (or not)
      expect((await leftovers(store)).length > 0).toBe(leavesFiles);

      // only complete checkpoints, numbered on from the retained one
      const listed = listJson(store);
      expect(listed.map((l) => l.id)).toEqual(expectListed);
      const v = verify(store);
      expect(v.code).toBe(0);
      for (const id of expectListed) expect(v.stdout).toContain(`Checkpoint ${id}: OK`);
      for (const id of expectListed) {
        const file = join(dir, `after-crash-${id}.db`);
        await materialize(store, id, file);
        const a = auditDb(file);
        expect(a.integrity).toBe("ok");
        expect(a.blobs).toEqual(stateAt(id as 2 | 3));
        expect(a.totals).toEqual({ blob_count: a.count, blob_bytes: a.bytes });
      }

      // restarted without the crash point, the next checkpoint succeeds and is numbered on
      const again = await startNode(dir, { extraYaml: yaml });
      try {
        const next = createCheckpoint(again);
        expect(next).toBe(expectListed.at(-1)! + 1);
        expect(listJson(store).map((l) => l.id)).toEqual([next]);
        const v2 = verify(store);
        expect(v2.code).toBe(0);
        const file = join(dir, `next-${next}.db`);
        await materialize(store, next, file);
        const a = auditDb(file);
        expect(a.integrity).toBe("ok");
        expect(a.blobs).toEqual(stateAt(3));
        // what the crash left behind is gone by now
        expect(await leftovers(store)).toEqual([]);
      } finally {
        expect(await again.stop()).toBe(0);
      }
      expect(again.logs()).not.toContain("ERROR");
    }, 60_000);
  }
});

describe("verify-db-checkpoint finds damage", () => {
  // Two checkpoints: 1 in pack A; 2 needs A and a small pack B of its own.
  let template = "";
  let packA = "";
  let packB = "";
  /** Digests each checkpoint needs (segments and blocks), read before any damage. */
  const needs = new Map<number, Set<string>>();

  beforeAll(async () => {
    template = mkdtempSync("/tmp/cairn-tpl-");
    const node = await startNode(template, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n" });
    try {
      await putAll(node.url, Array.from({ length: 150 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) })));
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, Array.from({ length: 5 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(7000 + i, 20_000) })));
      expect(createCheckpoint(node)).toBe(2);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    const reader = new StoreReader(new DirBackend(join(template, "checkpoints")));
    const m1 = await reader.manifest(1);
    const m2 = await reader.manifest(2);
    expect(m1.packs).toHaveLength(1);
    packA = m1.packs[0]!;
    expect(m2.packs).toContain(packA);
    expect(m2.packs).toHaveLength(2);
    packB = m2.packs.find((p) => p !== packA)!;
    for (const m of [m1, m2]) {
      const set = new Set(m.segments);
      const list = await reader.blockList(m);
      for (let b = 0; b < m.block_count; b++) set.add(toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)));
      needs.set(m.id, set);
    }
    expect(verify(join(template, "checkpoints")).code).toBe(0);
  }, 30_000);

  afterAll(() => {
    if (template) rmSync(template, { recursive: true, force: true });
  });

  function copyStore(): string {
    const store = join(tmpDir(), "checkpoints");
    cpSync(join(template, "checkpoints"), store, { recursive: true });
    return store;
  }

  /** Which checkpoints need the block of `packId` that holds byte `offset`. */
  async function needingBlockAt(store: string, packId: string, offset: number): Promise<number[]> {
    const idx = await new StoreReader(new DirBackend(store)).index(packId);
    for (let i = 0; i < idx.count; i++) {
      const e = readIndexEntry(idx, i);
      if (offset >= e.offset && offset < e.offset + e.storedLength) {
        const hex = toHex(e.digest);
        return [...needs].filter(([, set]) => set.has(hex)).map(([id]) => id);
      }
    }
    throw new Error(`offset ${offset} of ${packId} is in no block`);
  }

  function expectVerdicts(r: { code: number; stdout: string; stderr: string }, damaged: number[], mention: string): void {
    expect(r.code).toBe(1);
    for (const id of [1, 2]) {
      if (damaged.includes(id)) {
        expect(r.stdout).toContain(`Checkpoint ${id}: DAMAGED\n`);
        // the problem lines under it name the damaged file
        const section = r.stdout.slice(r.stdout.indexOf(`Checkpoint ${id}: DAMAGED`)).split(/\nCheckpoint /)[0]!;
        expect(section).toContain(mention);
      } else {
        expect(r.stdout).toContain(`Checkpoint ${id}: OK`);
      }
    }
    expect(r.stderr).toStartWith("error: ");
    expect(r.stderr).toContain(`${damaged.length} of 2 checkpoint(s) damaged: ${damaged.join(", ")}`);
  }

  test("a flipped byte in the middle of a pack: exit 1 naming the checkpoints that need it and the pack", async () => {
    const store = copyStore();
    // pack A, needed by both checkpoints
    const a = join(store, packPath(packA));
    const offA = flipByte(a);
    const needA = await needingBlockAt(store, packA, offA);
    expect(needA.length).toBeGreaterThan(0);
    expectVerdicts(verify(store), needA, a);
    flipByte(a, offA);
    expect(verify(store).code).toBe(0);
    // pack B, which only checkpoint 2 needs
    const b = join(store, packPath(packB));
    const offB = flipByte(b);
    const needB = await needingBlockAt(store, packB, offB);
    expect(needB).toEqual([2]);
    expectVerdicts(verify(store), [2], b);
    // asked about checkpoint 1 alone, verify is content
    expect(verify(store, 1).code).toBe(0);
    expect(verify(store, 2).code).toBe(1);
  }, 30_000);

  test("a flipped byte in a pack index: every checkpoint using the pack is damaged, the .idx is named", async () => {
    const store = copyStore();
    const idx = join(store, indexPath(packA));
    flipByte(idx);
    expectVerdicts(verify(store), [1, 2], idx);
    const store2 = copyStore();
    const idxB = join(store2, indexPath(packB));
    flipByte(idxB);
    expectVerdicts(verify(store2), [2], idxB);
  }, 30_000);

  test("a flipped byte in a manifest: that checkpoint is damaged, the manifest is named", async () => {
    const store = copyStore();
    const m2 = join(store, manifestPath(2));
    flipByte(m2);
    expectVerdicts(verify(store), [2], m2);
    const m1 = join(store, manifestPath(1));
    flipByte(m2);
    flipByte(m1, 40);
    expectVerdicts(verify(store), [1], m1);
  }, 30_000);

  test("the node's segment pack hints are exact; hints that are wrong or missing cost time, never a verdict", async () => {
    const reader = new StoreReader(new DirBackend(join(template, "checkpoints")));
    for (const id of [1, 2]) {
      const m = await reader.manifest(id);
      expect(m.segment_packs).toEqual(await segmentPacksFound(reader, m));
    }
    const rewrite = async (store: string, hints: (m: { packs: string[]; segments: string[] }) => number[][] | undefined) => {
      const { checksum: _, ...m2 } = await new StoreReader(new DirBackend(store)).manifest(2);
      writeManifestFile(store, { ...m2, segment_packs: hints(m2) });
    };
    const onlyB = (m: { packs: string[]; segments: string[] }) => m.segments.map(() => [m.packs.indexOf(packB)]);
    for (const hints of [onlyB, (m: { segments: string[] }) => m.segments.map(() => []), () => undefined]) {
      const store = copyStore();
      await rewrite(store, hints);
      expect(verify(store).code).toBe(0);
    }
    // a wrong hint does not hide damage in the pack it leaves out
    const store = copyStore();
    await rewrite(store, onlyB);
    const a = join(store, packPath(packA));
    const off = flipByte(a);
    expectVerdicts(verify(store), await needingBlockAt(store, packA, off), a);
  }, 30_000);

  test("a deleted pack file: the checkpoints needing it are damaged, the pack is named", async () => {
    const store = copyStore();
    const b = join(store, packPath(packB));
    renameSync(b, `${b}.away`);
    expectVerdicts(verify(store), [2], b);
    renameSync(`${b}.away`, b);
    expect(verify(store).code).toBe(0);
    const a = join(store, packPath(packA));
    rmSync(a);
    expectVerdicts(verify(store), [1, 2], a);
    expect(readdirSync(join(store, "manifests"))).toHaveLength(2);
  }, 30_000);
});
