/**
 * Encrypted stores, the compiled binary end to end, with a real S3-protocol server (s3rver) on
 * 127.0.0.1: a node with checkpoint_config.encryption writes only ciphertext into its local
 * store, its remote prefix and the archives it exports (grepped for the blobs' contents and
 * ids); a new host restores with the key and is refused without it or with a wrong one (the
 * target untouched); damage in an encrypted pack is found by verify and refused by restore;
 * key add, remove and rotate; the same blob in two stores gets unrelated names; keys never
 * appear in logs, status or metrics; and the node never mixes plaintext and ciphertext.
 *
 * s3rver runs inside this test process, so every command that talks to it is spawned
 * asynchronously.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { openStoreKeys, readKeyFile } from "../../src/store/crypto.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { decodeStoreInfo } from "../../src/store/format.ts";
import { toHex } from "../../src/store/hash.ts";
import { readIndexEntry } from "../../src/store/pack.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { adminAsync, auditDb, checkpointStatus, createCheckpointAsync, flipByte, putAll } from "../helpers/checkpoint.ts";
import { BINARY, freePort, type NodeHandle, pseudoRandomBytes, sha256, startNode } from "../helpers/node.ts";
import { type S3Server, startS3 } from "../helpers/s3.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();
setDefaultTimeout(90_000);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the binary without blocking this process (s3rver answers from here). */
async function cairn(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<Run> {
  const p = Bun.spawn([BINARY, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code: p.signalCode ? null : code, stdout, stderr };
}

let s3: S3Server;
let s3Dir = "";

beforeAll(async () => {
  s3Dir = mkdtempSync("/tmp/cairn-s3e-");
  s3 = await startS3(s3Dir);
});

afterAll(async () => {
  await s3?.stop();
  if (s3Dir) rmSync(s3Dir, { recursive: true, force: true });
});

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

/** The files under `dirs` that contain any of `needles`, with the needle found. */
function containing(dirs: string[], needles: string[]): string[] {
  const hits: string[] = [];
  for (const f of dirs.flatMap((d) => (statSync(d).isDirectory() ? filesUnder(d) : [d]))) {
    const data = readFileSync(f);
    for (const n of needles) if (data.includes(n)) hits.push(`${f}: ${n}`);
  }
  return hits;
}

const MARK = "PLAINTEXT-MARKER";
/** A blob whose bytes carry a marker (text, so that zstd keeps it compressible) and whose id does too. */
function markedBlobs(n: number, tag: string): { id: string; body: Uint8Array }[] {
  return Array.from({ length: n }, (_, i) => {
    const text = `${MARK}-${tag}-${i} `.repeat(400);
    const body = new Uint8Array(Buffer.concat([Buffer.from(text), pseudoRandomBytes(i + 1, 4000)]));
    return { id: `secret-id-${tag}-${i}`, body };
  });
}

async function newKey(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  const r = await cairn(["key", "generate", "--output", path]);
  expect(r.code).toBe(0);
  return path;
}

const encryptedYaml = (keyPath: string, extra = "") => `checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n  max_db_checkpoints: 3\n  compression: zstd\n  encryption:\n    key_file: ${keyPath}\n${extra}`;

describe("an encrypted node: local store, remote prefix and archives hold ciphertext only", () => {
  let dir = "";
  let node: NodeHandle;
  let key = "";
  const url = () => s3.url("enc/a");
  const expected = new Map<string, string>();

  beforeAll(async () => {
    dir = mkdtempSync("/tmp/cairn-enc-");
    key = await newKey(dir, "checkpoint.key");
    node = await startNode(dir, {
      env: s3.env,
      extraYaml: encryptedYaml(key, `  remote:\n    url: ${url()}\n    max_remote_checkpoints: 2\n    retry_backoff_secs: 1\n`),
    });
    const blobs = markedBlobs(200, "a");
    await putAll(node.url, blobs);
    for (const b of blobs) expected.set(b.id, sha256(b.body));
    expect(await createCheckpointAsync(node)).toBe(1);
    const changed = markedBlobs(20, "b");
    await putAll(node.url, changed);
    for (const b of changed) expected.set(b.id, sha256(b.body));
    expect(await createCheckpointAsync(node)).toBe(2);
    await waitFor(async () => (await checkpointStatus(node)).remote?.last_pushed_id === 2, { what: "checkpoint 2 copied", detail: () => node.logs() });
  });

  afterAll(async () => {
    if (node && node.proc.exitCode === null) expect(await node.stop()).toBe(0);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("no blob content or id is in any byte of the store, the s3rver folder or an exported archive; the key is in no log, status or metric", async () => {
    const tar = join(dir, "export.tar");
    const ex = await cairn(["export-db-checkpoint", join(dir, "ckpt"), "--checkpoint-id", "2", "--output", tar, "--key-file", key]);
    expect(ex.stderr).not.toContain("error");
    expect(ex.code).toBe(0);
    const needles = [MARK, "secret-id-"];
    expect(containing([join(dir, "ckpt"), s3Dir, tar], needles)).toEqual([]);
    // what stays readable says what the store is, and nothing of what it holds
    const info = decodeStoreInfo(readFileSync(join(dir, "ckpt", "cairn-store.json")), "info");
    expect(info.encryption?.scheme).toBe("aes-256-gcm+blake3-keyed/1");
    const k = readKeyFile(key).key;
    const secrets = [Buffer.from(k).toString("base64url"), Buffer.from(k).toString("hex"), Buffer.from(k).toString("base64")];
    const status = JSON.stringify(await checkpointStatus(node));
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    for (const s of secrets) {
      expect(node.logs()).not.toContain(s);
      expect(status).not.toContain(s);
      expect(metrics).not.toContain(s);
      expect(readFileSync(join(dir, "ckpt", "cairn-store.json"), "utf8")).not.toContain(s);
    }
    // the archive reads back with the key, and only with it
    const v = await cairn(["verify-db-checkpoint", tar, "--key-file", key]);
    expect(v.stdout).toContain("Checkpoint 2: OK");
    expect(v.code).toBe(0);
    expect((await cairn(["verify-db-checkpoint", tar])).stderr).toBe(`error: the store at ${tar} is encrypted. Try: --key-file FILE (or CAIRN_KEY_FILE)\n`);
    const target = join(tmpDir("cairn-ea-"), "db");
    const r = await cairn(["restore", "--db-checkpoint-path", tar, "--db-path", target, "--key-file", key]);
    expect(r.code).toBe(0);
    expect(auditDb(join(target, "cairn.db")).blobs).toEqual(expected);
  });

  test("a new host restores from s3:// with the key; without it or with another key it is refused and the target stays untouched", async () => {
    const host = tmpDir("cairn-eh-");
    const target = join(host, "db");
    const none = await cairn(["restore", "--db-checkpoint-path", url(), "--db-path", target], s3.env);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(`error: the store at ${url()} is encrypted. Try: --key-file FILE (or CAIRN_KEY_FILE)\n`);
    const other = await newKey(host, "other.key");
    const wrong = await cairn(["restore", "--db-checkpoint-path", url(), "--db-path", target, "--key-file", other], s3.env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toStartWith(`error: the key file ${other} does not open the store at ${url()}`);
    expect(existsSync(target)).toBe(false);
    for (const args of [["list-db-checkpoint", url()], ["verify-db-checkpoint", url()]]) {
      const r = await cairn(args, s3.env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("is encrypted. Try: --key-file");
    }
    // the key file copied to the new host (owner only), given through the environment
    const copied = join(host, "checkpoint.key");
    cpSync(key, copied);
    chmodSync(copied, 0o600);
    const ok = await cairn(["restore", "--db-checkpoint-path", url(), "--db-path", target], { ...s3.env, CAIRN_KEY_FILE: copied });
    expect(ok.stderr).not.toContain("error");
    expect(ok.code).toBe(0);
    const a = auditDb(join(target, "cairn.db"));
    expect(a.integrity).toBe("ok");
    expect(a.blobs).toEqual(expected);
    const listed = await cairn(["list-db-checkpoint", url(), "--json", "--key-file", copied], s3.env);
    expect(JSON.parse(listed.stdout).map((c: { id: number }) => c.id)).toEqual([1, 2]);
  });

  test("a flipped byte in an encrypted pack: verify names it, restore refuses before touching the target", async () => {
    const copy = join(tmpDir("cairn-ed-"), "ckpt");
    cpSync(join(dir, "ckpt"), copy, { recursive: true });
    const packs = filesUnder(join(copy, "packs")).filter((f) => f.endsWith(".pack"));
    const biggest = packs.sort((x, y) => statSync(y).size - statSync(x).size)[0]!;
    flipByte(biggest);
    const v = await cairn(["verify-db-checkpoint", copy, "--key-file", key]);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain("DAMAGED");
    expect(v.stdout).toMatch(/does not match its digest|damaged/);
    const target = join(copy, "..", "db");
    const r = await cairn(["restore", "--db-checkpoint-path", copy, "--db-path", target, "--key-file", key, "--checkpoint-id", "1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/does not match its digest|damaged/);
    expect(existsSync(join(target, "cairn.db"))).toBe(false);
  });
});

describe("keys", () => {
  test("key add, remove and rotate: a removed key no longer opens the store; after a rotation every block is sealed again and the old generation's keys go with its last checkpoint", async () => {
    const dir = tmpDir("cairn-ek-");
    const k1 = await newKey(dir, "k1.key");
    const k2 = await newKey(dir, "k2.key");
    const store = join(dir, "ckpt");
    const node = await startNode(dir, { extraYaml: encryptedYaml(k1).replace("max_db_checkpoints: 3", "max_db_checkpoints: 2") });
    try {
      await putAll(node.url, markedBlobs(100, "k"));
      expect(await createCheckpointAsync(node)).toBe(1);
      const add = await cairn(["key", "add", store, "--key-file", k1, "--new-key-file", k2]);
      expect(add.code).toBe(0);
      expect(add.stdout).toContain(`added key ${readKeyFile(k2).id}`);
      expect((await cairn(["list-db-checkpoint", store, "--key-file", k2])).code).toBe(0);
      const again = await cairn(["key", "add", store, "--key-file", k1, "--new-key-file", k2]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain("opens the store already");

      expect((await cairn(["key", "remove", store, "--key-file", k2])).code).toBe(0);
      const gone = await cairn(["list-db-checkpoint", store, "--key-file", k2]);
      expect(gone.code).toBe(1);
      expect(gone.stderr).toContain(`the key file ${k2} does not open the store at ${store}`);
      const last = await cairn(["key", "remove", store, "--key-file", k1]);
      expect(last.code).toBe(2);
      expect(last.stderr).toContain("is the only key that opens the store");

      const rot = await cairn(["key", "rotate", store, "--key-file", k1]);
      expect(rot.code).toBe(0);
      expect(rot.stdout).toContain("rotated to key generation 2");
      await putAll(node.url, markedBlobs(5, "r"));
      expect(await createCheckpointAsync(node)).toBe(2);
      expect(node.logs()).toContain("checkpoint 2 seals every block again under the new key");
      const info = () => decodeStoreInfo(readFileSync(join(store, "cairn-store.json")), "info").encryption!;
      expect(info().slots.map((s) => s.generation).sort()).toEqual([1, 2]);
      // checkpoint 1 (generation 1) expires with the next one: its generation's key goes too
      await putAll(node.url, markedBlobs(5, "s"));
      expect(await createCheckpointAsync(node)).toBe(3);
      await waitFor(() => info().slots.every((s) => s.generation === 2), { what: "generation 1's key dropped", detail: () => node.logs() });
      const v = await cairn(["verify-db-checkpoint", store, "--key-file", k1]);
      expect(v.stdout).toContain("Checkpoint 2: OK");
      expect(v.stdout).toContain("Checkpoint 3: OK");
      expect(v.code).toBe(0);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  });

  test("the same blobs in two stores with different keys get unrelated names", async () => {
    const names: Set<string>[] = [];
    for (const tag of ["x", "y"]) {
      const dir = tmpDir(`cairn-e${tag}-`);
      const key = await newKey(dir, "k.key");
      const node = await startNode(dir, { extraYaml: encryptedYaml(key) });
      try {
        await putAll(node.url, Array.from({ length: 50 }, (_, i) => ({ id: `same-${i}`, body: pseudoRandomBytes(i + 7, 30_000) })));
        expect(await createCheckpointAsync(node)).toBe(1);
      } finally {
        expect(await node.stop()).toBe(0);
      }
      const store = join(dir, "ckpt");
      const backend = new DirBackend(store);
      const reader = new StoreReader(backend);
      reader.keys = openStoreKeys((await reader.info()).encryption!, [readKeyFile(key)], store);
      const set = new Set<string>();
      for (const p of await reader.packIds()) {
        const idx = await reader.index(p);
        for (let i = 0; i < idx.count; i++) set.add(toHex(readIndexEntry(idx, i).digest));
      }
      backend.close();
      names.push(set);
    }
    expect(names[0]!.size).toBeGreaterThan(100);
    expect([...names[0]!].filter((d) => names[1]!.has(d))).toEqual([]);
  });
});

describe("a large encrypted checkpoint", () => {
  test("its blocks are sealed on a thread beside the worker while packs fill and close; every byte is ciphertext; it and an incremental sealed in place verify and restore exactly", async () => {
    const dir = tmpDir();
    const key = await newKey(dir, "checkpoint.key");
    // 1 MiB packs: many fill up while the last blocks laid out in them are still being sealed
    const node = await startNode(dir, { extraYaml: encryptedYaml(key), env: { CAIRN_TEST_PACK_TARGET_BYTES: String(1 << 20) } });
    const expected = new Map<string, string>();
    const store = join(dir, "ckpt");
    try {
      expect((await adminAsync(node, ["log-level", "--level", "debug"])).code).toBe(0);
      // compressible blocks (sealed from a copy, after zstd) and incompressible ones (sealed from the read chunk)
      const blobs = [...markedBlobs(700, "l"), ...Array.from({ length: 120 }, (_, i) => ({ id: `secret-id-r-${i}`, body: pseudoRandomBytes(9000 + i, 40_000 + 97 * i) }))];
      await putAll(node.url, blobs);
      for (const b of blobs) expected.set(b.id, sha256(b.body));
      expect(await createCheckpointAsync(node)).toBe(1);
      const apart = /checkpoint: (\d+) block\(s\) sealed on threads beside the workers/.exec(node.logs());
      expect(Number(apart?.[1])).toBeGreaterThan(1000);
      const packs = filesUnder(join(store, "packs")).filter((f) => f.endsWith(".pack"));
      expect(packs.length).toBeGreaterThan(5);
      // a few blobs changed: an incremental, sealed in place
      const changed = markedBlobs(6, "m");
      await putAll(node.url, changed);
      for (const b of changed) expected.set(b.id, sha256(b.body));
      expect(await createCheckpointAsync(node)).toBe(2);
      expect(node.logs().match(/sealed on threads beside the workers/g)?.length).toBe(1);
      expect(containing([store], [MARK, "secret-id-"])).toEqual([]);
      const v = await cairn(["verify-db-checkpoint", store, "--key-file", key]);
      expect(v.stdout).toContain("Checkpoint 1: OK");
      expect(v.stdout).toContain("Checkpoint 2: OK");
      expect(v.code).toBe(0);
      const first = new Map([...expected].filter(([id]) => !id.startsWith("secret-id-m-")));
      for (const [id, want] of [[1, first], [2, expected]] as const) {
        const target = join(dir, `restored-${id}`, "db");
        const r = await cairn(["restore", "--db-checkpoint-path", store, "--db-path", target, "--key-file", key, "--checkpoint-id", String(id)]);
        expect(r.stderr).not.toContain("error");
        expect(r.code).toBe(0);
        const a = auditDb(join(target, "cairn.db"));
        expect(a.integrity).toBe("ok");
        expect(a.blobs).toEqual(want);
      }
    } finally {
      if (node.proc.exitCode === null) await node.stop();
    }
  });
});

describe("never a mix of plaintext and ciphertext", () => {
  test("encryption configured over a plaintext store, or an encrypted store without it: the node refuses to start; a bad key file or encryption with WAL shipping is a config error", async () => {
    const dir = tmpDir("cairn-em-");
    const plain = await startNode(dir, { extraYaml: "checkpoint_config:\n  db_checkpoint_dir: ./ckpt\n" });
    await putAll(plain.url, [{ id: "a", body: pseudoRandomBytes(1, 1000) }]);
    expect(await createCheckpointAsync(plain)).toBe(1);
    expect(await plain.stop()).toBe(0);
    const key = await newKey(dir, "k.key");
    const cfg = join(dir, "enc.yaml");
    await Bun.write(cfg, `storage_path: ${join(dir, "db")}\nadmin_socket_path: ${join(dir, "a2.socket")}\nrest_api_address: 127.0.0.1:${freePort()}\n${encryptedYaml(key).replace("./ckpt", join(dir, "ckpt"))}`);
    const refused = await cairn(["run", "--config", cfg]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("holds plaintext checkpoints; encrypted ones never go into the same store");

    const other = tmpDir("cairn-en-");
    const k = await newKey(other, "k.key");
    const enc = await startNode(other, { extraYaml: encryptedYaml(k) });
    expect(await createCheckpointAsync(enc)).toBe(1);
    expect(await enc.stop()).toBe(0);
    const noKey = join(other, "nokey.yaml");
    await Bun.write(noKey, `storage_path: ${join(other, "db")}\nadmin_socket_path: ${join(other, "a3.socket")}\nrest_api_address: 127.0.0.1:${freePort()}\ncheckpoint_config:\n  db_checkpoint_dir: ${join(other, "ckpt")}\n`);
    const r2 = await cairn(["run", "--config", noKey]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`the store at ${join(other, "ckpt")} is encrypted`);

    chmodSync(k, 0o644);
    const r3 = await cairn(["run", "--config", join(other, "cairn.yaml")]);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toContain("checkpoint_config.encryption.key_file: the key file");
    expect(r3.stderr).toContain("may be read by others (mode 0644)");
    chmodSync(k, 0o600);
    const ship = join(other, "ship.yaml");
    await Bun.write(ship, `${readFileSync(join(other, "cairn.yaml"), "utf8")}  wal_shipping:\n    enabled: true\n`);
    const r4 = await cairn(["run", "--config", ship]);
    expect(r4.code).toBe(2);
    expect(r4.stderr).toContain("wal_shipping: cannot be enabled together with checkpoint_config.encryption");
  });
});
