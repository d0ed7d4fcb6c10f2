/**
 * Checkpoint stores built by hand, without the binary, for the unit tests of the store core:
 * database "images" are cut into blocks (BLAKE3-named, deduplicated across the store), the
 * blocks written into packs with the one pack writer (PackFile in tmp/, then published), each
 * image's block list (digest + seeded quick hash per block) cut into segments stored as
 * blocks of kind "segment", and a manifest written last, as a real checkpoint does
 * (src/checkpoint/create.ts, range-job.ts). The fixture remembers where it put every block,
 * so a test can check what a reader answers against what was written.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { publishPackFiles, writeManifestFile } from "../../src/store/dir/writer.ts";
import {
  DEFAULT_BLOCK_SIZE,
  decodeManifest,
  encodeManifest,
  encodeStoreInfo,
  type Manifest,
  SEGMENT_BLOCKS,
  SEGMENT_ENTRY_BYTES,
  STORE_FILE,
  STORE_FORMAT,
  type StoreInfo,
} from "../../src/store/format.ts";
import { blockDigest, quickHash, toHex } from "../../src/store/hash.ts";
import { BLOCK_KIND_DATA, BLOCK_KIND_SEGMENT, FLAG_ZSTD, PACK_TARGET_BYTES } from "../../src/store/pack.ts";
import { PackFile } from "../../src/store/pack-writer.ts";
import type { StoreReader } from "../../src/store/reader.ts";
import { pseudoRandomBytes } from "./node.ts";

/** Where the fixture put one stored block. */
export interface Placed {
  packId: string;
  offset: number;
  storedLength: number;
  rawLength: number;
  flags: number;
}

export interface FixtureCheckpoint {
  id: number;
  image: Uint8Array;
  /** The block list as written: SEGMENT_ENTRY_BYTES per block. */
  list: Uint8Array;
  manifest: Manifest;
  /** Packs this checkpoint wrote (in order). */
  newPacks: string[];
}

export interface AddOptions {
  /** Close a pack once it holds this many bytes (PackLayout.full). */
  packTargetBytes?: number;
  /** Store blocks compressed when that makes them smaller (as `compression: zstd` does). */
  compression?: "none" | "zstd";
  /** Close the open pack before the segments are stored (so they get packs of their own). */
  segmentsInOwnPack?: boolean;
  segmentBlocks?: number;
  /** Leave the segment pack hints out of the manifest (as manifests written before them). */
  noSegmentPacks?: boolean;
}

export class StoreFixture {
  readonly info: StoreInfo;
  readonly seed: bigint;
  readonly checkpoints: FixtureCheckpoint[] = [];
  /** Every pack published, in order. */
  readonly packs: string[] = [];
  /** digest (hex) → where it is stored (the first copy). */
  readonly placed = new Map<string, Placed>();

  constructor(
    readonly dir: string,
    opts: { nodeId?: string; seed?: bigint } = {},
  ) {
    this.seed = opts.seed ?? 0x1234_5678_9abc_def0n;
    this.info = {
      format: STORE_FORMAT,
      node_id: opts.nodeId ?? "fixture-node",
      created: "2024-01-02T03:04:05.000Z",
      block_size: DEFAULT_BLOCK_SIZE,
      quick_hash_seed: this.seed.toString(),
    };
    for (const sub of ["tmp", "packs", "manifests"]) mkdirSync(join(dir, sub), { recursive: true });
    writeFileSync(join(dir, STORE_FILE), encodeStoreInfo(this.info));
  }

  /** Add a checkpoint of `image`; returns what was written. */
  addCheckpoint(image: Uint8Array, opts: AddOptions = {}): FixtureCheckpoint {
    const bs = this.info.block_size;
    const target = opts.packTargetBytes ?? PACK_TARGET_BYTES;
    const segmentBlocks = opts.segmentBlocks ?? SEGMENT_BLOCKS;
    const id = (this.checkpoints.at(-1)?.id ?? 0) + 1;
    const pageSize = pageSizeOf(image.length);
    const blockCount = Math.ceil(image.length / bs);
    const list = new Uint8Array(blockCount * SEGMENT_ENTRY_BYTES);
    const needed = new Set<string>();
    const newPacks: string[] = [];
    let pack: PackFile | undefined;

    const close = () => {
      if (!pack) return;
      pack.close();
      publishPackFiles(this.dir, pack.packId);
      this.packs.push(pack.packId);
      newPacks.push(pack.packId);
      pack = undefined;
    };
    const store = (digest: Uint8Array, data: Uint8Array, kind: number) => {
      const hex = toHex(digest);
      const have = this.placed.get(hex);
      if (have) {
        needed.add(have.packId);
        return;
      }
      pack ??= new PackFile(join(this.dir, "tmp"), { sync: false });
      const words = new Uint32Array(8);
      new Uint8Array(words.buffer).set(digest);
      const z = opts.compression === "zstd" ? Bun.zstdCompressSync(data, { level: 1 }) : undefined;
      const flags = kind << 8;
      let placed: Placed;
      if (z && z.length < data.length) {
        const offset = pack.append(words, 0, new Uint8Array(z.buffer, z.byteOffset, z.byteLength), data.length, flags | FLAG_ZSTD);
        placed = { packId: pack.packId, offset, storedLength: z.length, rawLength: data.length, flags: flags | FLAG_ZSTD };
      } else {
        const offset = pack.append(words, 0, data, data.length, flags);
        placed = { packId: pack.packId, offset, storedLength: data.length, rawLength: data.length, flags };
      }
      this.placed.set(hex, placed);
      needed.add(pack.packId);
      if (pack.layout.full(target)) close();
    };

    for (let b = 0; b < blockCount; b++) {
      const data = image.subarray(b * bs, Math.min((b + 1) * bs, image.length));
      const digest = blockDigest(data);
      list.set(digest, b * SEGMENT_ENTRY_BYTES);
      new DataView(list.buffer).setBigUint64(b * SEGMENT_ENTRY_BYTES + 32, quickHash(data, this.seed), true);
      store(digest, data, BLOCK_KIND_DATA);
    }
    if (opts.segmentsInOwnPack) close();
    const segments: string[] = [];
    for (let s = 0; s * segmentBlocks < blockCount; s++) {
      const seg = list.slice(s * segmentBlocks * SEGMENT_ENTRY_BYTES, Math.min(blockCount, (s + 1) * segmentBlocks) * SEGMENT_ENTRY_BYTES);
      const digest = blockDigest(seg);
      segments.push(toHex(digest));
      store(digest, seg, BLOCK_KIND_SEGMENT);
    }
    close();
    const packs = [...needed].sort();
    const segmentPacks = segments.map((_, s) => {
      const at = new Set<number>();
      for (let b = s * segmentBlocks; b < Math.min(blockCount, (s + 1) * segmentBlocks); b++) {
        at.add(packs.indexOf(this.placed.get(toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)))!.packId));
      }
      return [...at].sort((x, y) => x - y);
    });

    const m: Omit<Manifest, "checksum"> = {
      format: STORE_FORMAT,
      id,
      node_id: this.info.node_id,
      created: new Date(Date.UTC(2024, 0, 2, 3, 4, id)).toISOString(),
      cairn_version: "0.1.0",
      page_size: pageSize,
      page_count: image.length / pageSize,
      db_size_bytes: image.length,
      block_size: bs,
      block_count: blockCount,
      segment_blocks: segmentBlocks,
      segments,
      packs,
      ...(opts.noSegmentPacks ? {} : { segment_packs: segmentPacks }),
      db_totals: { blob_count: id * 10, blob_bytes: id * 1000 },
      stats: {
        started: new Date(Date.UTC(2024, 0, 2, 3, 4, id)).toISOString(),
        duration_ms: 5,
        logical_bytes: image.length,
        new_blocks: 0,
        new_bytes: 0,
        blocks_rehashed: blockCount,
      },
    };
    writeManifestFile(this.dir, m);
    const cp: FixtureCheckpoint = { id, image, list, manifest: decodeManifest(encodeManifest(m), `manifest ${id}`), newPacks };
    this.checkpoints.push(cp);
    return cp;
  }
}

/** The largest SQLite page size (512..65536) that divides `bytes`. */
export function pageSizeOf(bytes: number): number {
  for (let p = 65536; p >= 512; p /= 2) if (bytes % p === 0) return p;
  throw new Error(`an image of ${bytes} bytes is not a whole number of pages`);
}

/** The digests (hex) of a block list, in order. */
export function listDigests(list: Uint8Array): string[] {
  const out: string[] = [];
  for (let o = 0; o < list.length; o += SEGMENT_ENTRY_BYTES) out.push(toHex(list.subarray(o, o + 32)));
  return out;
}

/**
 * A database-like image of `blocks` blocks (plus `tailBytes` of a last, short block): random
 * blocks, compressible text blocks, zero blocks and repeats of earlier blocks, from `seed`.
 */
export function makeImage(seed: number, blocks: number, tailBytes = 0, bs = DEFAULT_BLOCK_SIZE): Uint8Array {
  const out = new Uint8Array(blocks * bs + tailBytes);
  for (let b = 0; b < blocks; b++) {
    const at = b * bs;
    switch ((seed + b) % 5) {
      case 0:
      case 1:
        out.set(pseudoRandomBytes(seed * 100_003 + b, bs), at);
        break;
      case 2:
        out.set(new TextEncoder().encode(`block ${b} of image ${seed}: the quick brown fox jumps over the lazy dog. `.repeat(120)).subarray(0, bs), at);
        break;
      case 3:
        // zeros (a freed page): every such block is the same block
        break;
      case 4:
        if (b >= 5) out.copyWithin(at, at - 5 * bs, at - 4 * bs);
        else out.set(pseudoRandomBytes(seed * 7 + b, bs), at);
        break;
    }
  }
  if (tailBytes > 0) out.set(pseudoRandomBytes(seed + 99, tailBytes), blocks * bs);
  return out;
}

/** Rebuild checkpoint `m`'s image through a reader: its block list, each block located and read (digest-checked). */
export async function readImage(reader: StoreReader, m: Manifest): Promise<Uint8Array> {
  const list = await reader.blockList(m);
  const digests = [...new Set(listDigests(list))];
  const where = await reader.locateSome(m.packs, digests);
  const out = new Uint8Array(m.db_size_bytes);
  for (let b = 0; b < m.block_count; b++) {
    const d = toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32));
    const loc = where.get(d);
    if (!loc) throw new Error(`block ${b} (${d.slice(0, 16)}…) is in none of checkpoint ${m.id}'s packs`);
    out.set(await reader.block(loc), b * m.block_size);
  }
  return out;
}

/** For each segment of `m`, the numbers in m.packs of the packs its blocks are found in: what its segment_packs should say. */
export async function segmentPacksFound(reader: StoreReader, m: Manifest): Promise<number[][]> {
  const list = await reader.blockList(m);
  const where = await reader.locateSome(m.packs, [...new Set(listDigests(list))]);
  return m.segments.map((_, s) => {
    const at = new Set<number>();
    for (let b = s * m.segment_blocks; b < Math.min(m.block_count, (s + 1) * m.segment_blocks); b++) {
      at.add(m.packs.indexOf(where.get(toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)))!.packId));
    }
    return [...at].sort((x, y) => x - y);
  });
}
