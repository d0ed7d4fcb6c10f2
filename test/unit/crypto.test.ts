/**
 * The encryption primitives of stores (src/store/crypto.ts): key files, sealed blocks and
 * objects, wrapped master keys, keyed names. Every way of altering what was sealed must be
 * refused, and nothing sealed may contain its plaintext.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BLOCK_SEAL_BYTES,
  dataKeys,
  encodeKeyFile,
  generateKey,
  isSealed,
  keyId,
  NameHasher,
  newStoreEncryption,
  openBlock,
  openObject,
  parseKeyFile,
  readKeyFile,
  sealedGeneration,
  sealObject,
  unwrapMaster,
  wrapMaster,
  writeNewKeyFile,
} from "../../src/store/crypto.ts";
import { blockDigest } from "../../src/store/hash.ts";
import { decodeBlock, FLAG_SEALED } from "../../src/store/pack.ts";
import { expectCode, thrown } from "../helpers/errors.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const MARKER = new TextEncoder().encode("PLAINTEXT-MARKER-0123456789");

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(hay).includes(Buffer.from(needle));
}

function blockOf(n: number): Uint8Array {
  const b = new Uint8Array(8192);
  for (let i = 0; i + MARKER.length <= b.length; i += MARKER.length + n) b.set(MARKER, i);
  return b;
}

describe("key files", () => {
  test("a key file round-trips; its id is stable, short, and not the key", () => {
    const key = generateKey();
    const text = encodeKeyFile(key);
    expect(parseKeyFile(text, "k")).toEqual(key);
    expect(keyId(key)).toMatch(/^[0-9a-f]{16}$/);
    expect(keyId(key)).toBe(keyId(parseKeyFile(text, "k")));
    expect(text).not.toContain(Buffer.from(key).toString("hex"));
    expect(keyId(generateKey())).not.toBe(keyId(key));
  });

  for (const [what, text] of [
    ["an empty file", ""],
    ["comments only", "# nothing\n"],
    ["two keys", `${encodeKeyFile(generateKey())}${encodeKeyFile(generateKey())}`],
    ["a short key", "cairn-key-v1:AAAA\n"],
    ["another format", `cairn-key-v2:${Buffer.alloc(32).toString("base64url")}\n`],
    ["a hex key", `${Buffer.alloc(32, 7).toString("hex")}\n`],
  ] as const) {
    test(`parseKeyFile refuses ${what} (E_KEY_FILE, naming the file, never a key)`, () => {
      const e = thrown(() => parseKeyFile(text, "/opt/k.key"));
      expectCode(e, "E_KEY_FILE", /\/opt\/k\.key is not a cairn key file/);
    });
  }

  test("writeNewKeyFile writes mode 0600, never over an existing file, and leaves no temp file", () => {
    const dir = tmpDir();
    const path = join(dir, "a.key");
    const id = writeNewKeyFile(path);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const first = readFileSync(path, "utf8");
    expect(keyId(parseKeyFile(first, path))).toBe(id);
    expectCode(thrown(() => writeNewKeyFile(path)), "E_KEY_FILE", /already exists; a key file is never overwritten/);
    expect(readFileSync(path, "utf8")).toBe(first);
    expect(readdirSync(dir)).toEqual(["a.key"]);
    expectCode(thrown(() => writeNewKeyFile(join(dir, "none", "b.key"))), "E_KEY_FILE", /does not exist/);
  });

  test("readKeyFile refuses a key file others may read, a missing one and a folder", () => {
    const dir = tmpDir();
    const path = join(dir, "a.key");
    writeNewKeyFile(path);
    expect(readKeyFile(path).id).toBe(keyId(parseKeyFile(readFileSync(path, "utf8"), path)));
    chmodSync(path, 0o640);
    const e = thrown(() => readKeyFile(path));
    expectCode(e, "E_KEY_FILE", /may be read by others \(mode 0640\)/);
    expect((e as { hint?: string }).hint).toBe(`chmod 600 ${path}`);
    expectCode(thrown(() => readKeyFile(join(dir, "none.key"))), "E_KEY_FILE", /no such file/);
    expectCode(thrown(() => readKeyFile(dir)), "E_KEY_FILE");
    writeFileSync(join(dir, "bad.key"), "hello\n", { mode: 0o600 });
    expectCode(thrown(() => readKeyFile(join(dir, "bad.key"))), "E_KEY_FILE", /not a cairn key file/);
  });
});

describe("sealed blocks", () => {
  const keys = newStoreEncryption({ path: "k", key: generateKey(), id: "x" }).keys;
  const nameOf = (data: Uint8Array) => {
    const d = new Uint8Array(32);
    keys.digestInto(data, d);
    return d;
  };
  const entry = (digest: Uint8Array, stored: Uint8Array, raw: number) => ({ digest, offset: 8, storedLength: stored.length, rawLength: raw, flags: FLAG_SEALED });

  test("a block round-trips; its sealed form holds no plaintext, is 4 bytes longer, and is the same each time under one key (SIV)", () => {
    const plain = blockOf(0);
    const d = nameOf(plain);
    const a = keys.sealBlock(d, plain);
    expect(a.length).toBe(plain.length + BLOCK_SEAL_BYTES);
    expect(contains(a, MARKER)).toBe(false);
    expect(Buffer.from(a).equals(Buffer.from(keys.sealBlock(d, plain)))).toBe(true);
    const other = newStoreEncryption({ path: "k", key: generateKey(), id: "y" }).keys;
    expect(Buffer.from(a).equals(Buffer.from(other.sealBlock(d, plain)))).toBe(false);
    expect(decodeBlock(a, entry(d, a, plain.length), "p", keys)).toEqual(plain);
    // the two parts the pack writer copies are the same bytes
    const [head, body] = keys.sealBlockParts(d, plain);
    expect(Buffer.concat([head, body]).equals(Buffer.from(a))).toBe(true);
  });

  test("a flipped bit anywhere, a cut, another name or another store's keys: refused as damage", () => {
    const plain = blockOf(1);
    const d = nameOf(plain);
    const sealed = keys.sealBlock(d, plain);
    for (const at of [0, 3, 4, 100, sealed.length - 1]) {
      const bad = sealed.slice();
      bad[at]! ^= 1;
      expectCode(thrown(() => decodeBlock(bad, entry(d, bad, plain.length), "packs/ab/x.pack", keys)), "E_STORE_DAMAGED", /^packs\/ab\/x\.pack: /);
    }
    expectCode(thrown(() => decodeBlock(sealed.subarray(0, sealed.length - 1), entry(d, sealed, plain.length), "p", keys)), "E_STORE_DAMAGED", /cut short/);
    expectCode(thrown(() => openBlock(keys.current, d, sealed.subarray(0, 2), "p")), "E_STORE_DAMAGED", /cut short/);
    const elsewhere = nameOf(blockOf(2));
    expectCode(thrown(() => decodeBlock(sealed, entry(elsewhere, sealed, plain.length), "p", keys)), "E_STORE_DAMAGED", /does not match its digest/);
    const other = newStoreEncryption({ path: "k", key: generateKey(), id: "y" }).keys;
    expectCode(thrown(() => decodeBlock(sealed, entry(d, sealed, plain.length), "p", other)), "E_STORE_DAMAGED");
    // a plaintext block in an encrypted store, and an encrypted one without keys
    expectCode(thrown(() => decodeBlock(plain, { ...entry(d, plain, plain.length), flags: 0 }, "p", keys)), "E_STORE_DAMAGED", /not encrypted/);
    expectCode(thrown(() => decodeBlock(sealed, entry(d, sealed, plain.length), "p")), "E_KEY_NEEDED");
  });
});

describe("sealed objects", () => {
  const k = dataKeys(generateKey(), 3);

  test("an object round-trips under its path, says its generation, and holds no plaintext", () => {
    const plain = new TextEncoder().encode(JSON.stringify({ marker: new TextDecoder().decode(MARKER) }));
    const sealed = sealObject(k, "manifests/0000000001.json", plain);
    expect(isSealed(sealed)).toBe(true);
    expect(isSealed(plain)).toBe(false);
    expect(sealedGeneration(sealed)).toBe(3);
    expect(sealedGeneration(plain)).toBeUndefined();
    expect(contains(sealed, MARKER)).toBe(false);
    expect(openObject(k, "manifests/0000000001.json", sealed, "m")).toEqual(plain);
  });

  test("moved to another path, altered, cut, plaintext or another store's: refused as damage", () => {
    const sealed = sealObject(k, "packs/ab/ab01.idx", new Uint8Array(1000).fill(7));
    expectCode(thrown(() => openObject(k, "packs/cd/cd01.idx", sealed, "x")), "E_STORE_DAMAGED", /moved from another path/);
    for (const at of [0, 9, 13, 30, sealed.length - 1]) {
      const bad = sealed.slice();
      bad[at]! ^= 0x20;
      expectCode(thrown(() => openObject(k, "packs/ab/ab01.idx", bad, "x")), "E_STORE_DAMAGED");
    }
    expectCode(thrown(() => openObject(k, "packs/ab/ab01.idx", sealed.subarray(0, 40), "x")), "E_STORE_DAMAGED");
    expectCode(thrown(() => openObject(k, "p", new TextEncoder().encode("{}"), "x")), "E_STORE_DAMAGED", /not an encrypted object/);
    expectCode(thrown(() => openObject(dataKeys(generateKey(), 3), "packs/ab/ab01.idx", sealed, "x")), "E_STORE_DAMAGED");
  });
});

describe("wrapped master keys and names", () => {
  test("a slot opens with the key file that wrapped it and no other; its generation is bound", () => {
    const fileKey = generateKey();
    const master = new Uint8Array(64);
    master.set(generateKey(), 0);
    master.set(generateKey(), 32);
    const slot = wrapMaster(fileKey, master, 2);
    expect(slot.key_id).toBe(keyId(fileKey));
    expect(slot.wrapped).not.toContain(Buffer.from(master).toString("base64url"));
    expect(unwrapMaster(fileKey, slot)).toEqual(master);
    expect(unwrapMaster(generateKey(), slot)).toBeUndefined();
    expect(unwrapMaster(fileKey, { ...slot, generation: 3 })).toBeUndefined();
    expect(unwrapMaster(fileKey, { ...slot, wrapped: slot.wrapped.slice(0, -4) })).toBeUndefined();
  });

  test("keyed names: the same data gets unrelated names under two keys, the same name under one, never its plain BLAKE3", () => {
    const data = blockOf(3);
    const a = new NameHasher(dataKeys(generateKey(), 1).names);
    const b = new NameHasher(dataKeys(generateKey(), 1).names);
    const out = (h: NameHasher, d: Uint8Array) => {
      const o = new Uint8Array(32);
      h.digestInto(d, o);
      return Buffer.from(o).toString("hex");
    };
    expect(out(a, data)).toBe(out(a, data));
    expect(out(a, data)).not.toBe(out(b, data));
    expect(out(a, data)).not.toBe(Buffer.from(blockDigest(data)).toString("hex"));
    expect(out(a, data)).not.toBe(out(a, blockOf(4)));
  });
});
