/**
 * The store core, without the compiled binary: the format (manifests, store info, copies of
 * a store), packs and their indexes (the pack writer, index checks, zstd frame checks, the
 * decompression bound), the digest table, the random-access reader over a folder, garbage
 * collection and the retention policy. Stores are built by hand (test/helpers/store-fixture.ts)
 * in temp folders, so every answer can be checked against what was written.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { CairnError, type ErrorCode } from "../../src/errors.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { publishPackFiles, writeManifestFile } from "../../src/store/dir/writer.ts";
import { DigestTable } from "../../src/store/digest-table.ts";
import {
  decodeManifest,
  decodeStoreInfo,
  encodeManifest,
  encodeStoreInfo,
  indexPath,
  type Manifest,
  manifestPath,
  MAX_DB_BYTES,
  packFileOf,
  packPath,
  remapSegmentPacks,
  SEGMENT_BLOCKS,
  SEGMENT_ENTRY_BYTES,
  sameStore,
  seedDigest,
  type StoreInfo,
  storeInfoForCopy,
} from "../../src/store/format.ts";
import { collectGarbage } from "../../src/store/gc.ts";
import { blockDigest, fromHex, quickHash, toHex } from "../../src/store/hash.ts";
import {
  BLOCK_KIND_DATA,
  BLOCK_KIND_SEGMENT,
  bufferReader,
  decodeBlock,
  decodeIndex,
  decompressBlock,
  encodeIndex,
  FLAG_ZSTD,
  INDEX_ENTRY_BYTES,
  type IndexEntry,
  MAX_BLOCK_RAW_BYTES,
  PACK_HEADER_BYTES,
  PACK_MAGIC,
  readIndexEntry,
  writeIndexEntry,
  zstdFrame,
} from "../../src/store/pack.ts";
import { newPackId, PackFile, PackLayout } from "../../src/store/pack-writer.ts";
import { LOC_WORDS, StoreReader } from "../../src/store/reader.ts";
import { expiredCheckpoints } from "../../src/store/retention.ts";
import { treeSnapshot } from "../helpers/checkpoint.ts";
import { expectCode, rejected, thrown } from "../helpers/errors.ts";
import { pseudoRandomBytes } from "../helpers/node.ts";
import { type FixtureCheckpoint, listDigests, makeImage, readImage, segmentPacksFound, StoreFixture } from "../helpers/store-fixture.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

// ---- helpers ------------------------------------------------------------------------------------

/** The error `f` throws (the test fails if it throws none). */

const hex64 = (n: number) => toHex(blockDigest(new TextEncoder().encode(`digest ${n}`)));
const PACK_A = "0123456789abcdef0123456789abcdef";
const PACK_B = "fedcba9876543210fedcba9876543210";

/** A valid manifest (3 blocks of 8 KiB, 4 KiB pages, one segment). */
function goodManifest(): Omit<Manifest, "checksum"> {
  return {
    format: 1,
    id: 7,
    node_id: "node-1",
    created: "2024-05-06T07:08:09.000Z",
    cairn_version: "0.1.0",
    page_size: 4096,
    page_count: 6,
    db_size_bytes: 24576,
    block_size: 8192,
    block_count: 3,
    segment_blocks: SEGMENT_BLOCKS,
    segments: [hex64(1)],
    packs: [PACK_A, PACK_B],
    segment_packs: [[0, 1]],
    db_totals: { blob_count: 2, blob_bytes: 1000 },
    stats: { started: "2024-05-06T07:08:08.000Z", duration_ms: 12, logical_bytes: 24576, new_blocks: 3, new_bytes: 25000, blocks_rehashed: 3 },
  };
}

function goodInfo(seed = "12345678901234567890"): StoreInfo {
  return { format: 1, node_id: "node-1", created: "2024-05-06T07:08:09.000Z", block_size: 8192, quick_hash_seed: seed };
}

/** A pack index over hand-made entries (each digest made up), for a pack of `packBytes`. */
function indexOf(entries: Omit<IndexEntry, "digest">[], packBytes: number): Uint8Array {
  const buf = new Uint8Array(entries.length * INDEX_ENTRY_BYTES);
  entries.forEach((e, i) => writeIndexEntry(buf, i, { ...e, digest: fromHex(hex64(i)) }));
  return encodeIndex(packBytes, buf, entries.length);
}

/** Text-like bytes that compress well. */
function textBytes(n: number, tag = "x"): Uint8Array {
  return new TextEncoder().encode(`${tag}: the quick brown fox jumps over the lazy dog. `.repeat(Math.ceil(n / 40) + 1)).slice(0, n);
}

// ---- format -------------------------------------------------------------------------------------

describe("format: manifests", () => {
  test("a manifest round-trips through encodeManifest / decodeManifest, its checksum over its own text", () => {
    const m = goodManifest();
    const data = encodeManifest(m);
    const back = decodeManifest(data, "m.json");
    const { checksum, ...rest } = back;
    expect(rest).toEqual(m);
    expect(checksum).toMatch(/^[0-9a-f]{64}$/);
    // the same manifest encodes to the same bytes
    expect(encodeManifest(m)).toEqual(data);
    // and re-encoding what was decoded (checksum dropped) gives it back too
    expect(encodeManifest(rest)).toEqual(data);
  });

  const impossible: [string, (m: Omit<Manifest, "checksum">) => void, RegExp][] = [
    ["a negative db_size_bytes", (m) => void (m.db_size_bytes = -8192), /impossible database size/],
    ["a db_size_bytes past SQLite's limit", (m) => void (m.db_size_bytes = MAX_DB_BYTES + 65536), /impossible database size/],
    ["a db_size_bytes that is not a safe integer", (m) => void (m.db_size_bytes = 2 ** 60), /impossible database size/],
    ["a page_count that does not match its size", (m) => void (m.page_count = 7), /page count that does not match/],
    ["a block_count that does not match its size", (m) => void (m.block_count = 4), /block count that does not match/],
    ["a pack named ../x", (m) => void (m.packs = ["../x"]), /names a pack that is not a pack id/],
    ["a pack id in uppercase", (m) => void (m.packs = [PACK_A.toUpperCase()]), /names a pack that is not a pack id/],
    ["a pack named twice", (m) => void (m.packs = [PACK_A, PACK_A]), /names a pack twice/],
    ["a segment that is not a digest", (m) => void (m.segments = ["zz".repeat(32)]), /names a segment that is not a digest/],
    ["a segment that is a digest too short", (m) => void (m.segments = [hex64(1).slice(2)]), /names a segment that is not a digest/],
    ["too many segments", (m) => void (m.segments = [hex64(1), hex64(2)]), /segment list that does not match/],
    ["no segments", (m) => void (m.segments = []), /segment list that does not match/],
    ["segment pack hints for another number of segments", (m) => void (m.segment_packs = [[0], [1]]), /segment pack list that does not match/],
    ["a segment pack number past its packs", (m) => void (m.segment_packs = [[0, 2]]), /segment pack number out of range: 2/],
    ["a segment pack number that is not a number", (m) => void (m.segment_packs = [["0" as unknown as number]]), /segment pack number out of range/],
    ["segment pack hints that are not lists", (m) => void (m.segment_packs = [0 as unknown as number[]]), /not a list of pack numbers/],
    ["a node id with a slash", (m) => void (m.node_id = "a/b"), /no valid node id/],
    ["an empty node id", (m) => void (m.node_id = ""), /no valid node id/],
    ["a node id of 200 characters", (m) => void (m.node_id = "n".repeat(200)), /no valid node id/],
    ["a creation time that is not a time", (m) => void (m.created = "yesterday"), /no valid creation time/],
    ["a creation time that is a number", (m) => void ((m as { created: unknown }).created = 1714979289000), /no valid creation time/],
  ];
  for (const [what, mutate, why] of impossible) {
    test(`decodeManifest refuses ${what} (E_STORE_DAMAGED, naming the file)`, () => {
      const m = goodManifest();
      mutate(m);
      // a valid checksum over the bad field: only the field check can refuse it
      const e = thrown(() => decodeManifest(encodeManifest(m), "manifests/0000000007.json"));
      expectCode(e, "E_STORE_DAMAGED", why);
      expect(e.message).toStartWith("manifests/0000000007.json: ");
    });
  }

  test("decodeManifest refuses a manifest whose text changed (checksum), and one that is not JSON", () => {
    const text = new TextDecoder().decode(encodeManifest(goodManifest())).replace('"blob_bytes": 1000', '"blob_bytes": 1001');
    expectCode(thrown(() => decodeManifest(new TextEncoder().encode(text), "m")), "E_STORE_DAMAGED", /checksum mismatch/);
    const cut = encodeManifest(goodManifest()).subarray(0, 100);
    expectCode(thrown(() => decodeManifest(cut, "m")), "E_STORE_DAMAGED", /not valid JSON/);
    expectCode(thrown(() => decodeManifest(new TextEncoder().encode("null"), "m")), "E_STORE_DAMAGED", /not an object/);
  });

  test("a manifest of a newer format is E_STORE_FORMAT, not damage", () => {
    const e = thrown(() => decodeManifest(encodeManifest({ ...goodManifest(), format: 2 }), "m"));
    expectCode(e, "E_STORE_FORMAT", /format 2 is newer/);
    expect(e.hint).toMatch(/newer cairn/);
  });
});

test("remapSegmentPacks moves each hint to its pack's new place and leaves a dropped pack out", () => {
  const m = { ...goodManifest(), packs: [PACK_A, PACK_B, "1".repeat(32)], segment_packs: [[0, 1], [2], [0, 2]] } as Manifest;
  const fresh = "0".repeat(32);
  // A rewritten to a pack sorting first, B dropped
  expect(remapSegmentPacks(m, [fresh, "1".repeat(32)], new Map([[PACK_A, fresh]]))).toEqual([[0], [1], [0, 1]]);
  expect(remapSegmentPacks({ ...m, segment_packs: undefined }, m.packs, new Map())).toBeUndefined();
});

describe("format: store info", () => {
  test("store info round-trips, and copies carry the seed's digest, never the seed", () => {
    const info = goodInfo();
    expect(decodeStoreInfo(encodeStoreInfo(info), "s")).toEqual(info);
    const copy = storeInfoForCopy(info);
    expect("quick_hash_seed" in copy).toBe(false);
    expect(copy.quick_hash_seed_digest).toBe(seedDigest(info.quick_hash_seed!));
    expect(copy.quick_hash_seed_digest).toMatch(/^[0-9a-f]{64}$/);
    expect(new TextDecoder().decode(encodeStoreInfo(copy))).not.toContain(info.quick_hash_seed!);
    // a copy is a valid store info too, and a copy of a copy is the same copy
    expect(decodeStoreInfo(encodeStoreInfo(copy), "s")).toEqual(copy);
    expect(storeInfoForCopy(copy)).toEqual(copy);
    const { quick_hash_seed: _, ...rest } = info;
    expect(copy).toEqual({ ...rest, quick_hash_seed_digest: seedDigest(info.quick_hash_seed!) });
  });

  test("sameStore matches a store with its copies and not with another seed, node or block size", () => {
    const info = goodInfo();
    const copy = storeInfoForCopy(info);
    const other = goodInfo("98765");
    expect(sameStore(info, info)).toBe(true);
    expect(sameStore(info, copy)).toBe(true);
    expect(sameStore(copy, info)).toBe(true);
    expect(sameStore(copy, storeInfoForCopy(copy))).toBe(true);
    expect(sameStore(info, other)).toBe(false);
    expect(sameStore(copy, storeInfoForCopy(other))).toBe(false);
    expect(sameStore(info, { ...info, node_id: "node-2" })).toBe(false);
    expect(sameStore(info, { ...info, block_size: 16384 })).toBe(false);
  });

  const badInfo: [string, string | Record<string, unknown>, ErrorCode, RegExp][] = [
    ["text that is not JSON", '{"format": 1,', "E_STORE_DAMAGED", /not valid JSON/],
    ["no format", { ...goodInfo(), format: undefined }, "E_STORE_DAMAGED", /no format version/],
    ["a newer format", { ...goodInfo(), format: 2 }, "E_STORE_FORMAT", /store format 2 is newer/],
    ["a bad node id", { ...goodInfo(), node_id: "../etc" }, "E_STORE_DAMAGED", /missing or impossible fields/],
    ["a block size that is no power of two", { ...goodInfo(), block_size: 8000 }, "E_STORE_DAMAGED", /impossible/],
    ["a block size below the minimum", { ...goodInfo(), block_size: 256 }, "E_STORE_DAMAGED", /impossible/],
    ["a block size above the maximum", { ...goodInfo(), block_size: 2 * 1024 * 1024 }, "E_STORE_DAMAGED", /impossible/],
    ["a seed that is not a number", { ...goodInfo(), quick_hash_seed: "abc" }, "E_STORE_DAMAGED", /impossible/],
    ["a seed of 2^64", { ...goodInfo(), quick_hash_seed: "18446744073709551616" }, "E_STORE_DAMAGED", /impossible/],
    ["a seed given as a number", { ...goodInfo(), quick_hash_seed: 5 }, "E_STORE_DAMAGED", /impossible/],
    ["neither a seed nor its digest", { ...goodInfo(), quick_hash_seed: undefined }, "E_STORE_DAMAGED", /impossible/],
    ["a seed digest that is not a digest", { ...storeInfoForCopy(goodInfo()), quick_hash_seed_digest: "abc" }, "E_STORE_DAMAGED", /impossible/],
  ];
  for (const [what, value, code, why] of badInfo) {
    test(`decodeStoreInfo refuses ${what} (${code})`, () => {
      const text = typeof value === "string" ? value : JSON.stringify(value);
      expectCode(thrown(() => decodeStoreInfo(new TextEncoder().encode(text), "cairn-store.json")), code, why);
    });
  }

  test("the largest seed (2^64 - 1) is accepted", () => {
    const info = goodInfo("18446744073709551615");
    expect(decodeStoreInfo(encodeStoreInfo(info), "s").quick_hash_seed).toBe("18446744073709551615");
  });

  test("packFileOf parses pack file names and nothing else", () => {
    expect(packFileOf(packPath(PACK_A))).toEqual({ packId: PACK_A, ext: "pack" });
    expect(packFileOf(indexPath(PACK_B))).toEqual({ packId: PACK_B, ext: "idx" });
    expect(packPath(PACK_A)).toBe(`packs/01/${PACK_A}.pack`);
    for (const p of [`packs/02/${PACK_A}.pack`, `packs/01/${PACK_A}.tmp`, `packs/01/${PACK_A.toUpperCase()}.pack`, `packs/${PACK_A}.pack`, `x/packs/01/${PACK_A}.idx`, "packs/README", `packs/01/${PACK_A}.pack.tmp-1`]) {
      expect([p, packFileOf(p)]).toEqual([p, undefined]);
    }
    expect(manifestPath(7)).toBe("manifests/0000000007.json");
  });
});

// ---- packs --------------------------------------------------------------------------------------

describe("packs", () => {
  test("a PackFile whose later blocks another thread writes at their laid-out offsets: the bytes land where the index says; appending after them or closing before they are written is refused", () => {
    const dir = tmpDir("cairn-pr-");
    const pack = new PackFile(dir, { sync: false });
    const words = (raw: Uint8Array) => {
      const w = new Uint32Array(8);
      new Uint8Array(w.buffer).set(blockDigest(raw));
      return w;
    };
    const first = pseudoRandomBytes(11, 8192);
    pack.append(words(first), 0, first, first.length, BLOCK_KIND_DATA << 8);
    const later = [pseudoRandomBytes(12, 8192), pseudoRandomBytes(13, 5000)];
    const offsets = later.map((b) => pack.reserve(words(b), 0, b.length, b.length, BLOCK_KIND_DATA << 8));
    expect(pack.writesPending).toBe(true);
    expectCode(thrown(() => pack.append(words(first), 0, first, first.length, BLOCK_KIND_DATA << 8)), "E_INTERNAL", /laid out for another thread/);
    expectCode(thrown(() => pack.close()), "E_INTERNAL", /not written/);
    // the other thread: its own descriptor, positional writes, the last block first
    const fd = openSync(pack.path("pack"), "r+");
    for (const i of [1, 0]) writeSync(fd, later[i]!, 0, later[i]!.length, offsets[i]!);
    closeSync(fd);
    pack.writtenElsewhere(later[0]!.length);
    expect(pack.writesPending).toBe(true);
    pack.writtenElsewhere(later[1]!.length);
    expect(pack.writesPending).toBe(false);
    pack.close();
    const idx = decodeIndex(new Uint8Array(readFileSync(pack.path("idx"))), "p.idx");
    const bytes = new Uint8Array(readFileSync(pack.path("pack")));
    expect(idx.packBytes).toBe(bytes.length);
    [first, ...later].forEach((raw, i) => {
      const e = readIndexEntry(idx, i);
      expect(Buffer.from(decodeBlock(bytes.subarray(e.offset, e.offset + e.storedLength), e, "p.pack")).equals(Buffer.from(raw))).toBe(true);
    });
  });

  test("a PackFile with raw and zstd blocks (appended and written from the caller's buffer), closed, decodes with decodeIndex and every block with decodeBlock", () => {
    const dir = tmpDir("cairn-pk-");
    const pack = new PackFile(dir, { sync: true });
    const chunk = pseudoRandomBytes(5, 3 * 8192);
    const text = textBytes(8192, "t");
    const seg = textBytes(SEGMENT_BLOCKS * SEGMENT_ENTRY_BYTES, "segment");
    const blocks: { raw: Uint8Array; kind: number; zstd: boolean }[] = [];
    const add = (raw: Uint8Array, kind: number, zstd: boolean, run?: [number, number]) => {
      const digest = new Uint32Array(8);
      new Uint8Array(digest.buffer).set(blockDigest(raw));
      if (run) pack.appendRun(digest, 0, chunk, run[0], run[1], raw.length, kind << 8);
      else if (zstd) {
        const z = Bun.zstdCompressSync(raw, { level: 1 });
        expect(z.length).toBeLessThan(raw.length);
        pack.append(digest, 0, new Uint8Array(z), raw.length, (kind << 8) | FLAG_ZSTD);
      } else pack.append(digest, 0, raw, raw.length, kind << 8);
      blocks.push({ raw, kind, zstd });
    };
    add(pseudoRandomBytes(1, 8192), BLOCK_KIND_DATA, false);
    add(text, BLOCK_KIND_DATA, true);
    // two adjacent blocks of the caller's buffer: written from there, as one run
    add(chunk.subarray(0, 8192), BLOCK_KIND_DATA, false, [0, 8192]);
    add(chunk.subarray(8192, 16384), BLOCK_KIND_DATA, false, [8192, 16384]);
    add(seg, BLOCK_KIND_SEGMENT, true);
    add(pseudoRandomBytes(2, 1000), BLOCK_KIND_DATA, false); // a short last block
    add(chunk.subarray(16384), BLOCK_KIND_DATA, false, [16384, 3 * 8192]);
    const written = pack.close();

    const packBytes = new Uint8Array(readFileSync(pack.path("pack")));
    const idxBytes = new Uint8Array(readFileSync(pack.path("idx")));
    expect(written).toEqual({ packId: pack.packId, packBytes: packBytes.length, indexBytes: idxBytes.length, blocks: blocks.length });
    expect(pack.packId).toMatch(/^[0-9a-f]{32}$/);
    expect(new TextDecoder().decode(packBytes.subarray(0, PACK_HEADER_BYTES))).toBe(PACK_MAGIC);
    const idx = decodeIndex(idxBytes, "p.idx");
    expect(idx.count).toBe(blocks.length);
    expect(idx.packBytes).toBe(packBytes.length);
    let offset = PACK_HEADER_BYTES;
    blocks.forEach((b, i) => {
      const e = readIndexEntry(idx, i);
      expect(e.offset).toBe(offset);
      expect(toHex(e.digest)).toBe(toHex(blockDigest(b.raw)));
      expect(e.rawLength).toBe(b.raw.length);
      expect(e.flags).toBe((b.kind << 8) | (b.zstd ? FLAG_ZSTD : 0));
      if (!b.zstd) expect(e.storedLength).toBe(b.raw.length);
      const out = decodeBlock(packBytes.subarray(e.offset, e.offset + e.storedLength), e, "p.pack");
      expect(toHex(blockDigest(out))).toBe(toHex(blockDigest(b.raw)));
      expect(out).toEqual(b.raw);
      offset += e.storedLength;
    });
    expect(offset).toBe(packBytes.length);
    // a stored block cut short, or one byte of it changed, is damage
    const e1 = readIndexEntry(idx, 0);
    expectCode(thrown(() => decodeBlock(packBytes.subarray(e1.offset, e1.offset + e1.storedLength - 1), e1, "p.pack")), "E_STORE_DAMAGED", /cut short/);
    const bad = packBytes.slice(e1.offset, e1.offset + e1.storedLength);
    bad[100]! ^= 1;
    expectCode(thrown(() => decodeBlock(bad, e1, "p.pack")), "E_STORE_DAMAGED", /does not match its digest/);
  });

  test("decodeIndex accepts entries the format can have written", () => {
    const idx = indexOf(
      [
        { offset: 8, storedLength: 100, rawLength: 100, flags: 0 },
        { offset: 108, storedLength: 50, rawLength: 8192, flags: FLAG_ZSTD },
        { offset: 158, storedLength: 42, rawLength: 42, flags: BLOCK_KIND_SEGMENT << 8 },
        { offset: 200, storedLength: 10, rawLength: MAX_BLOCK_RAW_BYTES, flags: (BLOCK_KIND_SEGMENT << 8) | FLAG_ZSTD },
      ],
      210,
    );
    expect(decodeIndex(idx, "ok.idx").count).toBe(4);
  });

  const badEntries: [string, Omit<IndexEntry, "digest">, RegExp][] = [
    ["an entry lying past the end of its pack", { offset: 8, storedLength: 300, rawLength: 300, flags: 0 }, /lies outside its pack/],
    ["an entry starting at the pack's magic", { offset: 0, storedLength: 10, rawLength: 10, flags: 0 }, /lies outside its pack/],
    ["an unknown flag", { offset: 8, storedLength: 10, rawLength: 10, flags: 4 }, /unknown flags/],
    ["a sealed block without room for its seal", { offset: 8, storedLength: 10, rawLength: 10, flags: 2 }, /stored length 10 that does not fit/],
    ["a flag above the kind's byte", { offset: 8, storedLength: 10, rawLength: 10, flags: 1 << 16 }, /unknown flags/],
    ["an unknown kind", { offset: 8, storedLength: 10, rawLength: 10, flags: 7 << 8 }, /unknown kind 7/],
    ["a raw length over the limit", { offset: 8, storedLength: 10, rawLength: MAX_BLOCK_RAW_BYTES + 1, flags: FLAG_ZSTD }, /declares \d+ bytes/],
    ["a raw length of 0", { offset: 8, storedLength: 0, rawLength: 0, flags: 0 }, /declares 0 bytes/],
    ["a raw block whose stored length is not its length", { offset: 8, storedLength: 10, rawLength: 20, flags: 0 }, /stored length 10 that does not fit its 20 bytes/],
    ["a compressed block larger than its raw length", { offset: 8, storedLength: 30, rawLength: 20, flags: FLAG_ZSTD }, /stored length 30 that does not fit/],
    ["a compressed block of 0 bytes", { offset: 8, storedLength: 0, rawLength: 20, flags: FLAG_ZSTD }, /stored length 0 that does not fit/],
  ];
  for (const [what, entry, why] of badEntries) {
    test(`decodeIndex refuses ${what} (E_STORE_DAMAGED)`, () => {
      const idx = indexOf([{ offset: 8, storedLength: 10, rawLength: 10, flags: 0 }, entry], 200);
      const e = thrown(() => decodeIndex(idx, "packs/01/x.idx"));
      expectCode(e, "E_STORE_DAMAGED", why);
      expect(e.message).toStartWith("packs/01/x.idx: entry 1 ");
    });
  }

  test("decodeIndex refuses a flipped byte, a cut index, a bad magic, a count that does not match and an impossible pack size", () => {
    const good = indexOf([{ offset: 8, storedLength: 10, rawLength: 10, flags: 0 }], 18);
    expect(decodeIndex(good, "i").count).toBe(1);
    const flipped = good.slice();
    flipped[40]! ^= 0x01;
    expectCode(thrown(() => decodeIndex(flipped, "i")), "E_STORE_DAMAGED", /checksum mismatch/);
    expectCode(thrown(() => decodeIndex(good.subarray(0, 40), "i")), "E_STORE_DAMAGED", /truncated/);
    expectCode(thrown(() => decodeIndex(good.subarray(0, good.length - INDEX_ENTRY_BYTES), "i")), "E_STORE_DAMAGED");
    const magic = good.slice();
    magic[0] = 0x41;
    expectCode(thrown(() => decodeIndex(magic, "i")), "E_STORE_DAMAGED", /bad magic/);
    // an index saying it has 2 entries while holding 1 (its checksum made to match)
    const two = new Uint8Array(INDEX_ENTRY_BYTES * 2);
    writeIndexEntry(two, 0, { digest: fromHex(hex64(0)), offset: 8, storedLength: 10, rawLength: 10, flags: 0 });
    const encoded = encodeIndex(18, two, 1);
    const recount = encoded.slice();
    new DataView(recount.buffer).setUint32(16, 2, true);
    recount.set(blockDigest(recount.subarray(0, recount.length - 32)), recount.length - 32);
    expectCode(thrown(() => decodeIndex(recount, "i")), "E_STORE_DAMAGED", /does not match its entry count/);
    expectCode(thrown(() => decodeIndex(indexOf([], 4), "i")), "E_STORE_DAMAGED", /which no pack can be/);
  });

  test("decompressBlock inflates a valid frame and refuses one declaring another content size than its index", () => {
    const raw = textBytes(8192, "d");
    const frame = Bun.zstdCompressSync(raw);
    expect(decompressBlock(frame, 8192, "p", 8)).toEqual(raw);
    expectCode(thrown(() => decompressBlock(frame, 8191, "p", 8)), "E_STORE_DAMAGED", /declares 8192 content size, its index 8191 bytes/);
    expectCode(thrown(() => decompressBlock(frame, 16384, "p", 8)), "E_STORE_DAMAGED", /declares 8192 content size/);
  });

  test("decompressBlock refuses a zstd bomb (a small frame of 1 GiB of zeros, its index saying 8192) without allocating it", () => {
    let bomb: Uint8Array | undefined = Bun.zstdCompressSync(new Uint8Array(1 << 30));
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const frame = zstdFrame(bufferReader(bomb), 0);
    expect(frame).toEqual({ bytes: bomb.length, contentSize: 1 << 30 });
    Bun.gc(true);
    const before = process.memoryUsage().rss;
    const e = thrown(() => decompressBlock(bomb!, 8192, "packs/ab/bomb.pack", 8));
    const after = process.memoryUsage().rss;
    expectCode(e, "E_STORE_DAMAGED", /block at offset 8 declares 1073741824 content size, its index 8192 bytes/);
    expect(after - before).toBeLessThan(500 * 1024 * 1024);
    // the same through decodeBlock, as a reader meets it
    const entry: IndexEntry = { digest: blockDigest(new Uint8Array(8192)), offset: 8, storedLength: bomb.length, rawLength: 8192, flags: FLAG_ZSTD };
    expectCode(thrown(() => decodeBlock(bomb!, entry, "p")), "E_STORE_DAMAGED", /declares 1073741824 content size/);
    expect(process.memoryUsage().rss - before).toBeLessThan(500 * 1024 * 1024);
    bomb = undefined;
  }, 60_000);

  test("decompressBlock refuses two concatenated frames, a cut frame, a frame declaring no size and bytes that are no frame", () => {
    const raw = textBytes(8192, "c");
    const a = Bun.zstdCompressSync(raw.subarray(0, 4096));
    const b = Bun.zstdCompressSync(raw.subarray(4096));
    const two = new Uint8Array(a.length + b.length);
    two.set(a);
    two.set(b, a.length);
    // zstd itself would happily inflate both frames to the 8192 bytes the index says
    expect(new Uint8Array(Bun.zstdDecompressSync(two)) as Uint8Array).toEqual(raw);
    expectCode(thrown(() => decompressBlock(two, 8192, "p", 8)), "E_STORE_DAMAGED", /is not one zstd frame/);
    const whole = Bun.zstdCompressSync(raw);
    const withTail = new Uint8Array(whole.length + a.length);
    withTail.set(whole);
    withTail.set(a, whole.length);
    expectCode(thrown(() => decompressBlock(withTail, 8192, "p", 8)), "E_STORE_DAMAGED", /is not one zstd frame/);
    for (const n of [0, 3, 5, whole.length - 1]) {
      expectCode(thrown(() => decompressBlock(whole.subarray(0, n), 8192, "p", 8)), "E_STORE_DAMAGED", /cut short/);
    }
    expectCode(thrown(() => decompressBlock(raw.subarray(0, 100), 8192, "p", 8)), "E_STORE_DAMAGED", /not a zstd frame/);
    const unsized = rawFrameWithoutSize(pseudoRandomBytes(3, 8192));
    expect(zstdFrame(bufferReader(unsized), 0)).toEqual({ bytes: unsized.length, contentSize: undefined });
    expect(new Uint8Array(Bun.zstdDecompressSync(unsized)) as Uint8Array).toEqual(pseudoRandomBytes(3, 8192));
    expectCode(thrown(() => decompressBlock(unsized, 8192, "p", 8)), "E_STORE_DAMAGED", /declares no content size/);
  });

  test("zstdFrame walks a valid frame (alone and among others), a skippable frame, and calls every cut of a frame cut short", () => {
    const text = Bun.zstdCompressSync(textBytes(8192, "z"));
    const random = Bun.zstdCompressSync(pseudoRandomBytes(4, 8192)); // stored as a raw zstd block
    expect(zstdFrame(bufferReader(text), 0)).toEqual({ bytes: text.length, contentSize: 8192 });
    expect(zstdFrame(bufferReader(random), 0)).toEqual({ bytes: random.length, contentSize: 8192 });
    const skippable = new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    const all = new Uint8Array(text.length + skippable.length + random.length);
    all.set(text);
    all.set(skippable, text.length);
    all.set(random, text.length + skippable.length);
    expect(zstdFrame(bufferReader(all), text.length)).toEqual({ bytes: 12, contentSize: 0 });
    expect(zstdFrame(bufferReader(all), text.length + 12)).toEqual({ bytes: random.length, contentSize: 8192 });
    expect(typeof zstdFrame(bufferReader(skippable.subarray(0, 11)), 0)).toBe("string");
    expect(zstdFrame(bufferReader(pseudoRandomBytes(9, 64)), 0)).toMatch(/not a zstd frame at byte 0/);
    for (let n = 0; n < text.length; n++) {
      const r = zstdFrame(bufferReader(text.subarray(0, n)), 0);
      expect([n, typeof r]).toEqual([n, "string"]);
    }
    const cuts = [0, 1, 4, 5, 6, 7, 8, 9, 100, 4096, random.length - 2, random.length - 1];
    for (const n of cuts) {
      const r = zstdFrame(bufferReader(random.subarray(0, n)), 0);
      expect([n, r]).toEqual([n, expect.stringMatching(/cut short/)]);
    }
  });

  test("PackLayout lays blocks out back to back and is full() at its target (targetBytes <= bytes)", () => {
    const layout = new PackLayout();
    expect(layout.bytes).toBe(PACK_HEADER_BYTES);
    expect(layout.full(PACK_HEADER_BYTES)).toBe(true);
    expect(layout.full(PACK_HEADER_BYTES + 1)).toBe(false);
    const offsets: number[] = [];
    // enough entries to grow its table past the first 1024
    for (let i = 0; i < 1500; i++) offsets.push(layout.addBytes(fromHex(hex64(i)), 100, 100, 0));
    expect(layout.count).toBe(1500);
    expect(offsets[0]).toBe(PACK_HEADER_BYTES);
    expect(offsets[1499]).toBe(PACK_HEADER_BYTES + 1499 * 100);
    expect(layout.bytes).toBe(PACK_HEADER_BYTES + 150_000);
    expect(layout.full(layout.bytes)).toBe(true);
    expect(layout.full(layout.bytes - 1)).toBe(true);
    expect(layout.full(layout.bytes + 1)).toBe(false);
    const idx = decodeIndex(layout.index(), "layout.idx");
    expect(idx.count).toBe(1500);
    expect(idx.packBytes).toBe(layout.bytes);
    expect(toHex(readIndexEntry(idx, 1234).digest)).toBe(hex64(1234));
    expect(readIndexEntry(idx, 1234).offset).toBe(offsets[1234]!);
  });
});

/** A zstd frame of one raw block, declaring no content size (as a streaming compressor may write). */
function rawFrameWithoutSize(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 1 + 1 + 3 + data.length);
  out.set([0x28, 0xb5, 0x2f, 0xfd], 0);
  out[4] = 0x00; // no content size, not single-segment, no checksum, no dictionary
  out[5] = 0x18; // window descriptor: 8 KiB
  const bh = 1 | (0 << 1) | (data.length << 3); // last block, raw
  out.set([bh & 0xff, (bh >> 8) & 0xff, (bh >> 16) & 0xff], 6);
  out.set(data, 9);
  return out;
}

// ---- digest table ---------------------------------------------------------------------------------

describe("digest table", () => {
  test("set, getAt and getWords agree; the first location recorded wins; absent digests are -1", () => {
    let t = DigestTable.create(100);
    const digests = Array.from({ length: 100 }, (_, i) => fromHex(hex64(i)));
    digests.forEach((d, i) => {
      t = t.set(d, i * 3);
    });
    expect(t.size).toBe(100);
    const buf = new Uint8Array(100 * 40 + 7);
    digests.forEach((d, i) => buf.set(d, 7 + i * 40));
    digests.forEach((d, i) => {
      expect(t.getAt(d, 0)).toBe(i * 3);
      expect(t.getAt(buf, 7 + i * 40)).toBe(i * 3);
      const words = new Uint32Array(16);
      new Uint8Array(words.buffer).set(d, 16);
      expect(t.getWords(words, 4)).toBe(i * 3);
    });
    t = t.set(digests[5]!, 999);
    expect(t.getAt(digests[5]!, 0)).toBe(15);
    expect(t.size).toBe(100);
    expect(t.getAt(fromHex(hex64(1000)), 0)).toBe(-1);
    // setWords is set() for words
    const w = new Uint32Array(8);
    new Uint8Array(w.buffer).set(fromHex(hex64(500)));
    t = t.setWords(w, 0, 42);
    expect(t.getAt(fromHex(hex64(500)), 0)).toBe(42);
    // a table attached to the same buffer (a worker's) sees the same entries
    const attached = DigestTable.attach(t.buffer);
    expect(attached.getAt(digests[99]!, 0)).toBe(297);
    expect(attached.size).toBe(101);
  });

  test("growth keeps every entry; clear empties it", () => {
    let t = DigestTable.create(10);
    expect(t.capacity).toBe(1024);
    const n = 20_000;
    for (let i = 0; i < n; i++) t = t.set(fromHex(hex64(i)), i);
    expect(t.size).toBe(n);
    expect(t.capacity).toBeGreaterThanOrEqual(2 * n);
    for (let i = 0; i < n; i++) if (t.getAt(fromHex(hex64(i)), 0) !== i) throw new Error(`entry ${i} lost in growth`);
    // digests that share their first word still tell apart (the table keys on 16 bytes)
    const a = fromHex(hex64(1));
    const b = a.slice();
    b[8]! ^= 0xff;
    t = t.set(b, 77);
    expect(t.getAt(a, 0)).toBe(1);
    expect(t.getAt(b, 0)).toBe(77);
    const cap = t.capacity;
    expect(t.clear()).toBe(t);
    expect(t.size).toBe(0);
    expect(t.capacity).toBe(cap);
    expect(t.getAt(a, 0)).toBe(-1);
    t = t.set(a, 5);
    expect(t.getAt(a, 0)).toBe(5);
    expect(t.size).toBe(1);
  });

  test("insertAt loads up to half full and refuses past that", () => {
    const t = DigestTable.create(300);
    expect(t.capacity).toBe(1024);
    const buf = new Uint8Array(600 * 40);
    for (let i = 0; i < 600; i++) buf.set(fromHex(hex64(i)), i * 40);
    for (let i = 0; i < 512; i++) t.insertAt(buf, i * 40, i);
    expect(t.size).toBe(512);
    expect(() => t.insertAt(buf, 512 * 40, 512)).toThrow(/table is full/);
    expect(t.size).toBe(512);
    for (let i = 0; i < 512; i++) expect(t.getAt(buf, i * 40)).toBe(i);
    expect(t.getAt(buf, 512 * 40)).toBe(-1);
  });
});

// ---- the reader -----------------------------------------------------------------------------------

/**
 * A store of two checkpoints: 1 of 600 blocks, 2 of it with 40 blocks changed, one more
 * block and a short last block (3 segments); zstd where it pays, packs of ~512 KiB.
 */
function twoCheckpoints(): { fx: StoreFixture; c1: FixtureCheckpoint; c2: FixtureCheckpoint } {
  const fx = new StoreFixture(tmpDir("cairn-st-"));
  const img1 = makeImage(1, 600);
  const c1 = fx.addCheckpoint(img1, { compression: "zstd", packTargetBytes: 512 * 1024 });
  const img2 = new Uint8Array(601 * 8192 + 4096);
  img2.set(img1);
  for (let b = 100; b < 140; b++) img2.set(pseudoRandomBytes(7000 + b, 8192), b * 8192);
  img2.set(pseudoRandomBytes(8000, 8192 + 4096), 600 * 8192);
  const c2 = fx.addCheckpoint(img2, { compression: "zstd", packTargetBytes: 512 * 1024 });
  return { fx, c1, c2 };
}

describe("reader over a folder", () => {
  test("info, exists, manifestIds and manifests are what was written", async () => {
    const { fx, c1, c2 } = twoCheckpoints();
    const reader = new StoreReader(new DirBackend(fx.dir));
    expect(await reader.exists()).toBe(true);
    expect(await reader.info()).toEqual(fx.info);
    expect(await reader.manifestIds()).toEqual([1, 2]);
    expect(await reader.manifest(1)).toEqual(c1.manifest);
    expect(await reader.manifest(2)).toEqual(c2.manifest);
    expect(c2.manifest.block_count).toBe(602);
    expect(c2.manifest.segments.length).toBe(3);
    expect(c2.manifest.page_size).toBe(4096);
    // the fixture stored raw and zstd data blocks, and segments
    const kinds = new Set([...fx.placed.values()].map((p) => `${p.flags >> 8}/${p.flags & FLAG_ZSTD}`));
    expect([...kinds].sort()).toEqual([`${BLOCK_KIND_DATA}/0`, `${BLOCK_KIND_DATA}/1`, `${BLOCK_KIND_SEGMENT}/1`]);
    // names that are not manifests are not listed
    writeFileSync(join(fx.dir, "manifests", "0000000009.json.tmp-1"), "x");
    writeFileSync(join(fx.dir, "manifests", "notes.json"), "x");
    expect(await reader.manifestIds()).toEqual([1, 2]);
    expectCode(await rejected(reader.manifest(3)), "E_STORE_MISSING");
    expect(await new StoreReader(new DirBackend(join(fx.dir, "nothing"))).exists()).toBe(false);
  });

  test("a manifest file that says it is another checkpoint is damage", async () => {
    const { fx } = twoCheckpoints();
    copyFileSync(join(fx.dir, manifestPath(2)), join(fx.dir, manifestPath(3)));
    const reader = new StoreReader(new DirBackend(fx.dir));
    expect(await reader.manifestIds()).toEqual([1, 2, 3]);
    expectCode(await rejected(reader.manifest(3)), "E_STORE_DAMAGED", /0000000003\.json: says it is checkpoint 2/);
  });

  test("packIds lists the packs with an index, and nothing else under packs/", async () => {
    const { fx } = twoCheckpoints();
    expect(fx.packs.length).toBeGreaterThanOrEqual(4);
    const reader = new StoreReader(new DirBackend(fx.dir));
    expect(await reader.packIds()).toEqual([...fx.packs].sort());
    const orphan = newPackId();
    mkdirSync(join(fx.dir, "packs", orphan.slice(0, 2)), { recursive: true });
    writeFileSync(join(fx.dir, packPath(orphan)), PACK_MAGIC);
    writeFileSync(join(fx.dir, "packs", "README"), "x");
    writeFileSync(join(fx.dir, "packs", fx.packs[0]!.slice(0, 2), `${fx.packs[0]}.idx.tmp-5`), "x");
    expect(await reader.packIds()).toEqual([...fx.packs].sort());
  });

  test("locateSome finds where each digest is among the given packs; block() reads it back", async () => {
    const { fx, c2 } = twoCheckpoints();
    const reader = new StoreReader(new DirBackend(fx.dir));
    const m = c2.manifest;
    const digests = listDigests(c2.list);
    const wanted = [digests[0]!, digests[3]!, digests[120]!, digests[601]!, m.segments[0]!, m.segments[2]!, hex64(12345)];
    const found = await reader.locateSome(m.packs, wanted);
    expect([...found.keys()].sort()).toEqual(wanted.slice(0, 6).sort());
    for (const [d, loc] of found) {
      const p = fx.placed.get(d)!;
      expect({ packId: loc.packId, offset: loc.offset, storedLength: loc.storedLength, rawLength: loc.rawLength, flags: loc.flags }).toEqual(p);
      expect(toHex(loc.digest)).toBe(d);
      expect(toHex(blockDigest(await reader.block(loc)))).toBe(d);
    }
    const b601 = await reader.block(found.get(digests[601]!)!);
    expect(b601).toEqual(c2.image.subarray(601 * 8192));
    expect(b601.length).toBe(4096);
    // among packs that do not hold them, nothing is found
    const others = fx.packs.filter((p) => p !== fx.placed.get(digests[120]!)!.packId);
    expect((await reader.locateSome(others, [digests[120]!])).size).toBe(0);
  });

  test("locateList locates a window of a block list, and names a block that is in none of the packs", async () => {
    const { fx, c2 } = twoCheckpoints();
    const reader = new StoreReader(new DirBackend(fx.dir));
    const m = c2.manifest;
    const first = 250;
    const count = 300;
    const window = c2.list.slice(first * SEGMENT_ENTRY_BYTES, (first + count) * SEGMENT_ENTRY_BYTES);
    const out = new Uint32Array(count * LOC_WORDS);
    const scratch = DigestTable.create(count);
    for (let round = 0; round < 2; round++) {
      out.fill(0xffffffff);
      await reader.locateList(m.packs, window, count, out, (b) => `block ${first + b}`, scratch);
      for (let b = 0; b < count; b++) {
        const p = fx.placed.get(toHex(window.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)))!;
        const o = b * LOC_WORDS;
        expect([b, m.packs[out[o]!], out[o + 1], out[o + 2], out[o + 3], out[o + 4]]).toEqual([b, p.packId, p.offset, p.storedLength, p.rawLength, p.flags]);
      }
    }
    // a block (here the 8th of the window) whose digest no pack holds
    const bad = window.slice();
    bad.set(fromHex(hex64(4242)), 7 * SEGMENT_ENTRY_BYTES);
    const e = await rejected(reader.locateList(m.packs, bad, count, out, (b) => `checkpoint 2: block ${first + b}`, scratch));
    expectCode(e, "E_STORE_DAMAGED", /^checkpoint 2: block 257 is in none of its packs$/);
    // the same when the pack holding a block is left out of the list
    const holder = fx.placed.get(toHex(window.subarray(0, 32)))!.packId;
    const e2 = await rejected(reader.locateList(m.packs.filter((p) => p !== holder), window, count, out, (b) => `block ${first + b}`));
    expectCode(e2, "E_STORE_DAMAGED", /^block \d+ is in none of its packs$/);
  });

  test("segmentEntries and blockList are the block list the fixture wrote, and the image reads back whole", async () => {
    const { fx, c1, c2 } = twoCheckpoints();
    const reader = new StoreReader(new DirBackend(fx.dir));
    for (const c of [c1, c2]) {
      const m = await reader.manifest(c.id);
      expect(await reader.blockList(m)).toEqual(c.list);
      expect(await readImage(reader, m)).toEqual(c.image);
    }
    const m = c2.manifest;
    const where = await reader.locateSome(m.packs, m.segments);
    const s1 = await reader.segmentEntries(m, where, 1, 1);
    expect(s1).toEqual(c2.list.subarray(256 * SEGMENT_ENTRY_BYTES, 512 * SEGMENT_ENTRY_BYTES));
    // the last segment is short (602 blocks = 2 x 256 + 90); asking past the end stops there
    const last = await reader.segmentEntries(m, where, 2, 5);
    expect(last.length).toBe(90 * SEGMENT_ENTRY_BYTES);
    expect(last).toEqual(c2.list.subarray(512 * SEGMENT_ENTRY_BYTES));
    // each entry's quick hash is the seeded xxHash3 of its block
    const dv = new DataView(last.buffer, last.byteOffset);
    expect(dv.getBigUint64(89 * SEGMENT_ENTRY_BYTES + 32, true)).toBe(quickHash(c2.image.subarray(601 * 8192), fx.seed));
    // without the segment's location, it is damage
    where.delete(m.segments[1]!);
    expectCode(await rejected(reader.segmentEntries(m, where, 0, 3)), "E_STORE_DAMAGED", /checkpoint 2: segment 1 .* is in none of its packs/);
  });

  test("the index cache stays bounded while many packs are read, and never answers wrong", async () => {
    // 100 packs of 1024 tiny blocks: 4.9 MB of index entries, more than the reader keeps
    const dir = tmpDir("cairn-ic-");
    mkdirSync(join(dir, "tmp"));
    const packs: { id: string; digests: string[] }[] = [];
    for (let p = 0; p < 100; p++) {
      const pf = new PackFile(join(dir, "tmp"), { sync: false });
      const digests: string[] = [];
      for (let i = 0; i < 1024; i++) {
        const data = new TextEncoder().encode(`pack ${p} block ${i} ...`);
        const d = blockDigest(data);
        const w = new Uint32Array(8);
        new Uint8Array(w.buffer).set(d);
        pf.append(w, 0, data, data.length, 0);
        digests.push(toHex(d));
      }
      pf.close();
      publishPackFiles(dir, pf.packId);
      packs.push({ id: pf.packId, digests });
    }
    class CountingDir extends DirBackend {
      readonly gets = new Map<string, number>();
      override async get(path: string, maxBytes: number): Promise<Uint8Array> {
        this.gets.set(path, (this.gets.get(path) ?? 0) + 1);
        return super.get(path, maxBytes);
      }
    }
    const backend = new CountingDir(dir);
    const reader = new StoreReader(backend);
    const reads = (p: number) => backend.gets.get(indexPath(packs[p]!.id)) ?? 0;
    const rssBefore = process.memoryUsage().rss;
    for (const p of packs) expect((await reader.index(p.id)).count).toBe(1024);
    expect(packs.map((_, i) => reads(i))).toEqual(packs.map(() => 1));
    // the newest indexes are kept, the oldest were dropped and are read again when asked for
    await reader.index(packs[99]!.id);
    expect(reads(99)).toBe(1);
    await reader.index(packs[0]!.id);
    expect(reads(0)).toBe(2);
    // whatever is cached or not, each index read is that pack's index
    for (const i of [0, 1, 2, 50, 98, 99, 3, 0]) {
      const idx = await reader.index(packs[i]!.id);
      const onDisk = decodeIndex(new Uint8Array(readFileSync(join(dir, indexPath(packs[i]!.id)))), "i");
      expect(idx.entries).toEqual(onDisk.entries);
      expect(toHex(readIndexEntry(idx, 1023).digest)).toBe(packs[i]!.digests[1023]!);
    }
    const wanted = [packs[0]!.digests[5]!, packs[1]!.digests[0]!, packs[42]!.digests[1023]!, packs[99]!.digests[512]!];
    const found = await reader.locateSome(packs.map((p) => p.id), wanted);
    expect(wanted.map((d) => found.get(d)?.packId)).toEqual([packs[0]!.id, packs[1]!.id, packs[42]!.id, packs[99]!.id]);
    for (const d of wanted) expect(toHex(blockDigest(await reader.block(found.get(d)!)))).toBe(d);
    // not every index was kept: a full sweep read some of them again
    const total = packs.reduce((n, _, i) => n + reads(i), 0);
    expect(total).toBeGreaterThan(100 + 2);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(200 * 1024 * 1024);
    backend.close();
  }, 60_000);
});

// ---- garbage collection ---------------------------------------------------------------------------

const BS = 8192;

/**
 * Two checkpoints in packs of 32 blocks: 1 = 64 random blocks (packs A, B, then its segment in
 * C); 2 = A's first 4 blocks and 60 new ones (packs D and E). Checkpoint 1's manifest is then
 * removed: B and C are named by no manifest, A is 4/32 live.
 */
function gcStore() {
  const fx = new StoreFixture(tmpDir("cairn-gc-"));
  const target = PACK_HEADER_BYTES + 32 * BS;
  const img1 = pseudoRandomBytes(11, 64 * BS);
  const c1 = fx.addCheckpoint(img1, { packTargetBytes: target });
  const img2 = new Uint8Array(64 * BS);
  img2.set(img1.subarray(0, 4 * BS));
  img2.set(pseudoRandomBytes(12, 60 * BS), 4 * BS);
  const c2 = fx.addCheckpoint(img2, { packTargetBytes: target });
  expect(c1.newPacks.length).toBe(3);
  expect(c2.newPacks.length).toBe(2);
  const [A, B, C] = c1.newPacks as [string, string, string];
  const [D, E] = c2.newPacks as [string, string];
  expect(c2.manifest.packs).toEqual([A, D, E].sort());
  unlinkSync(join(fx.dir, manifestPath(1)));
  return { fx, c2, A, B, C, D, E };
}

/** Every file under `dir/packs` (relative to dir). */
function packFiles(dir: string): string[] {
  const out: string[] = [];
  for (const sub of readdirSync(join(dir, "packs"), { withFileTypes: true })) {
    if (sub.isDirectory()) for (const f of readdirSync(join(dir, "packs", sub.name))) out.push(`packs/${sub.name}/${f}`);
    else out.push(`packs/${sub.name}`);
  }
  return out.sort();
}

describe("garbage collection", () => {
  test("removes the packs no manifest names (and a .pack with no .idx), rewrites a mostly-dead pack and the manifests naming it, leaves other files alone", async () => {
    const { fx, c2, A, B, C, D, E } = gcStore();
    // a pack whose index never made it, and files that are not named like packs
    const stray = newPackId();
    mkdirSync(join(fx.dir, "packs", stray.slice(0, 2)), { recursive: true });
    writeFileSync(join(fx.dir, packPath(stray)), PACK_MAGIC);
    const foreign = ["packs/README.txt", `packs/${A.slice(0, 2)}/notes`, `packs/zz/${B}.pack`, `packs/${D.slice(0, 2)}/${D}.idx.tmp-99`];
    for (const f of foreign) {
      mkdirSync(join(fx.dir, f, ".."), { recursive: true });
      writeFileSync(join(fx.dir, f), "not a pack");
    }
    const sizeOf = (id: string) => statSync(join(fx.dir, packPath(id))).size + statSync(join(fx.dir, indexPath(id))).size;
    const freedByUnreferenced = sizeOf(B) + sizeOf(C) + PACK_MAGIC.length;

    // no checkpoint removed since the last collection: only what no manifest names goes
    const r1 = await collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: false });
    expect(r1).toEqual({ removedPacks: 2, rewrittenPacks: 0, freedBytes: freedByUnreferenced });
    for (const id of [B, C]) {
      expect(existsSync(join(fx.dir, packPath(id)))).toBe(false);
      expect(existsSync(join(fx.dir, indexPath(id)))).toBe(false);
    }
    expect(existsSync(join(fx.dir, packPath(stray)))).toBe(false);
    expect(existsSync(join(fx.dir, packPath(A)))).toBe(true);

    // after a removal: A (4 of 32 blocks live) is rewritten, D and E (all live) are not
    const aBytes = sizeOf(A);
    const r2 = await collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: true, checkpointsRemoved: true });
    expect(r2.removedPacks).toBe(0);
    expect(r2.rewrittenPacks).toBe(1);
    const reader = new StoreReader(new DirBackend(fx.dir));
    const m = await reader.manifest(2);
    const fresh = m.packs.find((p) => ![A, D, E].includes(p))!;
    expect(fresh).toMatch(/^[0-9a-f]{32}$/);
    expect(m.packs).toEqual([fresh, D, E].sort());
    expect(r2.freedBytes).toBe(aBytes - sizeOf(fresh));
    expect(r2.renamed).toEqual([[A, fresh]]);
    const idx = await reader.index(fresh);
    expect(idx.count).toBe(4);
    expect(Array.from({ length: 4 }, (_, i) => toHex(readIndexEntry(idx, i).digest))).toEqual(listDigests(c2.list).slice(0, 4));
    expect(packFiles(fx.dir)).toEqual([...foreign, ...[fresh, D, E].flatMap((p) => [indexPath(p), packPath(p)])].sort());
    expect(readdirSync(join(fx.dir, "tmp"))).toEqual([]);
    expect(await reader.manifestIds()).toEqual([2]);
    // the remaining checkpoint reads back whole, every block checked against its digest
    expect(await readImage(reader, m)).toEqual(c2.image);
    // its segment pack hints follow the blocks into the new pack
    expect(m.segment_packs).toEqual(await segmentPacksFound(reader, m));
    expect(m.segment_packs!.flat()).toContain(m.packs.indexOf(fresh));
    // a collection with nothing to do does nothing
    const r3 = await collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: true });
    expect(r3).toEqual({ removedPacks: 0, rewrittenPacks: 0, freedBytes: 0 });
    for (const f of foreign) expect(readFileSync(join(fx.dir, f), "utf8")).toBe("not a pack");
  });

  test("a pack a manifest names but no checkpoint needs a block of is dropped from the manifest, then deleted", async () => {
    const { fx, c2, A, B, C, D, E } = gcStore();
    // manifest 2 names B too (as a manifest naming more packs than it needs would)
    const reader = new StoreReader(new DirBackend(fx.dir));
    const { checksum: _, ...m2 } = await reader.manifest(2);
    const packs = [...m2.packs, B].sort();
    writeManifestFile(fx.dir, { ...m2, packs, segment_packs: remapSegmentPacks(m2, packs, new Map()) });
    const r = await collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: true });
    // C (named by no manifest) and B (named, but holding nothing needed) go; A is rewritten
    expect({ removed: r.removedPacks, rewritten: r.rewrittenPacks }).toEqual({ removed: 2, rewritten: 1 });
    expect(existsSync(join(fx.dir, packPath(C)))).toBe(false);
    const m = await new StoreReader(new DirBackend(fx.dir)).manifest(2);
    expect(m.packs).not.toContain(B);
    expect(m.packs).not.toContain(A);
    expect(m.packs).toEqual(expect.arrayContaining([D, E]));
    expect(existsSync(join(fx.dir, packPath(B)))).toBe(false);
    expect(existsSync(join(fx.dir, indexPath(B)))).toBe(false);
    expect(await readImage(new StoreReader(new DirBackend(fx.dir)), m)).toEqual(c2.image);
    expect(m.segment_packs).toEqual(await segmentPacksFound(new StoreReader(new DirBackend(fx.dir)), m));
  });

  test("a rewrite copies kept blocks read in runs: a run longer than one read, and blocks with gaps between them", async () => {
    const fx = new StoreFixture(tmpDir("cairn-gc-runs-"));
    const blocks = 1024;
    const img1 = pseudoRandomBytes(21, blocks * BS);
    const c1 = fx.addCheckpoint(img1);
    expect(c1.newPacks.length).toBe(1);
    // checkpoint 2 keeps the first 600 blocks (4.7 MiB in a row: more than one read) and every third after
    const img2 = pseudoRandomBytes(22, blocks * BS);
    const kept: number[] = [];
    for (let b = 0; b < blocks; b++) {
      if (b >= 600 && b % 3 !== 0) continue;
      img2.set(img1.subarray(b * BS, (b + 1) * BS), b * BS);
      kept.push(b);
    }
    const c2 = fx.addCheckpoint(img2);
    unlinkSync(join(fx.dir, manifestPath(1)));
    const r = await collectGarbage(fx.dir, { minLiveFraction: 0.9, sync: true, checkpointsRemoved: true });
    expect(r.rewrittenPacks).toBe(1);
    expect(r.renamed![0]![0]).toBe(c1.newPacks[0]!);
    const reader = new StoreReader(new DirBackend(fx.dir));
    const m = await reader.manifest(2);
    const fresh = r.renamed![0]![1];
    const idx = await reader.index(fresh);
    // the kept blocks in their order, then the segments the two checkpoints share (the first 512 blocks), nothing else
    const shared = c1.manifest.segments.filter((d) => c2.manifest.segments.includes(d));
    expect(shared.length).toBe(2);
    expect(Array.from({ length: idx.count }, (_, i) => toHex(readIndexEntry(idx, i).digest))).toEqual([...kept.map((b) => listDigests(c2.list)[b]!), ...shared]);
    expect(await readImage(reader, m)).toEqual(c2.image);
    expect(readdirSync(join(fx.dir, "tmp"))).toEqual([]);
  });

  test("a damaged manifest makes it collect nothing (E_STORE_DAMAGED, every file intact)", async () => {
    const { fx } = gcStore();
    const file = join(fx.dir, manifestPath(2));
    const text = readFileSync(file, "utf8");
    writeFileSync(file, text.replace('"blob_count": 20', '"blob_count": 21'));
    const before = treeSnapshot(fx.dir);
    const e = await rejected(collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: true }));
    expectCode(e, "E_STORE_DAMAGED", /garbage collection skipped: .*0000000002\.json: manifest checksum mismatch/);
    expect(treeSnapshot(fx.dir)).toEqual(before);
    // and a manifest cut short the same
    writeFileSync(file, text.slice(0, text.length / 2));
    const before2 = treeSnapshot(fx.dir);
    expectCode(await rejected(collectGarbage(fx.dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: false })), "E_STORE_DAMAGED");
    expect(treeSnapshot(fx.dir)).toEqual(before2);
  });
});

// ---- retention ------------------------------------------------------------------------------------

describe("retention", () => {
  test("expiredCheckpoints keeps the newest `keep`; 0 keeps all; more than there are keeps all", () => {
    expect(expiredCheckpoints([1, 2, 3, 4, 5], 2)).toEqual([1, 2, 3]);
    expect(expiredCheckpoints([1, 2, 3, 4, 5], 1)).toEqual([1, 2, 3, 4]);
    expect(expiredCheckpoints([1, 2, 3, 4, 5], 5)).toEqual([]);
    expect(expiredCheckpoints([1, 2, 3, 4, 5], 0)).toEqual([]);
    expect(expiredCheckpoints([1, 2, 3, 4, 5], 9)).toEqual([]);
    expect(expiredCheckpoints([], 2)).toEqual([]);
    expect(expiredCheckpoints([3, 7, 12], 1)).toEqual([3, 7]);
  });
});
