/**
 * The checkpoint store's on-disk format, version 1. A store is a folder (or an archive, or an
 * S3 prefix) holding:
 *
 *   cairn-store.json            format, owner node id, block size, quick-hash seed
 *   packs/<xx>/<pack id>.pack   blocks, back to back (raw or zstd), after an 8-byte magic
 *   packs/<xx>/<pack id>.idx    the pack's index: one 48-byte entry per block, then a BLAKE3
 *                               of everything before it
 *   manifests/<id>.json         one per checkpoint: what it needs (segment digests, packs),
 *                               database size and page size, node id, time, cairn version,
 *                               and a BLAKE3 of its own text
 *   tmp/                        files being written; anything here is a leftover
 *
 * A block is BLOCK_SIZE bytes of the database image (the last one may be shorter). The list of
 * a checkpoint's blocks is cut into segments of SEGMENT_BLOCKS entries; each segment is itself
 * stored as a block (kind "segment"), so that a checkpoint of a barely changed database stores
 * only the segments that changed, not the whole list again.
 *
 * Every file is immutable once renamed into place, which is what lets the same format live in
 * a directory, a tar archive or an object store. Packs and their indexes are in pack.ts.
 */
import { CairnError } from "../errors.ts";
import { encryptionProblem, type StoreEncryption } from "./crypto.ts";
import { blockDigest, toHex } from "./hash.ts";

export const STORE_FORMAT = 1;
export const STORE_FILE = "cairn-store.json";
export const STORE_LOCK_FILE = "cairn-store.lock";
/** Held by the node whose configured store this is, for its whole life (prune refuses to run beside it). */
export const STORE_OWNER_LOCK_FILE = "cairn-store.node.lock";
export const DEFAULT_BLOCK_SIZE = 8192;
export const SEGMENT_BLOCKS = 256;

// ---- the format's own limits: every size read from a store is checked against them before
// anything is allocated for it, so a crafted store or archive fails cleanly, naming the file

export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const MAX_SEGMENT_BLOCKS = 65536;
export const MAX_STORE_INFO_BYTES = 64 * 1024;
/**
 * A manifest names a 64-hex digest per segment: 256 MiB holds ~3.7 million segments, a
 * database of ~7 TiB at 8 KiB blocks.
 */
export const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;
/** SQLite's own limit: 2^32 - 2 pages of at most 64 KiB. */
export const MAX_DB_BYTES = 0xfffffffe * 65536;

export interface StoreInfo {
  format: number;
  node_id: string;
  created: string;
  block_size: number;
  /** Seed of the quick hash (decimal string of a u64); only in the node's own local store. */
  quick_hash_seed?: string;
  /** In copies of a store (archives, remote stores): the seed's digest, never the seed. */
  quick_hash_seed_digest?: string;
  /** An encrypted store (store/crypto.ts): its scheme, key generation and wrapped keys. */
  encryption?: StoreEncryption;
}

export interface ManifestStats {
  started: string;
  duration_ms: number;
  /** Bytes of the database image (= db_size_bytes). */
  logical_bytes: number;
  new_blocks: number;
  /** Bytes this checkpoint added to the store (packs and their indexes). */
  new_bytes: number;
  blocks_rehashed: number;
  /** How the changes were found: only the pages changed since the previous checkpoint read ("changes"), or every block ("full"). */
  scan?: "changes" | "full";
  /** Bytes of the database read for it. */
  read_bytes?: number;
}

/** A file carried with a checkpoint: stored once per content at includedPath(name). */
export interface IncludedFile {
  /** Absolute path it was read from (and is put back at). */
  path: string;
  /** Its content's block name (a keyed digest in an encrypted store), hex. */
  name: string;
  size: number;
  /** Permission bits it had. */
  mode: number;
}

/** A carried file may be at most this large (config and key files, not data). */
export const MAX_INCLUDED_FILE_BYTES = 16 * 1024 * 1024;
export const MAX_INCLUDED_FILES = 256;

export interface Manifest {
  format: number;
  id: number;
  node_id: string;
  created: string;
  cairn_version: string;
  page_size: number;
  page_count: number;
  db_size_bytes: number;
  block_size: number;
  block_count: number;
  segment_blocks: number;
  /** BLAKE3 of each segment, in order. */
  segments: string[];
  /** Every pack holding a block or segment this checkpoint needs. */
  packs: string[];
  /**
   * For each segment, the numbers (in `packs`) of the packs its blocks are in. A hint that lets
   * verify read only those packs' indexes for a segment; a block not found there is looked for
   * in every pack of the checkpoint, so a wrong hint costs time, never a verdict.
   */
  segment_packs?: number[][];
  db_totals: { blob_count: number; blob_bytes: number };
  stats: ManifestStats;
  /** An encrypted store: the key generation its blocks were sealed under (store/keys.ts). */
  key_generation?: number;
  /** Where the image stands in the shipped log (store/log.ts), when WAL shipping was on. */
  log?: { chain: string; txn: number; ms: number };
  /** The files checkpoint_config.include_files carried with this checkpoint (store/included.ts). */
  files?: IncludedFile[];
  /** BLAKE3 (hex) of this JSON with `checksum` set to "". */
  checksum: string;
}

// ---- paths ----------------------------------------------------------------------------------

export function packPath(packId: string): string {
  return `packs/${packId.slice(0, 2)}/${packId}.pack`;
}

export function indexPath(packId: string): string {
  return `packs/${packId.slice(0, 2)}/${packId}.idx`;
}

export function includedPath(name: string): string {
  return `files/${name.slice(0, 2)}/${name}`;
}

const INCLUDED_FILE_RE = /^files\/([0-9a-f]{2})\/([0-9a-f]{64})$/;

/** The name of a carried file's stored object, or undefined for any other path. */
export function includedNameOf(path: string): string | undefined {
  const m = INCLUDED_FILE_RE.exec(path);
  return m && m[2]!.slice(0, 2) === m[1] ? m[2] : undefined;
}

export function manifestPath(id: number): string {
  return `manifests/${String(id).padStart(10, "0")}.json`;
}

export const MANIFEST_NAME_RE = /^(\d{10})\.json$/;
export const PACK_ID_RE = /^[0-9a-f]{32}$/;
export const DIGEST_HEX_RE = /^[0-9a-f]{64}$/;
const PACK_FILE_RE = /^packs\/([0-9a-f]{2})\/([0-9a-f]{32})\.(pack|idx)$/;

/**
 * The pack a stored file belongs to (`packs/<xx>/<id>.pack` or `.idx`, with xx the id's first
 * two characters), or undefined for any other path: the one parser of pack file names.
 */
export function packFileOf(path: string): { packId: string; ext: "pack" | "idx" } | undefined {
  const m = PACK_FILE_RE.exec(path);
  if (!m || m[2]!.slice(0, 2) !== m[1]) return undefined;
  return { packId: m[2]!, ext: m[3] as "pack" | "idx" };
}


// ---- segments --------------------------------------------------------------------------------

/** One block-list entry: BLAKE3 digest (32) + quick hash (8); a segment is SEGMENT_BLOCKS of them. */
export const SEGMENT_ENTRY_BYTES = 40;

// ---- manifests -------------------------------------------------------------------------------

export function encodeManifest(m: Omit<Manifest, "checksum">): Uint8Array {
  return encodedManifest(m).bytes;
}

/** The manifest's bytes, and the manifest as they say (with its checksum: what decodeManifest would give back). */
export function encodedManifest(m: Omit<Manifest, "checksum">): { bytes: Uint8Array; manifest: Manifest } {
  const withEmpty = { ...m, checksum: "" };
  const checksum = toHex(blockDigest(new TextEncoder().encode(JSON.stringify(withEmpty))));
  const manifest = { ...m, checksum } as Manifest;
  return { bytes: new TextEncoder().encode(`${JSON.stringify(manifest, null, 1)}\n`), manifest };
}

/** Parse and check a manifest; throws E_STORE_DAMAGED (or E_STORE_FORMAT) naming `name`. */
export function decodeManifest(data: Uint8Array, name: string): Manifest {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: ${why}`);
  let m: Manifest;
  try {
    m = JSON.parse(new TextDecoder().decode(data)) as Manifest;
  } catch {
    throw bad("manifest is not valid JSON (truncated or damaged)");
  }
  if (typeof m !== "object" || m === null) throw bad("manifest is not an object");
  if (typeof m.format === "number" && m.format > STORE_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `${name}: manifest format ${m.format} is newer than this cairn understands (${STORE_FORMAT})`, {
      hint: "use a newer cairn binary",
    });
  }
  const { checksum, ...rest } = m;
  const expect = toHex(blockDigest(new TextEncoder().encode(JSON.stringify({ ...rest, checksum: "" }))));
  if (checksum !== expect) throw bad("manifest checksum mismatch (damaged)");
  // the checksum proves only that the text is whole: every field is checked before use
  const why = manifestProblem(m);
  if (why) throw bad(`manifest ${why}`);
  return m;
}

const isCount = (n: unknown, max = Number.MAX_SAFE_INTEGER): n is number => Number.isSafeInteger(n) && (n as number) >= 0 && (n as number) <= max;
const isPowerOfTwo = (n: unknown, min: number, max: number): n is number => isCount(n, max) && n >= min && (n & (n - 1)) === 0;
const isTime = (s: unknown): s is string => typeof s === "string" && s.length <= 64 && Number.isFinite(Date.parse(s));
const isName = (s: unknown): s is string => typeof s === "string" && /^[A-Za-z0-9._:-]{1,128}$/.test(s);

/** What is wrong with a manifest's fields (types, ranges, and how they agree), or undefined. */
function manifestProblem(m: Manifest): string | undefined {
  if (m.format !== STORE_FORMAT) return `has format ${JSON.stringify(m.format)}`;
  if (!isCount(m.id) || m.id < 1) return `has an impossible id ${JSON.stringify(m.id)}`;
  if (!isName(m.node_id)) return "has no valid node id";
  if (!isTime(m.created)) return "has no valid creation time";
  if (typeof m.cairn_version !== "string" || m.cairn_version.length > 64) return "has no valid cairn version";
  if (!isPowerOfTwo(m.page_size, 512, 65536)) return `has an impossible page size ${JSON.stringify(m.page_size)}`;
  if (!isCount(m.db_size_bytes, MAX_DB_BYTES)) return `has an impossible database size ${JSON.stringify(m.db_size_bytes)}`;
  if (!isCount(m.page_count) || m.page_count * m.page_size !== m.db_size_bytes) return "has a page count that does not match its size";
  if (!isPowerOfTwo(m.block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE)) return `has an impossible block size ${JSON.stringify(m.block_size)}`;
  if (m.block_count !== Math.ceil(m.db_size_bytes / m.block_size)) return "has a block count that does not match its size";
  if (!isCount(m.segment_blocks, MAX_SEGMENT_BLOCKS) || m.segment_blocks < 1) return `has an impossible segment length ${JSON.stringify(m.segment_blocks)}`;
  if (!Array.isArray(m.segments) || m.segments.length !== Math.ceil(m.block_count / m.segment_blocks)) return "has a segment list that does not match its block count";
  for (const s of m.segments) if (typeof s !== "string" || !DIGEST_HEX_RE.test(s)) return "names a segment that is not a digest";
  if (!Array.isArray(m.packs)) return "has no pack list";
  for (const p of m.packs) if (typeof p !== "string" || !PACK_ID_RE.test(p)) return `names a pack that is not a pack id: ${JSON.stringify(String(p).slice(0, 80))}`;
  if (new Set(m.packs).size !== m.packs.length) return "names a pack twice";
  if (m.segment_packs !== undefined) {
    const sp = m.segment_packs;
    if (!Array.isArray(sp) || sp.length !== m.segments.length) return "has a segment pack list that does not match its segments";
    for (const l of sp) {
      if (!Array.isArray(l)) return "has a segment pack list that is not a list of pack numbers";
      for (const p of l) if (!isCount(p, m.packs.length - 1)) return `has a segment pack number out of range: ${JSON.stringify(p)}`;
    }
  }
  if (typeof m.db_totals !== "object" || m.db_totals === null || !isCount(m.db_totals.blob_count) || !isCount(m.db_totals.blob_bytes)) return "has no valid blob totals";
  const st = m.stats;
  if (typeof st !== "object" || st === null || !isCount(st.new_bytes) || !isCount(st.duration_ms) || !isCount(st.new_blocks) || !isCount(st.logical_bytes)) return "has no valid stats";
  if (m.key_generation !== undefined && (!isCount(m.key_generation) || m.key_generation < 1)) return "has an impossible key generation";
  if (m.log !== undefined) {
    const l = m.log;
    if (typeof l !== "object" || l === null || typeof l.chain !== "string" || !/^[0-9a-f]{16}$/.test(l.chain) || !isCount(l.txn) || !isCount(l.ms)) return "has an invalid log position";
  }
  if (m.files !== undefined) {
    if (!Array.isArray(m.files) || m.files.length > MAX_INCLUDED_FILES) return "has an invalid list of carried files";
    const paths = new Set<string>();
    for (const f of m.files) {
      if (typeof f !== "object" || f === null || typeof f.path !== "string" || !f.path.startsWith("/") || f.path.length > 4096 || f.path.includes("\0") || f.path.split("/").includes("..")) return "names a carried file with an invalid path";
      if (typeof f.name !== "string" || !DIGEST_HEX_RE.test(f.name) || !isCount(f.size, MAX_INCLUDED_FILE_BYTES) || !isCount(f.mode, 0o7777)) return `has an invalid entry for the carried file ${f.path}`;
      if (paths.has(f.path)) return `names the carried file ${f.path} twice`;
      paths.add(f.path);
    }
  }
  return undefined;
}

export function encodeStoreInfo(info: StoreInfo): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(info, null, 2)}\n`);
}

/**
 * The segment pack hints of a manifest whose pack list becomes `packs` (packs renamed by
 * `renamed`, dropped ones gone): each number moved to the pack's new place, a dropped one left out.
 */
export function remapSegmentPacks(m: Pick<Manifest, "packs" | "segment_packs">, packs: string[], renamed: Map<string, string>): number[][] | undefined {
  if (!m.segment_packs) return undefined;
  const at = new Map(packs.map((p, i) => [p, i]));
  const moved = m.packs.map((p) => at.get(renamed.get(p) ?? p) ?? -1);
  return m.segment_packs.map((l) => [...new Set(l.map((p) => moved[p]!).filter((p) => p >= 0))].sort((a, b) => a - b));
}

export function decodeStoreInfo(data: Uint8Array, name: string): StoreInfo {
  let info: StoreInfo;
  try {
    info = JSON.parse(new TextDecoder().decode(data)) as StoreInfo;
  } catch {
    throw new CairnError("E_STORE_DAMAGED", `${name}: not valid JSON (damaged)`);
  }
  if (typeof info?.format !== "number") throw new CairnError("E_STORE_DAMAGED", `${name}: no format version`);
  if (info.format > STORE_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `${name}: store format ${info.format} is newer than this cairn understands (${STORE_FORMAT})`, {
      hint: "use a newer cairn binary",
    });
  }
  const seedOk = info.quick_hash_seed === undefined || (typeof info.quick_hash_seed === "string" && /^\d{1,20}$/.test(info.quick_hash_seed) && BigInt(info.quick_hash_seed) < 2n ** 64n);
  const seedDigestOk = info.quick_hash_seed_digest === undefined || (typeof info.quick_hash_seed_digest === "string" && DIGEST_HEX_RE.test(info.quick_hash_seed_digest));
  if (!isName(info.node_id) || !isPowerOfTwo(info.block_size, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE) || !seedOk || !seedDigestOk || (info.quick_hash_seed === undefined && info.quick_hash_seed_digest === undefined)) {
    throw new CairnError("E_STORE_DAMAGED", `${name}: missing or impossible fields`);
  }
  const enc = info.encryption === undefined ? undefined : encryptionProblem(info.encryption);
  if (enc) throw new CairnError("E_STORE_DAMAGED", `${name}: ${enc}`);
  return info;
}

/**
 * The store info as it leaves the host (an archive, a remote store): the quick-hash seed is
 * replaced by its digest. The seed stays in the node's own store (owner-only), so nobody who
 * can read a bucket or a backup disk can craft blocks whose quick hash collides; the digest
 * is enough to tell two copies of one store apart from copies of another.
 */
export function storeInfoForCopy(info: StoreInfo): StoreInfo {
  const { quick_hash_seed: seed, ...rest } = info;
  return { ...rest, quick_hash_seed_digest: info.quick_hash_seed_digest ?? seedDigest(seed!) };
}

/** The digest of a quick-hash seed (what copies of a store carry). */
export function seedDigest(seed: string): string {
  return toHex(blockDigest(new TextEncoder().encode(`cairn quick-hash seed ${seed}`)));
}

/** Whether two store infos are of the same store (same seed, or the same seed digest). */
export function sameStore(a: StoreInfo, b: StoreInfo): boolean {
  const da = a.quick_hash_seed_digest ?? seedDigest(a.quick_hash_seed!);
  const db = b.quick_hash_seed_digest ?? seedDigest(b.quick_hash_seed!);
  return a.node_id === b.node_id && a.block_size === b.block_size && da === db;
}

