/**
 * Hostile input, each test one problem an adversarial pass found (and its fix): manifests
 * whose checksums are valid but whose fields are not (impossible sizes, pack "ids" that are
 * paths out of the store), stores and archives that declare more than they hold (a zstd block
 * that inflates to a gigabyte, a tar entry of 3 GiB), and small ones: a chunk size of twenty
 * hex digits, a YAML alias bomb, an over-long admin socket path, and a restore holding a
 * target that another restore or a node is then started on.
 *
 * Memory is measured as the peak RSS of the command (GNU time's %M).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BLOCK_KIND_DATA,
  decodeIndex,
  encodeIndex,
  entryKind,
  FLAG_ZSTD,
  INDEX_ENTRY_BYTES,
  PACK_MAGIC,
  readIndexEntry,
  writeIndexEntry,
} from "../../src/store/pack.ts";
import { indexPath, manifestPath, packPath } from "../../src/store/format.ts";
import { createCheckpoint, putAll, verify } from "../helpers/checkpoint.ts";
import { waitFor } from "../helpers/wait.ts";
import { rewriteManifest } from "../helpers/faults.ts";
import { BINARY, freePort, pseudoRandomBytes, runCairn, sha256, startNode } from "../helpers/node.ts";
import { rawExchange } from "../helpers/raw.ts";
import { dirState, replacedDirsOf, restore, spawnRestore, stagingDirOf, restoreTarget } from "../helpers/restore.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

// Every node is stopped in a `finally`; its exit code is checked only when the test body got to
// its end (`ok`), so that a failure in the body is the one reported, not a masking exit code.

/** Peak RSS allowed to a command reading a crafted input (the old code took 2-3.3 GB). */
const RSS_LIMIT_KIB = 300 * 1024;

/** SQLite's limit (2^32 - 2 pages of 64 KiB): no database is larger. */
const MAX_DB_BYTES = 0xfffffffe * 65536;

/** A node's folder with two checkpoints (2 adds a pack to 1's), stopped. */
let tpl = "";

beforeAll(async () => {
  tpl = mkdtempSync("/tmp/cairn-hin-");
  const node = await startNode(tpl, { extraYaml: "checkpoint_config:\n  max_db_checkpoints: 0\n  sync: false\n" });
  try {
    await putAll(node.url, Array.from({ length: 40 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) })));
    expect(createCheckpoint(node)).toBe(1);
    await putAll(node.url, Array.from({ length: 5 }, (_, i) => ({ id: `n${i}`, body: pseudoRandomBytes(900 + i, 20_000) })));
    expect(createCheckpoint(node)).toBe(2);
  } finally {
    expect(await node.stop()).toBe(0);
  }
}, 30_000);

afterAll(() => {
  if (tpl) rmSync(tpl, { recursive: true, force: true });
});

/** A copy of the template's store, as `<new tmp dir>/checkpoints`. */
function copyStore(): string {
  const store = join(tmpDir(), "checkpoints");
  cpSync(join(tpl, "checkpoints"), store, { recursive: true });
  return store;
}

function manifestOf(store: string, id: number): { packs: string[]; page_size: number } & Record<string, unknown> {
  return JSON.parse(readFileSync(join(store, manifestPath(id)), "utf8"));
}

function target(): { dbPath: string; untouched: () => void } {
  return restoreTarget(join(tpl, "db"), tmpDir());
}

/** Run the binary under GNU time: exit code, output, and the peak RSS in KiB. */
function withPeakRss(args: string[], timeoutMs = 60_000): { code: number; stdout: string; stderr: string; rssKiB: number } {
  const r = Bun.spawnSync(["/usr/bin/time", "-f", "%M", BINARY, ...args], { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  const lines = r.stderr.toString().trimEnd().split("\n");
  const rssKiB = Number(lines.pop());
  // GNU time says so when the command failed
  if (lines.at(-1)?.startsWith("Command exited with non-zero status")) lines.pop();
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: lines.join("\n"), rssKiB };
}

// ---- 1. manifests with a valid checksum and impossible fields --------------------------------

describe("a manifest with an impossible database size (valid checksum)", () => {
  const variants: { name: string; patch: (m: { page_size: number }) => Record<string, number> }[] = [
    { name: "db_size_bytes 1.1e15", patch: () => ({ db_size_bytes: 1.1e15 }) },
    {
      name: "db_size_bytes ~1.1e15 with page_count to agree",
      patch: (m) => ({ db_size_bytes: Math.floor(1.1e15 / m.page_size) * m.page_size, page_count: Math.floor(1.1e15 / m.page_size) }),
    },
    { name: "db_size_bytes -8192", patch: () => ({ db_size_bytes: -8192 }) },
    { name: "db_size_bytes -8192 with page_count to agree", patch: (m) => ({ db_size_bytes: -8192, page_count: -8192 / m.page_size }) },
  ];

  test.each(variants)("$name: verify exits 1 naming the manifest, list shows no such size, restore exits 1 leaving the target as it was", ({ patch }) => {
    const store = copyStore();
    const p = patch(manifestOf(store, 2));
    const file = rewriteManifest(store, 2, p);

    // (the code before the fix: "Checkpoint 2: OK (..., 1.1 PB)" or "-8192.0 B", exit 0)
    const v = verify(store);
    console.log(`verify, manifest 2 patched with ${JSON.stringify(p)}: exit ${v.code}\n${v.stdout}${v.stderr}`);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("Checkpoint 1: OK");
    expect(v.stdout).toContain("Checkpoint 2: DAMAGED");
    expect(v.stdout).toContain(file);
    expect(v.stdout).toMatch(/impossible database size|page count/);

    // the listing may warn that checkpoint 2 cannot be read; it never shows a size no database has
    const l = runCairn(["list-db-checkpoint", store, "--json"]);
    expect(l.code).toBe(0);
    const listed = JSON.parse(l.stdout) as { id: number; size_bytes: number }[];
    for (const c of listed) {
      expect(c.size_bytes).toBeGreaterThanOrEqual(0);
      expect(c.size_bytes).toBeLessThanOrEqual(MAX_DB_BYTES);
    }
    expect(listed.map((c) => c.id)).toContain(1);
    if (!listed.some((c) => c.id === 2)) expect(l.stderr).toContain(file);
    const plain = runCairn(["list-db-checkpoint", store]);
    expect(plain.code).toBe(0);
    expect(plain.stdout).not.toMatch(/Size: -|PB/);

    const t = target();
    const r = restore(store, t.dbPath, ["--checkpoint-id", "2", "--force"]);
    console.log(`restore --checkpoint-id 2: exit ${r.code}; ${r.stderr.trim()}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(file);
    t.untouched();
  }, 30_000);
});

/** Files whose every read, write or removal shows: atime set before mtime, so (relatime) a read moves it. */
function plantVictim(dir: string, name: string, data: Uint8Array): { path: string; intact: () => void } {
  const path = join(dir, name);
  writeFileSync(path, data, { mode: 0o600 });
  const now = Date.now() / 1000;
  utimesSync(path, now - 2 * 86_400, now - 86_400);
  const before = statSync(path);
  const digest = sha256(data);
  return {
    path,
    intact: () => {
      expect(existsSync(path)).toBe(true);
      const st = statSync(path);
      // not read (atime), not written (mtime, size); and only then its content, which reads it
      expect({ atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, size: st.size, uid: st.uid }).toEqual({
        atimeMs: before.atimeMs,
        mtimeMs: before.mtimeMs,
        size: before.size,
        uid: before.uid,
      });
      expect(sha256(readFileSync(path))).toBe(digest);
    },
  };
}

/**
 * A pack index and pack that the old code accepted: one 100-byte block that no checkpoint
 * needs, so a garbage collection that trusted the manifest would "rewrite" the pack (to an
 * empty one) and remove these two files.
 */
function victimPackFiles(dir: string, base: string): { idx: ReturnType<typeof plantVictim>; pack: ReturnType<typeof plantVictim> } {
  const pack = new Uint8Array(8 + 100);
  pack.set(new TextEncoder().encode(PACK_MAGIC), 0);
  pack.set(pseudoRandomBytes(7, 100), 8);
  const entries = new Uint8Array(INDEX_ENTRY_BYTES);
  writeIndexEntry(entries, 0, { digest: pseudoRandomBytes(8, 32), offset: 8, storedLength: 100, rawLength: 100, flags: 0 });
  return {
    idx: plantVictim(dir, `${base}.idx`, encodeIndex(pack.length, entries, 1)),
    pack: plantVictim(dir, `${base}.pack`, pack),
  };
}

describe("a manifest naming a pack that is a path, not a pack id (valid checksum)", () => {
  // packs/<first two characters>/<id>.idx: "../victim" is packs/../../victim.idx, beside the store
  test.each(["../victim", "../../../../etc/passwd", "0123456789abcdef0123456789ABCDEF", "x"])(
    "packs holds %p: verify exits 1 naming the manifest, restore exits 1, no file outside the store is read",
    (bad) => {
      const store = copyStore();
      const outside = join(store, "..");
      const victims = victimPackFiles(outside, "victim");
      expect(join(store, indexPath("../victim"))).toBe(victims.idx.path);
      const file = rewriteManifest(store, 2, { packs: [...manifestOf(store, 2).packs, bad] });

      // (the code before the fix read packs/../../victim.idx and said "Checkpoint 2: OK", or
      // named /etc/passwd.idx as missing, never the manifest)
      const v = verify(store);
      console.log(`verify with ${JSON.stringify(bad)} in packs: exit ${v.code}\n${v.stdout}${v.stderr}`);
      expect(v.code).toBe(1);
      expect(v.stdout).toContain("Checkpoint 1: OK");
      expect(v.stdout).toContain("Checkpoint 2: DAMAGED");
      expect(v.stdout).toContain(`${file}: manifest names a pack that is not a pack id`);

      const dbPath = join(tmpDir(), "fresh");
      const r = restore(store, dbPath, ["--checkpoint-id", "2"]);
      console.log(`restore --checkpoint-id 2: exit ${r.code}; ${r.stderr.trim()}`);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(file);
      expect(existsSync(dbPath)).toBe(false);

      victims.idx.intact();
      victims.pack.intact();
    },
    30_000,
  );

  test("a node's retention and garbage collection on that store leave the file outside it alone", async () => {
    const dir = tmpDir();
    const yaml = "checkpoint_config:\n  max_db_checkpoints: 2\n  sync: false\n";
    let node = await startNode(dir, { extraYaml: yaml });
    let ok = false;
    try {
      await putAll(node.url, Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, body: pseudoRandomBytes(i + 1, 20_000) })));
      expect(createCheckpoint(node)).toBe(1);
      await putAll(node.url, [{ id: "x", body: pseudoRandomBytes(99, 20_000) }]);
      expect(createCheckpoint(node)).toBe(2);
      ok = true;
    } finally {
      const code = await node.stop();
      if (ok) expect(code).toBe(0);
    }
    const store = join(dir, "checkpoints");
    // packs/../../victim.{idx,pack} = <dir>/victim.{idx,pack}: the node's own folder, outside its store
    const victims = victimPackFiles(dir, "victim");
    rewriteManifest(store, 2, { packs: [...manifestOf(store, 2).packs, "../victim"] });

    // checkpoint 3 makes retention remove checkpoint 1, and the collection then looks at what 2 and 3 name
    node = await startNode(dir, { extraYaml: yaml });
    ok = false;
    try {
      expect(createCheckpoint(node)).toBe(3);
      await waitFor(() => /garbage collection/.test(node.logs()), { timeoutMs: 15_000, what: "the node to log its garbage collection" });
      ok = true;
    } finally {
      const code = await node.stop();
      if (ok) expect(code).toBe(0);
    }
    console.log(`node log:\n${node.logs()}`);
    // (the code before the fix: "garbage collection: 0 pack(s) removed, 1 rewritten", and both files gone)
    expect(node.logs()).toMatch(/garbage collection .*skipped.*not a pack id/);
    victims.idx.intact();
    victims.pack.intact();
  }, 60_000);
});

// ---- 2. memory sized by what the input declares ----------------------------------------------

/**
 * One zstd frame (RFC 8878) of `bytes` zero bytes made of RLE blocks of 128 KiB (4 bytes
 * each): ~32 KiB per GiB. With `declare`, its header states the content size (4 bytes);
 * without, it states none (as a streaming compressor writes it).
 */
function zeroFrame(bytes: number, declare: boolean): Uint8Array {
  const BLOCK = 128 * 1024;
  const n = Math.ceil(bytes / BLOCK);
  // magic, frame header descriptor (FCS 4 bytes, or none), window descriptor (2^17 bytes)
  const header = [0x28, 0xb5, 0x2f, 0xfd, declare ? 0x80 : 0x00, 0x38];
  if (declare) header.push(bytes & 0xff, (bytes >>> 8) & 0xff, (bytes >>> 16) & 0xff, (bytes >>> 24) & 0xff);
  const out = new Uint8Array(header.length + n * 4);
  out.set(header, 0);
  for (let i = 0; i < n; i++) {
    const size = i === n - 1 ? bytes - BLOCK * (n - 1) : BLOCK;
    const bh = (size << 3) | (1 << 1) | (i === n - 1 ? 1 : 0); // RLE block, last flag
    const o = header.length + i * 4;
    out[o] = bh & 0xff;
    out[o + 1] = (bh >>> 8) & 0xff;
    out[o + 2] = (bh >>> 16) & 0xff;
    out[o + 3] = 0; // the repeated byte
  }
  return out;
}

describe("a zstd block that inflates to 1 GiB (a crafted store)", () => {
  test.each([
    { name: "the frame declares 1 GiB", declare: true },
    { name: "the frame declares no size", declare: false },
  ])("$name: verify and restore exit 1 naming the pack, with a peak RSS under 300 MB", async ({ declare }) => {
    // the frame is real zstd (checked on 1 MiB of the same making)
    const sample = Bun.zstdDecompressSync(zeroFrame(1 << 20, declare));
    expect(sample.length).toBe(1 << 20);
    expect(sample.every((b) => b === 0)).toBe(true);

    const dir = tmpDir();
    const node = await startNode(dir, { extraYaml: "checkpoint_config:\n  compression: zstd\n  sync: false\n" });
    let ok = false;
    try {
      await putAll(node.url, Array.from({ length: 20 }, (_, i) => ({ id: `b${i}`, body: new TextEncoder().encode(`blob ${i} `.repeat(3000)) })));
      expect(createCheckpoint(node)).toBe(1);
      ok = true;
    } finally {
      const code = await node.stop();
      if (ok) expect(code).toBe(0);
    }
    const store = join(dir, "checkpoints");
    const packs = manifestOf(store, 1).packs;
    expect(packs).toHaveLength(1);
    const packId = packs[0]!;
    const idxFile = join(store, indexPath(packId));
    const packFile = join(store, packPath(packId));
    const idx = decodeIndex(new Uint8Array(readFileSync(idxFile)), idxFile);
    const pack = new Uint8Array(readFileSync(packFile));
    // the last compressed data block: its bytes become the bomb (appended to the pack), and its
    // index entry points there, claiming 1 MiB raw (an index may say up to that for a block)
    let k = -1;
    for (let i = 0; i < idx.count; i++) {
      const e = readIndexEntry(idx, i);
      if (e.flags & FLAG_ZSTD && entryKind(e.flags) === BLOCK_KIND_DATA) k = i;
    }
    expect(k).toBeGreaterThanOrEqual(0);
    const bomb = zeroFrame(1 << 30, declare);
    const entry = readIndexEntry(idx, k);
    const entries = new Uint8Array(idx.entries);
    writeIndexEntry(entries, k, { ...entry, digest: entry.digest.slice(), offset: pack.length, storedLength: bomb.length, rawLength: 1 << 20 });
    const bombed = new Uint8Array(pack.length + bomb.length);
    bombed.set(pack, 0);
    bombed.set(bomb, pack.length);
    writeFileSync(packFile, bombed);
    writeFileSync(idxFile, encodeIndex(bombed.length, entries, idx.count));
    console.log(`pack ${packId}: block ${k} is now a ${bomb.length}-byte frame of 1 GiB (${declare ? "declared" : "undeclared"})`);

    // (the code before the fix inflated it: ~2.1 GB peak, ~8 s, "does not match its digest")
    const v = withPeakRss(["verify-db-checkpoint", store]);
    console.log(`verify: exit ${v.code}, peak RSS ${(v.rssKiB / 1024).toFixed(0)} MB\n${v.stdout}${v.stderr}`);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("Checkpoint 1: DAMAGED");
    expect(v.stdout).toContain(packFile);
    expect(v.rssKiB).toBeLessThan(RSS_LIMIT_KIB);

    const dbPath = join(tmpDir(), "restored");
    const r = withPeakRss(["restore", "--db-checkpoint-path", store, "--db-path", dbPath]);
    console.log(`restore: exit ${r.code}, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MB; ${r.stderr.trim()}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(packFile);
    expect(r.rssKiB).toBeLessThan(RSS_LIMIT_KIB);
    expect(existsSync(join(dbPath, "cairn.db"))).toBe(false);
  }, 60_000);
});

/** A ustar header for a regular file `name` of `size` bytes (size in 11 octal digits: < 8 GiB). */
function tarHeader(name: string, size: number): Uint8Array {
  const h = new Uint8Array(512);
  const put = (s: string, at: number) => h.set(new TextEncoder().encode(s), at);
  put(name, 0);
  put("0000600\0", 100);
  put("0000000\0", 108);
  put("0000000\0", 116);
  put(`${size.toString(8).padStart(11, "0")}\0`, 124);
  put("00000000000\0", 136);
  put("        ", 148); // the checksum counts itself as spaces
  put("0", 156);
  put("ustar\0", 257);
  put("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  put(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

describe("an archive whose first entry declares 3 GiB", () => {
  test("list-db-checkpoint exits 1 naming the entry, with a peak RSS under 300 MB", () => {
    const SIZE = 3 * 1024 ** 3;
    const file = join(tmpDir(), "bomb.tar.zst");
    // the header as one zstd frame, then 3 GiB of zeros and the end-of-archive blocks as another
    writeFileSync(file, Buffer.concat([Bun.zstdCompressSync(tarHeader("cairn-checkpoint-1/cairn-store.json", SIZE)), zeroFrame(SIZE + 1024, false)]));
    expect(statSync(file).size).toBeLessThan(200 * 1024);
    // (the code before the fix read the entry whole: ~3.3 GB peak, ~20 s, "not valid JSON")
    const r = withPeakRss(["list-db-checkpoint", file]);
    console.log(`list of a ${statSync(file).size}-byte archive declaring a 3 GiB cairn-store.json: exit ${r.code}, peak RSS ${(r.rssKiB / 1024).toFixed(0)} MB; ${r.stderr.trim()}`);
    expect(r.code).toBe(1);
    expect(r.rssKiB).toBeLessThan(RSS_LIMIT_KIB);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toContain(`cairn-store.json is ${SIZE} bytes`);
  }, 60_000);
});

// ---- 7. small ones ------------------------------------------------------------------------------

describe("a chunked PUT whose chunk size is twenty hex digits", () => {
  test("gets no 2xx, stores nothing, and the node logs no error without a message", async () => {
    const node = await startNode(tmpDir());
    let ok = false;
    try {
      const port = Number(new URL(node.url).port);
      const r = await rawExchange(
        { port },
        "PUT /v1/blobs/chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabcdefgh\r\n",
        { timeoutMs: 5_000, untilStatus: true },
      );
      console.log(`reply: ${JSON.stringify(r.text.split("\r\n")[0])}, closed ${r.closed}`);
      if (r.status !== undefined) expect(r.status).toBeGreaterThanOrEqual(400);
      const get = await fetch(`${node.url}/v1/blobs/chunky`);
      await get.arrayBuffer();
      expect(get.status).toBe(404);
      // the node still serves, and has had its chance to log the failure
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      // (the code before the fix logged "ERROR PUT /v1/blobs/chunky: " and nothing after it)
      expect(node.logs()).not.toMatch(/ERROR +PUT \/v1\/blobs\/\S*: *$/m);
      ok = true;
    } finally {
      const code = await node.stop();
      if (ok) expect(code).toBe(0);
    }
  }, 30_000);
});

describe("config files that must be refused before anything is done", () => {
  test("a YAML alias bomb (billion laughs): cairn run exits 2 saying the YAML is invalid", () => {
    const dir = tmpDir();
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    const names = "abcdefghi";
    for (let i = 1; i < names.length; i++) lines.push(`${names[i]}: &${names[i]} [${Array(9).fill(`*${names[i - 1]}`).join(",")}]`);
    const file = join(dir, "cairn.yaml");
    writeFileSync(file, `storage_path: ./db\nadmin_socket_path: ./admin.socket\nrest_api_address: 127.0.0.1:${freePort()}\n${lines.join("\n")}\n`);
    const t0 = performance.now();
    const r = runCairn(["run", "--config", file], { timeoutMs: 20_000 });
    console.log(`alias bomb: exit ${r.code} in ${(performance.now() - t0).toFixed(0)} ms; ${r.stderr.trim()}`);
    // (the code before the fix: exit 1, an internal error from the YAML library)
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(file);
    expect(r.stderr).toContain("invalid YAML");
    expect(existsSync(join(dir, "db"))).toBe(false);
  });

  test("an admin_socket_path over 107 bytes: cairn run exits 2 and creates no database", () => {
    const dir = tmpDir();
    const socket = `./${"s".repeat(110)}.socket`;
    const file = join(dir, "cairn.yaml");
    writeFileSync(file, `storage_path: ./db\nadmin_socket_path: ${socket}\nrest_api_address: 127.0.0.1:${freePort()}\n`);
    expect(Buffer.byteLength(join(dir, socket))).toBeGreaterThan(107);
    const r = runCairn(["run", "--config", file], { timeoutMs: 20_000 });
    console.log(`long socket path: exit ${r.code}; ${r.stderr.trim()}`);
    // (the code before the fix created db/cairn.db first, then failed to bind)
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("admin_socket_path");
    expect(existsSync(join(dir, "db", "cairn.db"))).toBe(false);
  });
});

describe("a restore holding its target", () => {
  test("a second restore into it, and a node on it, are refused naming the restore (not a node)", async () => {
    const store = copyStore();
    const dbPath = join(tmpDir(), "target");
    const release = join(tmpDir(), "release");
    const first = spawnRestore(store, dbPath, [], { CAIRN_TEST_PAUSE_POINT: "restore:before-swap", CAIRN_TEST_PAUSE_RELEASE_FILE: release });
    const pid = first.proc.pid;
    try {
      // paused with the target's lock held (the code before the fix paused 3 s there, saying nothing:
      // the lock file naming the pid shows it holds the target then)
      await waitFor(
        () =>
          first.stderr().includes("cairn: test pause point restore:before-swap reached") ||
          (existsSync(join(dbPath, "cairn.lock")) && readFileSync(join(dbPath, "cairn.lock"), "utf8").startsWith(`${pid}`)) ||
          first.proc.exitCode !== null,
        { timeoutMs: 20_000, what: "the first restore to hold its target" },
      );
      expect(first.proc.exitCode).toBeNull();

      const second = restore(store, dbPath, ["--force"]);
      console.log(`second restore: exit ${second.code}; ${second.stderr.trim()}`);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`a restore (pid ${pid})`);
      expect(second.stderr).not.toContain("a node is running");

      const cfgDir = tmpDir();
      const cfg = join(cfgDir, "cairn.yaml");
      writeFileSync(cfg, `storage_path: ${dbPath}\nadmin_socket_path: ${join(cfgDir, "admin.socket")}\nrest_api_address: 127.0.0.1:${freePort()}\n`);
      const run = runCairn(["run", "--config", cfg], { timeoutMs: 20_000 });
      console.log(`cairn run on it: exit ${run.code}; ${run.stderr.trim()}`);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(`a restore (pid ${pid})`);
      expect(run.stderr).not.toContain("a node is running");
    } finally {
      writeFileSync(release, "");
      const done = await first.done();
      console.log(`first restore: exit ${done.code}; ${done.stdout.trim()}`);
    }
    expect(first.proc.exitCode).toBe(0);
    expect(existsSync(join(dbPath, "cairn.db"))).toBe(true);
  }, 60_000);
});
