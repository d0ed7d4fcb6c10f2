/**
 * One conformance suite for the three store backends (src/store/backend.ts), run the same way
 * against each: a folder made by the real binary (DirBackend), a copy of it under an S3
 * prefix on a real S3-protocol server on 127.0.0.1 (S3Backend, s3rver), and an archive of its
 * checkpoint 2 made by `cairn export-db-checkpoint`, as .tar and as .tar.zst (ArchiveBackend).
 * Each backend declares its capabilities; the suite checks them, then runs the checks those
 * capabilities call for: random reads, writes, streaming reads, the store read on top
 * (through `new Store(backend)`: the same checkpoint whatever holds it), damage, the spec a
 * worker reopens a backend from, and the readers' hold.
 *
 * s3rver runs inside this test process: nothing that talks to it is spawned synchronously.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ArchiveBackend } from "../../src/store/archive/backend.ts";
import { type Backend, NO_HOLD, type RandomReads, type Writes } from "../../src/store/backend.ts";
import { DirBackend, STORE_READERS_LOCK_FILE } from "../../src/store/dir/backend.ts";
import {
  decodeManifest,
  encodeStoreInfo,
  indexPath,
  type Manifest,
  manifestPath,
  packFileOf,
  packPath,
  sameStore,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  type StoreInfo,
  storeInfoForCopy,
} from "../../src/store/format.ts";
import { CairnError } from "../../src/errors.ts";
import { blockDigest, toHex } from "../../src/store/hash.ts";
import { expectCode, rejected } from "../helpers/errors.ts";
import { BLOCK_KIND_DATA, decodeIndex, entryKind, FLAG_ZSTD, PACK_MAGIC, readIndexEntry } from "../../src/store/pack.ts";
import { openBackend } from "../../src/store/open.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { MULTIPART_THRESHOLD, resolveS3Settings, S3Backend, type S3SourceSpec } from "../../src/store/s3/backend.ts";
import { Store } from "../../src/store/store.ts";
import { FileLock } from "../../src/util/file-lock.ts";
import { readTarEntries, readTarEntryData, writePrefix } from "../helpers/archive.ts";
import { createCheckpoint, filesUnder, flipByte, putAll } from "../helpers/checkpoint.ts";
import { getJson, pseudoRandomBytes, runCairn, sha256, startNode } from "../helpers/node.ts";
import { type S3Server, startS3 } from "../helpers/s3.ts";
import { listDigests, readImage } from "../helpers/store-fixture.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

// ---- the store, its copies -----------------------------------------------------------------------

/** Everything made once: removed in afterAll. */
let root = "";
/** The node's store folder (checkpoints 1 and 2). */
let storeDir = "";
let tarFile = "";
let zstFile = "";
let s3: S3Server | undefined;
let s3Spec: S3SourceSpec;
const S3_PREFIX = "stores/a";
/** What the S3 copy holds: path → bytes uploaded from (a local file, or the copy's store info). */
const s3Files = new Map<string, { file?: string; bytes?: Uint8Array }>();
let nodeId = "";
let localInfo: StoreInfo;
/** Checkpoint 2 as the folder holds it: manifest, block digests in order, image sha256. */
let m2: Manifest;
let digests2: string[] = [];
let imageSha2 = "";

const text = (i: number, n: number) => new Uint8Array(Buffer.alloc(n, `blob ${i}: the quick brown fox jumps over the lazy dog. `));
const blob = (i: number, v: number) => {
  const size = 200 + ((i * 7919 + v * 131) % 12_000);
  return i % 3 === 0 ? text(i * 10 + v, size) : pseudoRandomBytes(i * 1_000_003 + v, size);
};

/** Every file under `dir`, relative path → size. */
function filesOf(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else if (e.isFile()) out.set(r, statSync(join(dir, r)).size);
    }
  };
  walk("");
  return out;
}

/** Upload a store folder as a node's remote copy holds it: the store info for copies, then packs, indexes and manifests. */
async function uploadStore(remote: S3Backend, dir: string, record?: Map<string, { file?: string; bytes?: Uint8Array }>, mutate?: (path: string, file: string) => string): Promise<void> {
  const info = encodeStoreInfo(storeInfoForCopy(localInfo));
  await remote.writes.put(STORE_FILE, info);
  record?.set(STORE_FILE, { bytes: info });
  const files = [...filesUnder(dir, "packs"), ...filesUnder(dir, "manifests")];
  let next = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < files.length) {
        const f = files[next++]!;
        const local = mutate ? mutate(f, join(dir, f)) : join(dir, f);
        expect(await remote.writes.putFile(f, local)).toBe(statSync(local).size);
        record?.set(f, { file: local });
      }
    }),
  );
}

beforeAll(async () => {
  root = mkdtempSync("/tmp/cairn-be-");
  const nodeDir = join(root, "node");
  mkdirSync(nodeDir);
  const node = await startNode(nodeDir, {
    extraYaml: "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 0\n  max_background_operations: 2\n  sync: false\n  compression: zstd\n",
  });
  try {
    nodeId = (await getJson(`${node.url}/v1/status`)).node_id;
    await putAll(node.url, Array.from({ length: 1500 }, (_, i) => ({ id: `b${i}`, body: blob(i, 1) })));
    expect(createCheckpoint(node)).toBe(1);
    await putAll(node.url, [
      ...Array.from({ length: 150 }, (_, i) => ({ id: `b${i * 7}`, body: blob(i * 7, 2) })),
      ...Array.from({ length: 300 }, (_, i) => ({ id: `n${i}`, body: blob(i + 5000, 1) })),
    ]);
    expect(createCheckpoint(node)).toBe(2);
  } finally {
    expect(await node.stop()).toBe(0);
  }
  storeDir = join(nodeDir, "ckpt");
  expect(existsSync(join(storeDir, STORE_READERS_LOCK_FILE))).toBe(true);

  const ref = new StoreReader(new DirBackend(storeDir));
  localInfo = await ref.info();
  expect(localInfo.quick_hash_seed).toBeDefined();
  m2 = await ref.manifest(2);
  expect(m2.packs.length).toBeGreaterThanOrEqual(2);
  digests2 = listDigests(await ref.blockList(m2));
  imageSha2 = sha256(await readImage(ref, m2));

  // checkpoint 2 as archives, by the binary (before s3rver runs in this process)
  tarFile = join(root, "cp2.tar");
  zstFile = join(root, "cp2.tar.zst");
  for (const out of [tarFile, zstFile]) {
    const r = runCairn(["export-db-checkpoint", storeDir, "--checkpoint-id", "2", "--output", out], { timeoutMs: 60_000 });
    expect({ out, code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ out, code: 0, stderr: "" });
  }

  s3 = await startS3(join(root, "s3"));
  s3Spec = resolveS3Settings({ url: s3.url(S3_PREFIX) }, s3.env);
  await uploadStore(new S3Backend(s3Spec), storeDir, s3Files);
}, 120_000);

afterAll(async () => {
  await s3?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

// ---- the subjects --------------------------------------------------------------------------------

interface Capabilities {
  random: boolean;
  stream: boolean;
  writes: boolean;
  readers: boolean;
  localDir: boolean;
}

interface Subject {
  caps: Capabilities;
  /** A fresh backend on the store (or archive). */
  open(): Backend;
  location(): string;
  /** Random: the files it holds, with sizes, and the bytes of each. */
  files?(): Map<string, number>;
  bytesOf?(path: string): Uint8Array;
  /** Writes: a backend of the same kind on an empty location of its own. */
  scratch?(): Backend & { random: RandomReads; writes: Writes };
  /** Random: a copy of the store, its file `path` changed by `damage` (given a copy of it). */
  copyWith?(path: string, damage: (file: string) => void): Promise<Backend>;
  /** Stream: the archive file, and its tar bytes. */
  archive?: string;
  ids: number[];
}

/** The tar inside an archive file (decompressed if need be). */
function tarBytesOf(file: string): Uint8Array {
  const data = new Uint8Array(readFileSync(file));
  return file.endsWith(".zst") ? new Uint8Array(Bun.zstdDecompressSync(data)) : data;
}

const SUBJECTS: Record<string, Subject> = {
  dir: {
    caps: { random: true, stream: false, writes: true, readers: true, localDir: true },
    open: () => new DirBackend(storeDir),
    location: () => storeDir,
    files: () => filesOf(storeDir),
    bytesOf: (p) => new Uint8Array(readFileSync(join(storeDir, p))),
    scratch: () => new DirBackend(tmpDir("cairn-bw-")),
    async copyWith(path, damage) {
      const copy = join(tmpDir("cairn-bd-"), "store");
      cpSync(storeDir, copy, { recursive: true });
      damage(join(copy, path));
      return new DirBackend(copy);
    },
    ids: [1, 2],
  },
  s3: {
    caps: { random: true, stream: false, writes: true, readers: true, localDir: false },
    open: () => new S3Backend(s3Spec),
    location: () => `s3://cairn-test/${S3_PREFIX}`,
    files: () => new Map([...s3Files].map(([p, f]) => [p, f.bytes ? f.bytes.length : statSync(f.file!).size])),
    bytesOf: (p) => {
      const f = s3Files.get(p)!;
      return f.bytes ?? new Uint8Array(readFileSync(f.file!));
    },
    scratch: () => new S3Backend({ ...s3Spec, url: s3!.url(`scratch-${Math.random().toString(36).slice(2)}`) }),
    async copyWith(path, damage) {
      const dir = tmpDir("cairn-bd-");
      const remote = new S3Backend({ ...s3Spec, url: s3!.url(`damaged-${Math.random().toString(36).slice(2)}`) });
      await uploadStore(remote, storeDir, undefined, (p, file) => {
        if (p !== path) return file;
        const changed = join(dir, "changed");
        copyFileSync(file, changed);
        damage(changed);
        return changed;
      });
      return remote;
    },
    ids: [1, 2],
  },
  "archive .tar": {
    caps: { random: false, stream: true, writes: false, readers: false, localDir: false },
    open: () => new ArchiveBackend(tarFile, tarFile),
    location: () => tarFile,
    get archive() {
      return tarFile;
    },
    ids: [2],
  },
  "archive .tar.zst": {
    caps: { random: false, stream: true, writes: false, readers: false, localDir: false },
    open: () => new ArchiveBackend(zstFile, zstFile),
    location: () => zstFile,
    get archive() {
      return zstFile;
    },
    ids: [2],
  },
};

// ---- helpers ---------------------------------------------------------------------------------------


/** Every entry of a stream, each body read whole: path, size, bytes. */
async function readEntries(b: Backend): Promise<{ path: string; size: number; body: Uint8Array; atEnd: boolean }[]> {
  const out: { path: string; size: number; body: Uint8Array; atEnd: boolean }[] = [];
  for await (const e of b.stream!.entries()) {
    const body = (await e.read(e.size)).slice();
    out.push({ path: e.path, size: e.size, body, atEnd: await e.atEnd() });
  }
  return out;
}

/** Stream checkpoint 2 out of a streaming backend: block digests by block number, and the image's sha256. */
async function streamCheckpoint(b: Backend): Promise<{ digests: string[]; sha: string; manifest: Manifest }> {
  const store = new Store(b);
  const digests: string[] = [];
  const hasher = new Bun.CryptoHasher("sha256");
  const manifest = await store.streamer!.streamBlocks((block, data) => {
    if (block !== digests.length) throw new Error(`block ${block} came after ${digests.length - 1}`);
    digests.push(toHex(blockDigest(data)));
    hasher.update(data);
  });
  return { digests, sha: hasher.digest("hex"), manifest };
}

/** The largest pack of the store, with its size. */
function largestPack(files: Map<string, number>): { path: string; size: number; packId: string } {
  const packs = [...files].filter(([p]) => packFileOf(p)?.ext === "pack").sort((a, b) => b[1] - a[1]);
  const [path, size] = packs[0]!;
  return { path, size, packId: packFileOf(path)!.packId };
}

/** A copy of an archive cut after `fraction` of its bytes (compressed ones, for a .tar.zst). */
function cutArchive(archive: string, fraction: number): ArchiveBackend {
  const cut = join(tmpDir("cairn-bc-"), archive.endsWith(".zst") ? "cut.tar.zst" : "cut.tar");
  writePrefix(archive, cut, Math.floor(statSync(archive).size * fraction));
  return new ArchiveBackend(cut, cut);
}

/** A copy of an archive (its subject's compression) with one byte flipped in the middle of a stored data block. */
function archiveWithDamagedBlock(archive: string): string {
  const dir = tmpDir("cairn-bx-");
  const tar = join(dir, "damaged.tar");
  writeFileSync(tar, tarBytesOf(archive));
  const entries = readTarEntries(tar);
  const packAt = entries.findIndex((e) => e.name.endsWith(".pack"));
  const idx = decodeIndex(readTarEntryData(tar, entries[packAt - 1]!), "idx");
  let flipAt = -1;
  for (let i = 0; i < idx.count && flipAt < 0; i++) {
    const e = readIndexEntry(idx, i);
    if (entryKind(e.flags) === BLOCK_KIND_DATA && e.storedLength > 64) flipAt = entries[packAt]!.dataOffset + e.offset + Math.floor(e.storedLength / 2);
  }
  expect(flipAt).toBeGreaterThan(0);
  flipByte(tar, flipAt);
  if (!archive.endsWith(".zst")) return tar;
  const zst = join(dir, "damaged.tar.zst");
  writeFileSync(zst, Bun.zstdCompressSync(new Uint8Array(readFileSync(tar))));
  return zst;
}

// ---- the suite -------------------------------------------------------------------------------------

describe.each(Object.keys(SUBJECTS))("backend: %s", (name) => {
  const S = SUBJECTS[name]!;
  const c = S.caps;

  test("has the capabilities it declares, and a location without credentials", () => {
    const b = S.open();
    expect({
      random: b.random !== undefined,
      stream: b.stream !== undefined,
      writes: b.writes !== undefined,
      readers: b.readers !== undefined,
      localDir: b.localDir !== undefined,
    }).toEqual(c);
    expect(b.location).toBe(S.location());
    expect(b.location).not.toContain("S3RVER");
    if (c.localDir) expect(b.localDir).toBe(storeDir);
    const store = new Store(b);
    expect(store.reader !== undefined).toBe(c.random);
    expect(store.streamer !== undefined).toBe(c.stream);
  });

  // ---- random reads

  if (c.random) {
    test("list and listSizes show the store's files with their sizes", async () => {
      const r = S.open().random!;
      const want = S.files!();
      expect(want.size).toBeGreaterThan(4);
      expect(new Map([...(await r.listSizes("")).entries()].sort())).toEqual(new Map([...want.entries()].sort()));
      expect(await r.list("")).toEqual([...want.keys()].sort());
      expect(await r.list("manifests/")).toEqual([manifestPath(1), manifestPath(2)]);
      const packs = await r.listSizes("packs/");
      expect(new Map([...packs].sort())).toEqual(new Map([...want].filter(([p]) => p.startsWith("packs/")).sort()));
      for (const p of m2.packs) expect(packs.has(indexPath(p))).toBe(true);
      const sub = indexPath(m2.packs[0]!).slice(0, "packs/xx/".length);
      expect((await r.list(sub)).every((p) => p.startsWith(sub))).toBe(true);
      expect(await r.list("nothing/")).toEqual([]);
      expect((await r.listSizes("nothing/")).size).toBe(0);
    }, 60_000);

    test("get returns a file's exact bytes; with maxBytes below its size it is E_STORE_DAMAGED", async () => {
      const r = S.open().random!;
      const want = S.files!();
      for (const [path, size] of want) {
        const expected = S.bytesOf!(path);
        expect([path, (await r.get(path, size)).length]).toEqual([path, size]);
        expect(sha256(await r.get(path, size + 1000))).toBe(sha256(expected));
        if (size > 0) expectCode(await rejected(r.get(path, size - 1)), "E_STORE_DAMAGED", /more than such a file can be/);
      }
      // getReusing reads into the buffer given when it fits, else into a new one
      const info = S.bytesOf!(STORE_FILE);
      const reuse = new Uint8Array(64 * 1024);
      expect(await r.getReusing(STORE_FILE, reuse, 64 * 1024)).toEqual(info);
      expect(await r.getReusing(STORE_FILE, new Uint8Array(1), 64 * 1024)).toEqual(info);
      expectCode(await rejected(r.getReusing(STORE_FILE, reuse, info.length - 1)), "E_STORE_DAMAGED");
    }, 60_000);

    test("getRange and readInto return exact byte ranges, shorter at the end", async () => {
      const b = S.open();
      const r = b.random!;
      const { path, size } = largestPack(S.files!());
      expect(size).toBeGreaterThan(100_000);
      const all = S.bytesOf!(path);
      expect(new TextDecoder().decode(await r.getRange(path, 0, 8))).toBe(PACK_MAGIC);
      expect(await r.getRange(path, 1000, 50_000)).toEqual(all.subarray(1000, 51_000));
      expect(await r.getRange(path, size - 100, 100)).toEqual(all.subarray(size - 100));
      const tail = await r.getRange(path, size - 100, 1000);
      expect(tail.length).toBe(100);
      expect(tail).toEqual(all.subarray(size - 100));
      expect((await r.getRange(path, 5, 0)).length).toBe(0);
      const into = new Uint8Array(70_000).fill(0xee);
      expect(await r.readInto(path, into, 7, 60_000, 12_345)).toBe(60_000);
      expect(into.subarray(7, 60_007) as Uint8Array).toEqual(all.subarray(12_345, 72_345));
      expect(into.subarray(0, 7).every((b) => b === 0xee)).toBe(true);
      expect(into.subarray(60_007).every((b) => b === 0xee)).toBe(true);
      expect(await r.readInto(path, into, 0, 1000, size - 10)).toBe(10);
      expect(into.subarray(0, 10) as Uint8Array).toEqual(all.subarray(size - 10));
      b.close?.();
    }, 60_000);

    test("a missing file is E_STORE_MISSING; the size of a missing file is undefined", async () => {
      const r = S.open().random!;
      const gone = manifestPath(99);
      expectCode(await rejected(r.get(gone, 1 << 20)), "E_STORE_MISSING", /0000000099\.json is missing/);
      expectCode(await rejected(r.getRange(gone, 0, 10)), "E_STORE_MISSING");
      expectCode(await rejected(r.readInto(gone, new Uint8Array(10), 0, 10, 0)), "E_STORE_MISSING");
      expect(await r.size(gone)).toBeUndefined();
      expect(await r.size(STORE_FILE)).toBe(S.files!().get(STORE_FILE)!);
      const { path, size } = largestPack(S.files!());
      expect(await r.size(path)).toBe(size);
    }, 60_000);

    // a range that starts at or past the end gives fewer bytes (none), as a file does: S3's 416
    // InvalidRange is not an outage to retry
    test("getRange and readInto starting at or past the end of a file return no bytes", async () => {
      const b = S.open();
      const { path, size } = largestPack(S.files!());
      expect((await b.random!.getRange(path, size, 10)).length).toBe(0);
      expect((await b.random!.getRange(path, size + 4096, 10)).length).toBe(0);
      expect(await b.random!.readInto(path, new Uint8Array(10), 0, 10, size)).toBe(0);
      b.close?.();
    }, 60_000);

    // Not run against s3rver: it closes the connection on a ranged GET of an empty object
    // (S3Backend.get asks for 0..maxBytes, to bound what it reads); AWS S3 answers that with 416
    // InvalidRange, which get() takes as "no bytes". No file cairn stores is empty.
    test.todoIf(name === "s3")("an empty file round-trips (put, size, get)", async () => {
      const b = S.scratch!();
      await b.writes.put("empty", new Uint8Array(0));
      expect(await b.random.size("empty")).toBe(0);
      expect((await b.random.get("empty", 10)).length).toBe(0);
      await b.writes.delete("empty");
    }, 60_000);

    // in a remote copy whose pack was cut short, verify or restore must say "truncated", not
    // "the remote store did not answer"
    test("in a copy with a pack cut short, reading a block past the cut is E_STORE_DAMAGED", async () => {
      const { path, size, packId } = largestPack(S.files!());
      const b = await S.copyWith!(path, (f) => truncateSync(f, Math.floor(size / 2)));
      const reader = new StoreReader(b);
      const idx = await reader.index(packId);
      const last = readIndexEntry(idx, idx.count - 1);
      expect(last.offset).toBeGreaterThan(size / 2);
      expectCode(await rejected(reader.block({ ...last, packId })), "E_STORE_DAMAGED", /truncated/);
      b.close?.();
    }, 60_000);
  }

  // ---- writes

  if (c.writes) {
    test("put then get round-trips; putFile round-trips a local file (also one uploaded in parts); delete removes, and deleting a missing file is not an error", async () => {
      const b = S.scratch!();
      const data = pseudoRandomBytes(77, 10_000);
      await b.writes.put("a/b/c.bin", data);
      expect(await b.random.get("a/b/c.bin", 1 << 20)).toEqual(data);
      expect(await b.random.size("a/b/c.bin")).toBe(10_000);
      // a put replaces the file whole
      await b.writes.put("a/b/c.bin", data.subarray(0, 100));
      expect(await b.random.get("a/b/c.bin", 1 << 20)).toEqual(data.subarray(0, 100));

      const dir = tmpDir("cairn-bf-");
      const small = join(dir, "small");
      writeFileSync(small, pseudoRandomBytes(78, 123_457));
      expect(await b.writes.putFile("files/small", small)).toBe(123_457);
      expect(sha256(await b.random.get("files/small", 1 << 20))).toBe(sha256(readFileSync(small)));
      const big = join(dir, "big");
      const bigSize = MULTIPART_THRESHOLD + 1024 * 1024 + 3;
      writeFileSync(big, pseudoRandomBytes(79, bigSize));
      expect(await b.writes.putFile("files/big", big)).toBe(bigSize);
      expect(await b.random.size("files/big")).toBe(bigSize);
      expect(sha256(await b.random.get("files/big", bigSize))).toBe(sha256(readFileSync(big)));
      expect(await b.random.getRange("files/big", bigSize - 5, 10)).toEqual(new Uint8Array(readFileSync(big)).subarray(bigSize - 5));
      expect(await b.random.list("")).toEqual(["a/b/c.bin", "files/big", "files/small"]);

      await b.writes.delete("a/b/c.bin");
      expect(await b.random.size("a/b/c.bin")).toBeUndefined();
      expectCode(await rejected(b.random.get("a/b/c.bin", 1 << 20)), "E_STORE_MISSING");
      await b.writes.delete("a/b/c.bin");
      await b.writes.delete("never/was.bin");
      for (const f of ["files/big", "files/small"]) await b.writes.delete(f);
      expect(await b.random.list("")).toEqual([]);
    }, 60_000);

    test("a listing past one page (S3 answers 1000 keys at a time) has every file, sorted, with its size", async () => {
      const b = S.scratch!();
      const names = Array.from({ length: 1234 }, (_, i) => `log/${String(i).padStart(6, "0")}.seg`);
      for (let i = 0; i < names.length; i += 50) await Promise.all(names.slice(i, i + 50).map((n, k) => b.writes.put(n, new Uint8Array((i + k) % 7))));
      await b.writes.put("other", new Uint8Array(1));
      expect(await b.random.list("log/")).toEqual(names);
      const sizes = await b.random.listSizes("log/");
      expect(sizes.size).toBe(names.length);
      expect(names.every((n, i) => sizes.get(n) === i % 7)).toBe(true);
    }, 120_000);
  }

  // ---- streaming reads

  if (c.stream) {
    test("entries() yields cairn-store.json, the manifest, then each pack's .idx before its .pack, with sizes matching their bodies", async () => {
      const b = S.open();
      await b.stream!.checkWhole?.();
      const got = await readEntries(b);
      const manifest = decodeManifest(got[1]!.body, "m");
      expect(got.map((e) => e.path)).toEqual([STORE_FILE, manifestPath(2), ...manifest.packs.flatMap((p) => [indexPath(p), packPath(p)])]);
      for (const e of got) {
        expect([e.path, e.body.length, e.atEnd]).toEqual([e.path, e.size, true]);
      }
      // the same entries, sizes and bytes as the tar headers say
      const tar = join(tmpDir("cairn-bt-"), "a.tar");
      writeFileSync(tar, tarBytesOf(S.archive!));
      const headers = readTarEntries(tar).filter((h) => h.type === "0" || h.type === "\0");
      expect(headers.map((h) => [h.name.replace(/^cairn-checkpoint-2\//, ""), h.size])).toEqual(got.map((e) => [e.path, e.size]));
      headers.forEach((h, i) => expect(sha256(readTarEntryData(tar, h))).toBe(sha256(got[i]!.body)));
      // what the archive holds is a copy: the seed's digest, never the seed
      const info = JSON.parse(new TextDecoder().decode(got[0]!.body)) as StoreInfo;
      expect(info.quick_hash_seed).toBeUndefined();
      expect(info.quick_hash_seed_digest).toBe(storeInfoForCopy(localInfo).quick_hash_seed_digest!);
      // reading an entry in pieces gives the same bytes
      let pieces = 0;
      for await (const e of b.stream!.entries()) {
        if (!e.path.endsWith(".pack")) continue;
        const whole = got.find((g) => g.path === e.path)!.body;
        const parts: Uint8Array[] = [];
        for (let n = 0; n < e.size; n += 10_007) parts.push((await e.read(Math.min(10_007, e.size - n))).slice());
        expect(sha256(Buffer.concat(parts))).toBe(sha256(whole));
        expect(await e.atEnd()).toBe(true);
        pieces++;
      }
      expect(pieces).toBe(manifest.packs.length);
    }, 60_000);

    test("a cut archive (40% of it) makes streamBlocks throw E_STORE_DAMAGED (checkWhole finds a cut .tar.zst)", async () => {
      const b = cutArchive(S.archive!, 0.4);
      if (S.archive!.endsWith(".zst")) {
        expectCode(await rejected(b.checkWhole()), "E_STORE_DAMAGED", /cut short|truncated/);
        await S.open().stream!.checkWhole!();
      } else await b.checkWhole();
      const seen: number[] = [];
      expectCode(await rejected(new Store(b).streamer!.streamBlocks((block) => void seen.push(block))), "E_STORE_DAMAGED", /truncated/);
      expect(seen.length).toBeLessThan(digests2.length);
      // cut just before its end-of-archive blocks (every entry whole)
      const tarCut = join(tmpDir("cairn-bc-"), "end.tar");
      const tar = tarBytesOf(S.archive!);
      const entries = (() => {
        writeFileSync(tarCut, tar);
        return readTarEntries(tarCut);
      })();
      const last = entries.at(-1)!;
      writeFileSync(tarCut, tar.subarray(0, last.dataOffset + Math.ceil(last.size / 512) * 512));
      expectCode(await rejected(readEntries(new ArchiveBackend(tarCut, tarCut))), "E_STORE_DAMAGED", /end-of-archive/);
      expectCode(await rejected(new Store(new ArchiveBackend(tarCut, tarCut)).streamer!.streamBlocks(() => {})), "E_STORE_DAMAGED");
    }, 60_000);

    // an archive cut inside an entry's body fails while that body is read: damage, with its
    // code and hint, whichever reader meets it (list and verify of an archive cut inside its
    // manifest once said "error: Unexpected end of data" with no hint)
    test("a cut archive (40% of it) makes entries() throw E_STORE_DAMAGED", async () => {
      const b = cutArchive(S.archive!, 0.4);
      expectCode(await rejected(readEntries(b)), "E_STORE_DAMAGED", /truncated/);
    }, 60_000);

    test("an archive cut inside its manifest makes info() and manifest() throw E_STORE_DAMAGED", async () => {
      const tar = join(tmpDir("cairn-bc-"), "head.tar");
      writeFileSync(tar, tarBytesOf(S.archive!));
      const manifestEntry = readTarEntries(tar)[1]!;
      expect(manifestEntry.name).toEndWith(manifestPath(2));
      writeFileSync(tar, tarBytesOf(S.archive!).subarray(0, manifestEntry.dataOffset + Math.floor(manifestEntry.size / 2)));
      const b = new ArchiveBackend(tar, tar);
      expectCode(await rejected(new Store(b).info()), "E_STORE_DAMAGED", /truncated/);
      expectCode(await rejected(new Store(b).manifest(2)), "E_STORE_DAMAGED", /truncated/);
    }, 60_000);
  }

  // ---- the store on top

  test("the store on top: info, manifestIds and checkpoint 2's manifest, as the folder has them", async () => {
    const store = new Store(S.open());
    expect(await store.exists()).toBe(true);
    const info = await store.info();
    expect(info.node_id).toBe(nodeId);
    expect(info.block_size).toBe(localInfo.block_size);
    expect(sameStore(info, localInfo)).toBe(true);
    // only the node's own folder holds the seed
    expect(info.quick_hash_seed !== undefined).toBe(c.localDir);
    expect(await store.manifestIds()).toEqual(S.ids);
    const m = await store.manifest(2);
    expect(m.db_size_bytes).toBe(m2.db_size_bytes);
    expect([m.id, m.node_id, m.page_size, m.page_count, m.block_count, m.segments, m.db_totals]).toEqual([2, nodeId, m2.page_size, m2.page_count, m2.block_count, m2.segments, m2.db_totals]);
    expect(await store.checkpointIds(2)).toEqual(S.ids);
    expectCode(await rejected(store.checkpointIds(7)), "E_NOT_FOUND");
    if (S.ids.includes(1)) expect((await store.manifest(1)).id).toBe(1);
    else expectCode(await rejected(store.manifest(1)), "E_STORE_MISSING");
  }, 60_000);

  test("restore-equivalence: checkpoint 2's block list (and image) is the same whatever holds it", async () => {
    const b = S.open();
    const store = new Store(b);
    const m = await store.manifest(2);
    if (c.random) {
      const reader = store.randomReader("the test");
      const list = await reader.blockList(m);
      expect(list.length).toBe(m.block_count * SEGMENT_ENTRY_BYTES);
      expect(listDigests(list)).toEqual(digests2);
      if (c.localDir) expect(sha256(await readImage(reader, m))).toBe(imageSha2);
      else {
        // a sample of blocks, each read and checked against its digest
        const where = await reader.locateSome(m.packs, [...new Set([digests2[0]!, digests2[1]!, digests2.at(-1)!, digests2[Math.floor(digests2.length / 2)]!])]);
        for (const [d, loc] of where) expect(toHex(blockDigest(await reader.block(loc)))).toBe(d);
        expect(where.size).toBeGreaterThanOrEqual(3);
      }
    } else {
      const got = await streamCheckpoint(b);
      expect(got.manifest.id).toBe(2);
      expect(got.digests).toEqual(digests2);
      expect(got.sha).toBe(imageSha2);
    }
  }, 60_000);

  // ---- damage

  if (c.random) {
    test("a flipped byte in a pack index makes reader.index() of that pack throw E_STORE_DAMAGED", async () => {
      const [damagedPack, otherPack] = m2.packs as [string, string];
      const b = await S.copyWith!(indexPath(damagedPack), (f) => flipByte(f));
      const reader = new StoreReader(b);
      expectCode(await rejected(reader.index(damagedPack)), "E_STORE_DAMAGED", new RegExp(`${damagedPack}\\.idx: `));
      expect((await reader.index(otherPack)).count).toBeGreaterThan(0);
      // and so does everything that needs it
      const m = await reader.manifest(2);
      expectCode(await rejected(reader.blockList(m)), "E_STORE_DAMAGED");
      // the original is untouched
      expect((await new StoreReader(S.open()).index(damagedPack)).count).toBeGreaterThan(0);
    }, 60_000);
  }

  if (c.stream) {
    test("a flipped byte in one of the archive's data blocks makes streamBlocks throw E_STORE_DAMAGED", async () => {
      const damaged = archiveWithDamagedBlock(S.archive!);
      const b = new ArchiveBackend(damaged, damaged);
      await b.checkWhole();
      const seen: number[] = [];
      expectCode(await rejected(new Store(b).streamer!.streamBlocks((block) => void seen.push(block))), "E_STORE_DAMAGED", /\.pack/);
      // what came before the damaged block was handed over; the damaged one was not
      expect(seen.length).toBeLessThan(digests2.length);
      expect(seen).toEqual(seen.map((_, i) => i));
    }, 60_000);
  }

  // ---- spec

  test("spec round trip: openBackend(backend.spec()) reads the same bytes", async () => {
    const b = S.open();
    const spec = b.spec!();
    expect(spec.kind).toBe(c.stream ? "archive" : c.localDir ? "dir" : "s3");
    // plain data: it survives a structured clone (a worker's message)
    const again = openBackend(structuredClone(spec));
    expect(again.location).toBe(b.location);
    expect(again.spec!()).toEqual(spec);
    if (c.random) {
      expect(await again.random!.get(STORE_FILE, 1 << 16)).toEqual(await b.random!.get(STORE_FILE, 1 << 16));
      const { path, size } = largestPack(S.files!());
      expect(sha256(await again.random!.getRange(path, 0, size))).toBe(sha256(S.bytesOf!(path)));
      expect(await again.random!.list("")).toEqual(await b.random!.list(""));
    } else {
      const [x, y] = [await readEntries(again), await readEntries(b)];
      expect(x.map((e) => [e.path, e.size, sha256(e.body)])).toEqual(y.map((e) => [e.path, e.size, sha256(e.body)]));
    }
  }, 60_000);

  // ---- the readers' hold

  if (c.readers && !c.localDir) {
    test("readers.hold() registers a lease in the store (leases/), deleted on release; a Store's hold is one", async () => {
      const b = S.open();
      const leases = async () => (await b.random!.list("leases/")).length;
      expect(await leases()).toBe(0);
      const hold = await b.readers!.hold();
      const second = await b.readers!.hold(); // readers do not exclude each other
      expect(await leases()).toBe(2);
      await hold.release();
      await second.release();
      expect(await leases()).toBe(0);
      const h = await new Store(b).hold();
      expect(h).not.toBe(NO_HOLD);
      expect(await leases()).toBe(1);
      await h.release();
      expect(await leases()).toBe(0);
    }, 60_000);
  }
  if (c.readers && c.localDir) {
    test("readers.hold() takes the readers lock: an exclusive lock on cairn-store.readers is refused while held, taken after release", async () => {
      const b = S.open();
      const lockFile = join(b.localDir!, STORE_READERS_LOCK_FILE);
      const busy = () => new CairnError("E_BUSY", "held");
      const hold = await b.readers!.hold();
      const second = await b.readers!.hold(); // shared: readers do not exclude each other
      expect(() => FileLock.exclusive(lockFile, busy)).toThrow("held");
      hold.release();
      expect(() => FileLock.exclusive(lockFile, busy)).toThrow("held");
      second.release();
      const gc = FileLock.exclusive(lockFile, busy);
      // while the collector holds it, a reader waits, then gives up (E_BUSY)
      const t0 = performance.now();
      expectCode(await rejected(b.readers!.hold(300)), "E_BUSY", /collecting garbage/);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
      gc.release();
      const third = await b.readers!.hold(0);
      expect(FileLock.isHeld(lockFile)).toBe(false);
      third.release();
      const store = new Store(b);
      const h = await store.hold();
      expect(h).not.toBe(NO_HOLD);
      expect(() => FileLock.exclusive(lockFile, busy)).toThrow("held");
      h.release();
      FileLock.exclusive(lockFile, busy).release();
    }, 60_000);
  }
  if (!c.readers) {
    test("has no readers' hold: a Store on it holds nothing", async () => {
      const b = S.open();
      expect(b.readers).toBeUndefined();
      const h = await new Store(b).hold();
      expect(h).toBe(NO_HOLD);
      h.release();
    });
  }
});

test("the store compared holds zstd and raw blocks, so the suite compared both kinds across backends", async () => {
  // the folder's packs hold both zstd and raw blocks, so both were compared above
  const reader = new StoreReader(new DirBackend(storeDir));
  let zstd = 0;
  let raw = 0;
  for (const p of m2.packs) {
    const idx = await reader.index(p);
    for (let i = 0; i < idx.count; i++) {
      if (readIndexEntry(idx, i).flags & FLAG_ZSTD) zstd++;
      else raw++;
    }
  }
  expect(zstd).toBeGreaterThan(0);
  expect(raw).toBeGreaterThan(0);
  expect(digests2.length).toBe(m2.block_count);
}, 60_000);
