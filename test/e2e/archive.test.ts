/**
 * Checkpoint archives as an operator uses them, against the compiled binary: `export-db-checkpoint`
 * to .tar, .tar.gz and .tar.zst (GNU tar lists them in the documented layout; re-exports are
 * byte-identical), list / verify / restore reading the archive file itself, the folder GNU tar
 * extracts being a checkpoint directory like any other, truncated and damaged archives (verify
 * names the damage; restore fails and touches nothing), usage errors, a store with zstd
 * compression, and kill -9 of a restore from an archive part-way (the same command then
 * finishes, byte-identical).
 *
 * One node, three checkpoints: 1; 2 after rewrites, deletes and new blobs (~85 MB, so that its
 * archive holds two packs); 3 after more changes and ~70 MB more (~160 MB, for the restore
 * interruptions: progress is first made durable after 128 MiB).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { type Manifest, seedDigest } from "../../src/store/format.ts";
import { BLOCK_KIND_DATA, decodeIndex, entryKind, FLAG_ZSTD, readIndexEntry } from "../../src/store/pack.ts";
import { toHex } from "../../src/store/hash.ts";
import {
  type ArchiveExt,
  gnuTarCat,
  gnuTarExtract,
  gnuTarList,
  gnuTarListVerbose,
  readTarEntries,
  readTarEntryData,
  runCairnBounded,
  runCairnEnv,
  writePrefix,
} from "../helpers/archive.ts";
import { createCheckpoint, decimalSize, deleteAll, filesUnder, flipByte, type Listed, listJson, putAll, verify } from "../helpers/checkpoint.ts";
import { sameBytes, targetFiles } from "../helpers/faults.ts";
import { getJson, pseudoRandomBytes, runCairn, sha256, sqlite3, startNode } from "../helpers/node.ts";
import {
  allocatedBytes,
  dbFilesState,
  readProgress,
  replacedDirsOf,
  restore,
  restoreArgs,
  serveMismatches,
  signalWhen,
  spawnRestore,
  stagingDirOf,
} from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();

// ---- the data ---------------------------------------------------------------------------------

const MiB = 1024 * 1024;
const A = 3000;
/** Sizes around page and block boundaries first, then varied, every 97th a few hundred KB. */
const EDGE_SIZES = [1, 2, 100, 4095, 4096, 4097, 8191, 8192, 8193, 65_536, 100_000, 250_000];
const aSize = (i: number) => (i < EDGE_SIZES.length ? EDGE_SIZES[i]! : i % 97 === 0 ? 200_000 + ((i * 131) % 200_000) : 50 + ((i * 7919) % 20_000));

/** One blob body: every third one (or all but every fourth) text-like and compressible, the others random; `v` is its version. */
function body(kind: string, i: number, v: number, size: number, mostlyText = false): Uint8Array {
  const seed = (kind.charCodeAt(0) * 7_000_003 + v * 1_000_003 + i + 1) >>> 0;
  if (mostlyText ? i % 4 !== 0 : i % 3 === 0) return new Uint8Array(Buffer.alloc(size, `${kind}${i} v${v}: the quick brown fox ${seed % 977} jumps over the lazy dog. `));
  return pseudoRandomBytes(seed, size);
}

type Blob = { id: string; body: Uint8Array };
/** What the live database holds: id → sha256. */
const live = new Map<string, string>();

async function put(url: string, blobs: Blob[], concurrency = 8): Promise<void> {
  await putAll(url, blobs, concurrency);
  for (const b of blobs) live.set(b.id, sha256(b.body));
}

async function del(url: string, ids: string[]): Promise<void> {
  await deleteAll(url, ids);
  for (const id of ids) live.delete(id);
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, k) => from + k);

// ---- the fixture --------------------------------------------------------------------------------

let tpl = ""; // tpl/db: the node's database (stopped cleanly); tpl/checkpoints: its store
let store = "";
/** Checkpoint 2 exported while the node ran (.tar and .tar.zst). */
let liveTar = "";
let liveZst = "";
/** An uninterrupted restore of checkpoint 2 from the store directory: the yardstick. */
let ref2 = "";
let nodeId = "";
let m2: Manifest;
let listed2: Listed;
/** The directory listing's line for checkpoint 2. */
let dirLine2 = "";
/** Every blob acknowledged before checkpoint 2 (id → sha256), and ids it must not hold. */
let expected2 = new Map<string, string>();
let absent2: string[] = [];
let expected3 = new Map<string, string>();

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-arch-");
  store = join(tpl, "checkpoints");
  const node = await startNode(tpl, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n  max_background_operations: 2\n  sync: false\n" });
  try {
    nodeId = (await getJson(`${node.url}/v1/status`)).node_id;
    // checkpoint 1: a0..a2999 of varied sizes, big0..big13 of 3 MB
    await put(node.url, range(A).map((i) => ({ id: `a${i}`, body: body("a", i, 1, aSize(i)) })));
    await put(node.url, range(14).map((i) => ({ id: `big${i}`, body: body("b", i, 1, 3_000_000) })), 4);
    expect(createCheckpoint(node)).toBe(1);

    // checkpoint 2: a0..a199 rewritten (other sizes), a200..a349 deleted, n0..n399 added
    await put(node.url, range(200).map((i) => ({ id: `a${i}`, body: body("a", i, 2, aSize(i + 1000)) })));
    await del(node.url, range(150, 200).map((i) => `a${i}`));
    await put(node.url, range(400).map((i) => ({ id: `n${i}`, body: body("n", i, 1, 100 + ((i * 4111) % 30_000)) })));
    expect(createCheckpoint(node)).toBe(2);
    expected2 = new Map(live);

    // after checkpoint 2: a400..a449 rewritten, a450..a479 deleted, a200..a209 back, z0..z99 new,
    // huge0..huge23 (3 MB each) new; checkpoint 3
    await put(node.url, range(50, 400).map((i) => ({ id: `a${i}`, body: body("a", i, 3, aSize(i + 2000)) })));
    await del(node.url, range(30, 450).map((i) => `a${i}`));
    await put(node.url, [
      ...range(10, 200).map((i) => ({ id: `a${i}`, body: body("a", i, 3, 5000 + i) })),
      ...range(100).map((i) => ({ id: `z${i}`, body: body("z", i, 1, 1000 + i * 37) })),
    ]);
    await put(node.url, range(24).map((i) => ({ id: `huge${i}`, body: body("h", i, 1, 3_000_000) })), 4);
    expect(createCheckpoint(node)).toBe(3);
    expected3 = new Map(live);
    absent2 = [...range(150, 200).map((i) => `a${i}`), ...range(100).map((i) => `z${i}`), ...range(24).map((i) => `huge${i}`)];
    for (const id of absent2) expect(expected2.has(id)).toBe(false);
    // the test data really differs between 2 and 3
    expect([...expected2].filter(([id, sha]) => expected3.get(id) !== sha).length).toBe(50 + 30);

    // while the node runs: list the store, export checkpoint 2, list and verify the archives
    const listing = listJson(store);
    expect(listing.map((l) => l.id)).toEqual([1, 2, 3]);
    listed2 = listing[1]!;
    const exports = join(tpl, "exports");
    mkdirSync(exports);
    liveTar = join(exports, "cp2.tar");
    liveZst = join(exports, "cp2.tar.zst");
    const e1 = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", liveTar]);
    expect({ code: e1.code, stderr: e1.code === 0 ? "" : e1.stderr }).toEqual({ code: 0, stderr: "" });
    const e2 = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", liveZst, "--json"]);
    expect(e2.code).toBe(0);
    expect(JSON.parse(e2.stdout)).toMatchObject({
      checkpoint_id: 2,
      output: liveZst,
      compression: "zstd",
      archive_bytes: statSync(liveZst).size,
      size_bytes: listed2.size_bytes,
    });
    expect(readdirSync(exports).sort()).toEqual(["cp2.tar", "cp2.tar.zst"]);
    for (const a of [liveTar, liveZst]) {
      expect(listJson(a).map((l) => [l.id, l.size_bytes])).toEqual([[2, listed2.size_bytes]]);
      const v = verify(a);
      expect({ a, code: v.code }).toEqual({ a, code: 0 });
      expect(v.stdout).toMatch(new RegExp(`^Checkpoint 2: OK \\(\\d+ blocks, ${decimalSize(listed2.size_bytes)}\\)\\n$`));
    }
    // the writes after checkpoint 3 go on meanwhile, and do not matter
    await put(node.url, [{ id: "after3", body: body("q", 1, 1, 12_345) }]);
  } finally {
    expect(await node.stop()).toBe(0);
  }
  live.clear();

  m2 = JSON.parse(readFileSync(join(store, "manifests", "0000000002.json"), "utf8")) as Manifest;
  expect(m2.db_size_bytes).toBe(listed2.size_bytes);
  // two packs in an archive of checkpoint 2 (32 segments of 256 blocks per pack)
  expect(m2.segments.length).toBeGreaterThan(32);
  const l = runCairn(["list-db-checkpoint", store]);
  expect(l.code).toBe(0);
  dirLine2 = l.stdout.split("\n").find((x) => x.startsWith("  Backup ID: 2,"))!;
  expect(dirLine2).toBeDefined();

  ref2 = join(tpl, "ref2", "db");
  const r = restore(store, ref2, ["--checkpoint-id", "2"]);
  expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: "Restored from 2 successfully.\n" });
  ref2 = join(ref2, "cairn.db");
  expect(statSync(ref2).size).toBe(listed2.size_bytes);
}, 240_000);

afterAll(() => {
  if (tpl) rmSync(tpl, { recursive: true, force: true });
});

// ---- helpers --------------------------------------------------------------------------------------

const ROOT = "cairn-checkpoint-2";

/** The entry names an archive of a checkpoint whose (archive) manifest lists `packs` must hold. */
function expectedNames(id: number, packs: string[]): string[] {
  const root = `cairn-checkpoint-${id}`;
  return [
    `${root}/cairn-store.json`,
    `${root}/manifests/${String(id).padStart(10, "0")}.json`,
    ...packs.flatMap((p) => [`${root}/packs/${p.slice(0, 2)}/${p}.idx`, `${root}/packs/${p.slice(0, 2)}/${p}.pack`]),
  ];
}

/** The manifest inside an archive, read by GNU tar. */
function archivedManifest(file: string, ext: ArchiveExt, id = 2): Manifest {
  return JSON.parse(new TextDecoder().decode(gnuTarCat(file, ext, `cairn-checkpoint-${id}/manifests/${String(id).padStart(10, "0")}.json`))) as Manifest;
}

/** The contract line for checkpoint 2 as listed from an archive holding `packs` packs. */
function archiveLine2(packs: number): string {
  return `  Backup ID: 2, Size: ${decimalSize(listed2.size_bytes)}, Files: ${2 * packs + 1}, Created: ${new Date(listed2.created).toISOString().slice(0, 19)}Z`;
}

/** A copy of the node's own (stopped) database at <fresh folder>/db; returns the db path. */
function existingDb(): string {
  const dbPath = join(tmpDir(), "db");
  cpSync(join(tpl, "db"), dbPath, { recursive: true });
  expect(readdirSync(dbPath)).toContain("cairn.db");
  return dbPath;
}

/** Files of a restore target other than the storage lock. */
const dbDirFiles = (dbPath: string) => readdirSync(dbPath).filter((f) => f !== "cairn.lock").sort();

/** `restore` failed on damage: exit 1, one error line naming it, no "Restored". */
function expectFailed(r: { code: number; stdout: string; stderr: string }, ...mentions: string[]): void {
  expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 1, stdout: "" });
  // (progress lines may come first; the failure is the last line, and there is no stack trace)
  expect(r.stderr.trimEnd().split("\n").at(-1)).toStartWith("error: ");
  expect(r.stderr).not.toMatch(/\n\s+at /);
  for (const m of mentions) expect(r.stderr).toContain(m);
}

/**
 * Restore `archive` into an empty folder and over a copy of the node's database (--force):
 * both fail naming `mentions`, the empty folder stays empty and the existing database is
 * byte-identical, nothing moved aside, no staging folder left.
 */
function expectRestoreTouchesNothing(archive: string, existing: string, ...mentions: string[]): void {
  const empty = join(tmpDir(), "db");
  mkdirSync(empty);
  const r1 = restore(archive, empty);
  expectFailed(r1, ...mentions);
  expect(targetFiles(empty)).toEqual([]);
  expect(existsSync(stagingDirOf(empty))).toBe(false);
  expect(readdirSync(dirname(empty))).toEqual(["db"]);

  const before = dbFilesState(existing);
  const parentBefore = readdirSync(dirname(existing)).sort();
  const r2 = restore(archive, existing, ["--force", "--checkpoint-id", "2"]);
  expectFailed(r2, ...mentions);
  expect(dbFilesState(existing)).toEqual(before);
  expect(sameBytes(join(existing, "cairn.db"), join(tpl, "db", "cairn.db"))).toBe(true);
  expect(replacedDirsOf(existing)).toEqual([]);
  expect(existsSync(stagingDirOf(existing))).toBe(false);
  expect(readdirSync(dirname(existing)).sort()).toEqual(parentBefore);
}

// ---- the tests ------------------------------------------------------------------------------------

const FORMATS = [
  { ext: "tar" as const, label: "uncompressed", magic: null, decompress: "cat" },
  { ext: "tar.gz" as const, label: "gzip", magic: [0x1f, 0x8b], decompress: "gzip -dc" },
  { ext: "tar.zst" as const, label: "zstd", magic: [0x28, 0xb5, 0x2f, 0xfd], decompress: "zstd -dc" },
];

describe("export, then list / verify / restore from the archive", () => {
  for (const f of FORMATS) {
    test(`.${f.ext}: written atomically in the documented layout; list, verify and restore read it; the restored database passes integrity_check and a node on it serves checkpoint 2's blobs`, async () => {
      // export
      const outDir = tmpDir();
      const out = join(outDir, `cp2.${f.ext}`);
      const e = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", out], { timeoutMs: 120_000 });
      expect({ code: e.code, stderr: e.code === 0 ? "" : e.stderr }).toEqual({ code: 0, stderr: "" });
      const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      expect(e.stdout).toMatch(
        new RegExp(`^Exported checkpoint 2 \\(${esc(decimalSize(m2.db_size_bytes))}\\) to ${esc(out)}: \\d+\\.\\d [KMG]?B, ${f.label}, in \\d+\\.\\d s\\n$`),
      );
      // the file alone: no temp file left beside it
      expect(readdirSync(outDir)).toEqual([`cp2.${f.ext}`]);
      const head = readFileSync(out).subarray(0, 512);
      if (f.magic) expect([...head.subarray(0, f.magic.length)]).toEqual(f.magic);
      else expect(new TextDecoder().decode(head.subarray(257, 262))).toBe("ustar");
      // compressed or not, it holds the same tar stream as the one exported while the node ran
      const same = Bun.spawnSync(["bash", "-c", `${f.decompress} '${out}' | cmp - '${liveTar}'`], { stdout: "pipe", stderr: "pipe" });
      expect({ code: same.exitCode, out: same.stdout.toString() + same.stderr.toString() }).toEqual({ code: 0, out: "" });

      // GNU tar: exactly the documented entries, in order, all regular files
      const am = archivedManifest(out, f.ext);
      expect(am.packs.length).toBe(Math.ceil(m2.segments.length / 32));
      expect(am.packs.length).toBeGreaterThanOrEqual(2);
      for (const p of am.packs) expect(p).toMatch(/^[0-9a-f]{32}$/);
      expect(new Set(am.packs).size).toBe(am.packs.length);
      // the same manifest but for its packs (the archive's own) and the store's segment pack hints
      expect(m2.segment_packs).toHaveLength(m2.segments.length);
      expect(am.segment_packs).toBeUndefined();
      const { packs: _p, checksum: _c, ...amRest } = am;
      const { packs: _sp, checksum: _sc, segment_packs: _h, ...m2Rest } = m2;
      expect(amRest).toEqual(m2Rest);
      const names = gnuTarList(out, f.ext);
      expect(names).toEqual(expectedNames(2, am.packs));
      // owner-only, as everything cairn creates
      for (const line of gnuTarListVerbose(out, f.ext)) expect(line).toStartWith("-rw------- ");
      const storeInfo = JSON.parse(new TextDecoder().decode(gnuTarCat(out, f.ext, `${ROOT}/cairn-store.json`)));
      // the store's own info, but the quick-hash seed never leaves the host: only its digest
      const { quick_hash_seed: seed, ...localInfo } = JSON.parse(readFileSync(join(store, "cairn-store.json"), "utf8"));
      expect(storeInfo).toEqual({ ...localInfo, quick_hash_seed_digest: seedDigest(seed) });
      // (compressed or not, the archive holds the same tar stream as liveTar: checked above)
      expect(readFileSync(liveTar).includes(Buffer.from(seed))).toBe(false);

      // list: the contract line; the same size and time as the directory's listing
      const l = runCairn(["list-db-checkpoint", out]);
      expect({ code: l.code, stdout: l.stdout, stderr: l.stderr }).toEqual({
        code: 0,
        stdout: `Available checkpoints in ${out}:\n${archiveLine2(am.packs.length)}\n`,
        stderr: "",
      });
      expect(archiveLine2(am.packs.length).replace(/Files: \d+/, "")).toBe(dirLine2.replace(/Files: \d+/, ""));
      const j = listJson(out);
      expect(j).toHaveLength(1);
      expect(j[0]).toMatchObject({
        id: 2,
        size_bytes: listed2.size_bytes,
        files: names.length - 1,
        created: listed2.created,
        node_id: nodeId,
        blob_count: expected2.size,
      });

      // verify
      const v = verify(out);
      expect({ code: v.code, stdout: v.stdout, stderr: v.stderr }).toEqual({
        code: 0,
        stdout: `Checkpoint 2: OK (${m2.block_count} blocks, ${decimalSize(m2.db_size_bytes)})\n`,
        stderr: "",
      });

      // restore into an empty folder (by latest, and by id for .tar.gz)
      const dir = tmpDir();
      const dbPath = join(dir, "db");
      mkdirSync(dbPath);
      const byId = f.ext === "tar.gz";
      const r = restore(out, dbPath, byId ? ["--checkpoint-id", "2"] : []);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: byId ? "Restored from 2 successfully.\n" : "Restored from latest (2) successfully.\n" });
      expect(dbDirFiles(dbPath)).toEqual(["cairn.db"]);
      expect(existsSync(stagingDirOf(dbPath))).toBe(false);
      expect(readdirSync(dir)).toEqual(["db"]);
      const db = join(dbPath, "cairn.db");
      // byte for byte what a restore from the checkpoint directory gives
      expect(sameBytes(db, ref2)).toBe(true);
      expect(sqlite3(db, "PRAGMA integrity_check")).toBe("ok");
      expect(Number(sqlite3(db, "SELECT count(*) FROM blobs"))).toBe(expected2.size);

      // a node on it serves every blob acknowledged before checkpoint 2, as it was then, and
      // none of those deleted before it or written after it
      const node = await startNode(dir);
      try {
        const status = await getJson(`${node.url}/v1/status`);
        expect(status.node_id).toBe(nodeId);
        expect(status.blob_count).toBe(expected2.size);
        expect(await serveMismatches(node.url, expected2, [...absent2, "after3"])).toEqual([]);
      } finally {
        expect(await node.stop()).toBe(0);
      }
    }, 120_000);
  }

  test("re-exporting the same checkpoint gives a byte-identical .tar (node stopped vs. running, twice)", () => {
    const d = tmpDir();
    for (const name of ["again.tar", "once-more.tar"]) {
      const out = join(d, name);
      const e = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", out]);
      expect(e.code).toBe(0);
      expect(statSync(out).size).toBe(statSync(liveTar).size);
      expect(sameBytes(out, liveTar)).toBe(true);
    }
    // over an existing file: replaced, still identical, nothing else left
    const out = join(d, "again.tar");
    writeFileSync(out, "old contents");
    expect(runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", out]).code).toBe(0);
    expect(sameBytes(out, liveTar)).toBe(true);
    expect(readdirSync(d).sort()).toEqual(["again.tar", "once-more.tar"]);
  }, 60_000);

  test("the folder GNU tar extracts is a checkpoint directory: list, verify and restore accept it, and its restore is byte-identical to the restore from the archive", () => {
    const x = tmpDir();
    gnuTarExtract(liveTar, "tar", x);
    expect(readdirSync(x)).toEqual([ROOT]);
    const folder = join(x, ROOT);
    const names = gnuTarList(liveTar, "tar");
    expect(filesUnder(x, ROOT)).toEqual([...names].sort());
    const packs = (names.length - 2) / 2;

    const l = runCairn(["list-db-checkpoint", folder]);
    expect({ code: l.code, stdout: l.stdout }).toEqual({ code: 0, stdout: `Available checkpoints in ${folder}:\n${archiveLine2(packs)}\n` });
    expect(listJson(folder)).toEqual(listJson(liveTar));
    const v = verify(folder);
    expect({ code: v.code, stdout: v.stdout }).toEqual({ code: 0, stdout: `Checkpoint 2: OK (${m2.block_count} blocks, ${decimalSize(m2.db_size_bytes)})\n` });

    const fromFolder = join(tmpDir(), "db");
    const r1 = restore(folder, fromFolder);
    expect({ code: r1.code, stdout: r1.stdout }).toEqual({ code: 0, stdout: "Restored from latest (2) successfully.\n" });
    const fromArchive = join(tmpDir(), "db");
    const r2 = restore(liveTar, fromArchive, ["--checkpoint-id", "2"]);
    expect({ code: r2.code, stdout: r2.stdout }).toEqual({ code: 0, stdout: "Restored from 2 successfully.\n" });
    expect(dbDirFiles(fromFolder)).toEqual(["cairn.db"]);
    expect(sameBytes(join(fromFolder, "cairn.db"), join(fromArchive, "cairn.db"))).toBe(true);
    expect(sameBytes(join(fromFolder, "cairn.db"), ref2)).toBe(true);
    // reading never changed the extracted folder or the archive
    expect(filesUnder(x, ROOT)).toEqual([...names].sort());
  }, 60_000);
});

describe("damaged archives", () => {
  for (const ext of ["tar", "tar.zst"] as const) {
    test(`.${ext} cut at 40% and at 95%: verify exits 1 saying it is truncated or damaged; restore exits 1 and writes nothing into an empty target or over an existing database`, () => {
      const src = ext === "tar" ? liveTar : liveZst;
      const size = statSync(src).size;
      const existing = existingDb();
      const cuts = tmpDir();
      for (const frac of [0.4, 0.95]) {
        const cut = join(cuts, `cut-${frac * 100}.${ext}`);
        writePrefix(src, cut, Math.floor(size * frac));
        expect(statSync(cut).size).toBe(Math.floor(size * frac));
        const v = verify(cut);
        expect({ frac, code: v.code }).toEqual({ frac, code: 1 });
        expect(v.stdout).toStartWith("Checkpoint 2: DAMAGED\n");
        expect(v.stdout).toContain(cut);
        expect(v.stdout).toContain("truncated or damaged");
        expect(v.stderr).toStartWith("error: 1 of 1 checkpoint(s) damaged: 2");
        expectRestoreTouchesNothing(cut, existing, cut, "truncated or damaged");
      }
      if (ext === "tar") {
        // and the same target then takes the intact archive (--force moves the old database aside)
        const before = dbFilesState(existing);
        const r = restore(liveTar, existing, ["--force"]);
        expect(r.code).toBe(0);
        expect(r.stdout.split("\n").at(-2)).toBe("Restored from latest (2) successfully.");
        const asides = replacedDirsOf(existing);
        expect(asides).toHaveLength(1);
        expect(dbFilesState(asides[0]!)).toEqual(before);
        expect(sameBytes(join(existing, "cairn.db"), ref2)).toBe(true);
      }
    }, 90_000);
  }

  test("a flipped byte inside a data block of a pack: verify exits 1 naming the pack and the block; restore exits 1 and writes nothing", () => {
    const copy = join(tmpDir(), "flipped.tar");
    copyFileSync(liveTar, copy);
    const entries = readTarEntries(copy);
    // the header reader agrees with GNU tar
    expect(entries.map((e) => e.name)).toEqual(gnuTarList(copy, "tar"));
    // a block in the middle of the last pack: the damage is met late in the stream
    const pack = entries.filter((e) => e.name.endsWith(".pack")).at(-1)!;
    const idxEntry = entries.find((e) => e.name === pack.name.replace(/\.pack$/, ".idx"))!;
    const idx = decodeIndex(readTarEntryData(copy, idxEntry), idxEntry.name);
    expect(idx.packBytes).toBe(pack.size);
    let block: ReturnType<typeof readIndexEntry> | undefined;
    for (let i = Math.floor(idx.count / 2); i < idx.count && !block; i++) {
      const e = readIndexEntry(idx, i);
      if (entryKind(e.flags) === BLOCK_KIND_DATA && e.storedLength >= 64) block = e;
    }
    expect(block).toBeDefined();
    flipByte(copy, pack.dataOffset + block!.offset + Math.floor(block!.storedLength / 2));
    const packRel = pack.name.slice(ROOT.length + 1);
    const digest = toHex(block!.digest).slice(0, 16);

    // the tar itself is still well-formed: GNU tar lists it the same
    expect(gnuTarList(copy, "tar")).toEqual(entries.map((e) => e.name));
    const v = verify(copy);
    expect(v.code).toBe(1);
    expect(v.stdout).toStartWith("Checkpoint 2: DAMAGED\n");
    expect(v.stdout).toContain(`${copy}:${packRel}`);
    expect(v.stdout).toContain(`block ${digest}`);
    expect(v.stdout).toContain(`at offset ${block!.offset} does not match its digest`);
    expectRestoreTouchesNothing(copy, existingDb(), packRel, "does not match its digest");
  }, 60_000);
});

describe("errors", () => {
  test("export: an unknown --checkpoint-id exits 1 listing the ids; --output x.zip exits 2; a missing store exits 1; an archive as the source exits 2; nothing is written", () => {
    const d = tmpDir();
    const unknown = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "9", "--output", join(d, "x.tar")]);
    expect({ code: unknown.code, stdout: unknown.stdout }).toEqual({ code: 1, stdout: "" });
    expect(unknown.stderr).toStartWith("error: ");
    expect(unknown.stderr).toContain("no checkpoint 9");
    expect(unknown.stderr).toContain("1, 2, 3");

    const zip = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", join(d, "x.zip")]);
    expect({ code: zip.code, stdout: zip.stdout }).toEqual({ code: 2, stdout: "" });
    expect(zip.stderr).toStartWith("error: ");
    expect(zip.stderr).toContain(".tar.gz");

    const missing = join(d, "no-such-store");
    const m = runCairn(["export-db-checkpoint", missing, "--checkpoint-id", "1", "--output", join(d, "x.tar")]);
    expect({ code: m.code, stdout: m.stdout }).toEqual({ code: 1, stdout: "" });
    expect(m.stderr).toStartWith("error: ");
    expect(m.stderr).toContain(missing);

    const fromArchive = runCairn(["export-db-checkpoint", liveTar, "--checkpoint-id", "2", "--output", join(d, "x.tar")]);
    expect({ code: fromArchive.code, stdout: fromArchive.stdout }).toEqual({ code: 2, stdout: "" });
    expect(fromArchive.stderr).toStartWith("error: ");

    const badId = runCairn(["export-db-checkpoint", store, "--checkpoint-id", "two", "--output", join(d, "x.tar")]);
    expect(badId.code).toBe(2);

    for (const r of [unknown, zip, m, fromArchive, badId]) expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(readdirSync(d)).toEqual([]);
  }, 20_000);

  test("files that are not cairn archives (random bytes, another tar): list, verify and restore exit 1 with one clear line, no stack trace", () => {
    const d = tmpDir();
    const junk = join(d, "junk.tar");
    writeFileSync(junk, pseudoRandomBytes(4711, 100_000));
    const junkBin = join(d, "junk.bin");
    writeFileSync(junkBin, pseudoRandomBytes(4712, 100_000));
    const src = join(d, "src");
    mkdirSync(src);
    writeFileSync(join(src, "notes.txt"), "not a checkpoint\n");
    const other = join(d, "other.tar");
    expect(Bun.spawnSync(["tar", "-cf", other, "-C", d, "src"]).exitCode).toBe(0);
    const empty = join(d, "empty.tar");
    writeFileSync(empty, "");

    for (const file of [junk, junkBin, other, empty]) {
      for (const args of [["list-db-checkpoint", file], ["list-db-checkpoint", file, "--json"], ["verify-db-checkpoint", file]]) {
        const r = runCairn(args);
        expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 1, stdout: "" });
        expect(r.stderr).toStartWith("error: ");
        expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
        expect(r.stderr).toContain(file);
        expect(r.stderr).not.toMatch(/\s+at \S+ \(/);
      }
      const target = join(tmpDir(), "db");
      const r = restore(file, target);
      expectFailed(r, file);
      expect(existsSync(target)).toBe(false);
    }
    expect(runCairn(["list-db-checkpoint", other]).stderr).toContain("not a checkpoint archive written by cairn export-db-checkpoint");
  }, 30_000);

  test("an archive holds one checkpoint: asking it for another exits 1 naming the one it holds", () => {
    for (const args of [["verify-db-checkpoint", liveTar, "--checkpoint-id", "1"], restoreArgs(liveTar, join(tmpDir(), "db"), ["--checkpoint-id", "3"])]) {
      const r = runCairn(args);
      expect({ args, code: r.code }).toEqual({ args, code: 1 });
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain("checkpoints there: 2");
    }
  }, 20_000);
});

describe("a store with compression: zstd", () => {
  test("its archive carries the compressed blocks; verify passes, and restore gives what a restore from the directory gives", async () => {
    const dir = tmpDir();
    const zstore = join(dir, "checkpoints");
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  compression: zstd\n  sync: false\n" });
    const want = new Map<string, string>();
    try {
      const blobs = range(900).map((i) => ({ id: `c${i}`, body: body("c", i, 1, 200 + ((i * 6151) % 40_000), true) }));
      await putAll(node.url, blobs);
      for (const b of blobs) want.set(b.id, sha256(b.body));
      expect(createCheckpoint(node)).toBe(1);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    const size = listJson(zstore)[0]!.size_bytes;

    const ref = join(tmpDir(), "db");
    expect(restore(zstore, ref).code).toBe(0);
    for (const ext of ["tar.zst", "tar"] as const) {
      const out = join(dir, `cp1.${ext}`);
      const e = runCairn(["export-db-checkpoint", zstore, "--checkpoint-id", "1", "--output", out, "--json"]);
      expect(e.code).toBe(0);
      expect(JSON.parse(e.stdout)).toMatchObject({ checkpoint_id: 1, size_bytes: size, archive_bytes: statSync(out).size });
      const am = archivedManifest(out, ext, 1);
      expect(gnuTarList(out, ext)).toEqual(expectedNames(1, am.packs));
      const v = verify(out);
      expect({ ext, code: v.code, stdout: v.stdout }).toEqual({ ext, code: 0, stdout: `Checkpoint 1: OK (${am.block_count} blocks, ${decimalSize(size)})\n` });

      const target = tmpDir();
      const r = restore(out, join(target, "db"));
      expect({ ext, code: r.code, stdout: r.stdout }).toEqual({ ext, code: 0, stdout: "Restored from latest (1) successfully.\n" });
      const db = join(target, "db", "cairn.db");
      expect(sameBytes(db, join(ref, "cairn.db"))).toBe(true);
      expect(sqlite3(db, "PRAGMA integrity_check")).toBe("ok");
      if (ext === "tar") {
        // the blocks in the archive's packs are stored zstd-compressed, as in the store
        const entries = readTarEntries(out);
        let compressed = 0;
        let rawBytes = 0;
        let storedBytes = 0;
        for (const idxEntry of entries.filter((x) => x.name.endsWith(".idx"))) {
          const idx = decodeIndex(readTarEntryData(out, idxEntry), idxEntry.name);
          for (let i = 0; i < idx.count; i++) {
            const x = readIndexEntry(idx, i);
            if (entryKind(x.flags) !== BLOCK_KIND_DATA) continue;
            if (x.flags & FLAG_ZSTD) compressed++;
            rawBytes += x.rawLength;
            storedBytes += x.storedLength;
          }
        }
        expect(compressed).toBeGreaterThan(100);
        expect(rawBytes).toBe(size);
        expect(storedBytes).toBeLessThan(size * 0.6);
        expect(statSync(out).size).toBeLessThan(size * 0.6);
        const n = await startNode(target);
        try {
          expect(await serveMismatches(n.url, want, ["a1", "c900"])).toEqual([]);
        } finally {
          expect(await n.stop()).toBe(0);
        }
      }
    }
  }, 90_000);
});

describe("kill -9 of a restore from a .tar archive, then the same command again", () => {
  let arc = "";
  let ref3 = "";
  let size3 = 0;

  beforeAll(() => {
    const d = mkdtempSync("/tmp/cairn-arch3-");
    arc = join(d, "cp3.tar");
    expect(runCairn(["export-db-checkpoint", store, "--checkpoint-id", "3", "--output", arc]).code).toBe(0);
    size3 = listJson(arc)[0]!.size_bytes;
    // big enough that progress is made durable (every 128 MiB) before the end
    expect(size3).toBeGreaterThan(128 * MiB + 16 * MiB);
    const r = restore(store, join(d, "ref3"), ["--checkpoint-id", "3"]);
    expect(r.code).toBe(0);
    ref3 = join(d, "ref3", "cairn.db");
    expect(sqlite3(ref3, "PRAGMA integrity_check")).toBe("ok");
    expect(Number(sqlite3(ref3, "SELECT count(*) FROM blobs"))).toBe(expected3.size);
  }, 120_000);

  afterAll(() => {
    if (arc) rmSync(dirname(arc), { recursive: true, force: true });
  });

  function expectFinished(dbPath: string, r: { code: number; stdout: string }): void {
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: "Restored from latest (3) successfully.\n" });
    expect(dbDirFiles(dbPath)).toEqual(["cairn.db"]);
    expect(existsSync(stagingDirOf(dbPath))).toBe(false);
    expect(sameBytes(join(dbPath, "cairn.db"), ref3)).toBe(true);
  }

  test("uninterrupted: byte-identical to the restore from the directory", () => {
    const dbPath = join(tmpDir(), "db");
    expectFinished(dbPath, restore(arc, dbPath));
  }, 60_000);

  test("killed right after progress is first made durable (crash point): the second run continues from there, byte-identical", () => {
    const dbPath = join(tmpDir(), "db");
    const k = runCairnEnv(restoreArgs(arc, dbPath), { CAIRN_TEST_CRASH_POINT: "restore:progress-saved" });
    expect({ signal: k.signal, stdout: k.stdout }).toEqual({ signal: "SIGKILL", stdout: "" });
    expect(existsSync(join(dbPath, "cairn.db"))).toBe(false);
    expect(existsSync(stagingDirOf(dbPath))).toBe(true);
    const progress = readProgress(dbPath)!;
    expect(progress.ranges).toBe(Math.ceil(size3 / (1024 * 8192)));
    expect(progress.done.length).toBeGreaterThan(0);
    expect(progress.done.length).toBeLessThan(progress.ranges);

    const again = restore(arc, dbPath);
    expectFinished(dbPath, again);
    expect(again.stderr).toContain(`${progress.done.length} of ${progress.ranges} ranges were already restored`);
  }, 60_000);

  test("SIGKILL part-way (40% of the image written): the second run finishes, byte-identical", async () => {
    const dbPath = join(tmpDir(), "db");
    const image = join(stagingDirOf(dbPath), "cairn.db");
    const run = spawnRestore(arc, dbPath);
    expect(await signalWhen(run, () => allocatedBytes(image) >= size3 * 0.4, "SIGKILL")).toBe(true);
    const killed = await run.done();
    expect({ signal: killed.signal, stdout: killed.stdout }).toEqual({ signal: "SIGKILL", stdout: "" });
    expect(existsSync(join(dbPath, "cairn.db"))).toBe(false);
    expect(existsSync(stagingDirOf(dbPath))).toBe(true);

    expectFinished(dbPath, restore(arc, dbPath));
  }, 60_000);
});

/** Export faults and subtle truncations (each bounded in time: a hung export is killed). */
describe("export faults and subtle truncations", () => {
  test("export into a folder that does not exist: exit 1 at once with one clear line, no stack trace, nothing left", async () => {
    const d = tmpDir();
    const out = join(d, "no-such-folder", "cp2.tar");
    for (const name of ["cp2.tar", "cp2.tar.gz"]) {
      const r = await runCairnBounded(["export-db-checkpoint", store, "--checkpoint-id", "2", "--output", join(dirname(out), name)], 30_000);
      expect({ name, timedOut: r.timedOut, code: r.code }).toEqual({ name, timedOut: false, code: 1 });
      expect(r.stderr.trimEnd().split("\n")).toHaveLength(1);
      expect(r.stderr).toStartWith("error: ");
      expect(r.stderr).toContain(dirname(out));
    }
    expect(readdirSync(d)).toEqual([]);
  }, 90_000);

  test("SIGINT during an export: a clean exit with one line saying it was interrupted, no stack trace, no temp file left", async () => {
    const d = tmpDir();
    const out = join(d, "cp3.tar.gz");
    // SIGINT once the export is under way: its temp file (.cp3.tar.gz.tmp-<random>) is there and has bytes in it
    const partialBytes = () =>
      readdirSync(d)
        .filter((n) => n.startsWith(".cp3.tar.gz.tmp-"))
        .reduce((n, f) => n + (statSync(join(d, f), { throwIfNoEntry: false })?.size ?? 0), 0);
    let exited = false;
    let interrupted = false;
    let notUnderWay: unknown;
    const r = await runCairnBounded(["export-db-checkpoint", store, "--checkpoint-id", "3", "--output", out], 60_000, (p) => {
      waitFor(() => exited || partialBytes() > 0, { what: "the export to write into its temp file", intervalMs: 5 }).then(
        () => {
          if (exited) return;
          p.kill("SIGINT");
          interrupted = true;
        },
        (e) => {
          notUnderWay = e;
          p.kill("SIGKILL");
        },
      );
    });
    exited = true;
    if (notUnderWay) throw notUnderWay;
    expect(interrupted).toBe(true);
    expect(r.timedOut).toBe(false);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("interrupted");
    expect(r.stderr).not.toContain("tar entry destroyed");
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(readdirSync(d)).toEqual([]);
  }, 90_000);

  test(".tar.zst cut by its last 3 bytes (GNU tar and zstd -t reject it): verify exits 1", () => {
    const cut = join(tmpDir(), "cut.tar.zst");
    writePrefix(liveZst, cut, statSync(liveZst).size - 3);
    expect(Bun.spawnSync(["tar", "--zstd", "-tf", cut], { stdout: "ignore", stderr: "ignore" }).exitCode).not.toBe(0);
    // the cut falls in zstd's last (empty) frame: the tar inside is whole, the file is not
    const v = verify(cut);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("truncated or damaged");
  }, 20_000);
});

describe("checkpoint create --path into an archive", () => {
  test("takes the checkpoint into the local store and writes it as the archive: it lists, verifies and restores like the directory", async () => {
    const d = tmpDir();
    const node = await startNode(d, { extraYaml: "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  sync: false\n" });
    try {
      await putAll(node.url, Array.from({ length: 200 }, (_, i) => ({ id: `a${i}`, body: pseudoRandomBytes(7000 + i, 3000 + i * 37) })));
      const out = join(d, "backup", "node.tar.zst");
      mkdirSync(dirname(out));
      const r = runCairn(["local-admin", "--socket-path", node.socket, "checkpoint", "create", "--path", out], { timeoutMs: 60_000 });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Checkpoint 1 created in [^\n]+\nExported to [^\n]+node\.tar\.zst: [\d.]+ [KMG]?B, zstd\n$/);
      expect(readdirSync(dirname(out))).toEqual(["node.tar.zst"]);
      const fromArchive = listJson(out);
      expect(fromArchive.map((c) => c.id)).toEqual([1]);
      expect(fromArchive[0]!.size_bytes).toBe(listJson(join(d, "ckpt"))[0]!.size_bytes);
      expect(verify(out).code).toBe(0);
      const a = join(tmpDir(), "db");
      const b = join(tmpDir(), "db");
      expect(restore(out, a).code).toBe(0);
      expect(restore(join(d, "ckpt"), b).code).toBe(0);
      expect(sameBytes(join(a, "cairn.db"), join(b, "cairn.db"))).toBe(true);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);
});
