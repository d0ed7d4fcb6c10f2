/**
 * Verifying checkpoints: re-read every file and every block they need and check it (manifest
 * and index checksums, pack magic and length, each block's BLAKE3). Each pack is read once,
 * however many checkpoints share it; every damaged checkpoint is named with what is wrong.
 *
 * Memory does not grow with the store: the packs are checked one at a time, keeping only what
 * is wrong; then each checkpoint's blocks are found in its packs' indexes a window of segments
 * at a time (with the manifest's segment pack hints, a fixed window reading only the indexes of
 * the packs its segments' blocks are in), and a segment already found whole for one checkpoint
 * is not looked for again for another that names the same packs (checkpoints share most of
 * their segments).
 */
import { CairnError, errorMessage } from "../errors.ts";
import { DigestTable } from "./digest-table.ts";
import { type Manifest, packPath, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { toHex } from "./hash.ts";
import { decodeBlock, INDEX_ENTRY_BYTES, PACK_MAGIC, readIndexEntry } from "./pack.ts";
import { type BlockLocation, hintedPacks, type StoreReader, windowSegments } from "./reader.ts";
import type { Store } from "./store.ts";
import { chainPath, decodeSegment, indexLog, LOG_DIR, MAX_SEGMENT_BYTES, segmentOf, type SegmentRef } from "./log.ts";
import { openIncluded } from "./included.ts";
import type { StreamReader } from "./stream-reader.ts";

export interface CheckpointVerdict {
  id: number;
  ok: boolean;
  problems: string[];
  blocks: number;
  bytes: number;
}

export interface VerifyProgress {
  packsDone: number;
  packsTotal: number;
  bytesDone: number;
}

/** At most this many problems are named per checkpoint; the rest are counted. */
const MAX_PROBLEMS = 20;
/** Damaged blocks remembered by digest; past this only the packs are named. */
const MAX_BAD_BLOCKS = 10_000;

/** What checking every pack found wrong. */
interface PackDamage {
  packs: Map<string, string>;
  /** digest hex → what is wrong with a copy of it (any pack) */
  blocks: Map<string, string>;
  /** pack id → the digests (hex) damaged in it */
  inPack: Map<string, Set<string>>;
}

export async function verifyCheckpoints(
  store: Store,
  ids: number[],
  onProgress?: (p: VerifyProgress) => void,
): Promise<CheckpointVerdict[]> {
  if (store.streamer) return verifyStream(store.streamer, onProgress);
  const reader = store.reader!;
  await reader.info();
  const manifests = new Map<number, Manifest>();
  const verdicts = new Map<number, CheckpointVerdict>();
  for (const id of ids) {
    const v: CheckpointVerdict = { id, ok: true, problems: [], blocks: 0, bytes: 0 };
    verdicts.set(id, v);
    try {
      manifests.set(id, await reader.manifest(id));
    } catch (e) {
      v.problems.push(errorMessage(e));
    }
  }
  const damage = await checkPacks(reader, [...new Set([...manifests.values()].flatMap((m) => m.packs))].sort(), onProgress);
  // segment digest → the packs its blocks were all found intact in (for the next checkpoint sharing it)
  const wholeSegments = new Map<string, string[]>();
  for (const [id, m] of manifests) {
    const v = verdicts.get(id)!;
    const problem = (s: string) => {
      if (v.problems.length < MAX_PROBLEMS) v.problems.push(s);
      else if (v.problems.length === MAX_PROBLEMS) v.problems.push("(more problems not shown)");
    };
    try {
      await verifyOne(reader, m, damage, wholeSegments, v, problem);
    } catch (e) {
      problem(errorMessage(e));
    }
    // the files carried with it: each there, opening, and matching its name
    for (const f of m.files ?? []) {
      try {
        await reader.carriedFile(f);
      } catch (e) {
        problem(`carried file ${f.path}: ${errorMessage(e)}`);
      }
    }
  }
  for (const v of verdicts.values()) v.ok = v.problems.length === 0;
  return ids.map((id) => verdicts.get(id)!);
}

/** Bytes of a pack read at a time (a run of whole blocks, or one block longer than this). */
const READ_BYTES = 4 * 1024 * 1024;

/**
 * 1. Every pack once: its index, its header, its length, and every block in it, read a run of
 * blocks at a time into one reused buffer (memory does not grow with the pack or the store).
 */
async function checkPacks(reader: StoreReader, packs: string[], onProgress?: (p: VerifyProgress) => void): Promise<PackDamage> {
  const damage: PackDamage = { packs: new Map(), blocks: new Map(), inPack: new Map() };
  let buf = new Uint8Array(READ_BYTES);
  let bytesDone = 0;
  for (let i = 0; i < packs.length; i++) {
    const packId = packs[i]!;
    try {
      const idx = await reader.index(packId);
      const path = packPath(packId);
      const name = `${reader.location}/${path}`;
      const size = await reader.source.size(path);
      if (size === undefined) throw new CairnError("E_STORE_DAMAGED", `${name}: missing`);
      const head = await reader.source.getRange(path, 0, 8);
      if (new TextDecoder().decode(head) !== PACK_MAGIC) throw new CairnError("E_STORE_DAMAGED", `${name}: not a pack (bad magic)`);
      if (size !== idx.packBytes) {
        throw new CairnError("E_STORE_DAMAGED", `${name}: ${size} bytes, its index says ${idx.packBytes} (${size < idx.packBytes ? "truncated" : "extended"})`);
      }
      // the blocks in the order they lie in the pack, read in runs
      const offsets = Float64Array.from({ length: idx.count }, (_, k) => readIndexEntry(idx, k).offset);
      const order = Array.from({ length: idx.count }, (_, k) => k).sort((a, b) => offsets[a]! - offsets[b]!);
      for (let k = 0; k < order.length; ) {
        const first = readIndexEntry(idx, order[k]!);
        let end = first.offset + first.storedLength;
        let n = 1;
        while (k + n < order.length) {
          const e = readIndexEntry(idx, order[k + n]!);
          if (e.offset + e.storedLength - first.offset > READ_BYTES) break;
          end = Math.max(end, e.offset + e.storedLength);
          n++;
        }
        if (buf.length < end - first.offset) buf = new Uint8Array(end - first.offset);
        const got = await reader.source.readInto(path, buf, 0, end - first.offset, first.offset);
        bytesDone += got;
        for (let j = k; j < k + n; j++) {
          const e = readIndexEntry(idx, order[j]!);
          const at = e.offset - first.offset;
          try {
            decodeBlock(buf.subarray(at, Math.min(got, at + e.storedLength)), e, name, reader.keys);
          } catch (err) {
            if (damage.blocks.size >= MAX_BAD_BLOCKS) throw new CairnError("E_STORE_DAMAGED", `${name}: more than ${MAX_BAD_BLOCKS} damaged blocks`);
            const hex = toHex(e.digest);
            damage.blocks.set(hex, errorMessage(err));
            let set = damage.inPack.get(packId);
            if (!set) damage.inPack.set(packId, (set = new Set()));
            set.add(hex);
          }
        }
        k += n;
      }
    } catch (e) {
      damage.packs.set(packId, errorMessage(e));
    }
    onProgress?.({ packsDone: i + 1, packsTotal: packs.length, bytesDone });
    // what a pack's check allocated is garbage now: collected as it goes, so memory stays that of one pack
    if (i % 4 === 3) Bun.gc(true);
  }
  return damage;
}

/** 2. One checkpoint: its segments, then its blocks, each found intact in one of its packs. */
async function verifyOne(
  reader: StoreReader,
  m: Manifest,
  damage: PackDamage,
  wholeSegments: Map<string, string[]>,
  v: CheckpointVerdict,
  problem: (s: string) => void,
): Promise<void> {
  const mine = new Set(m.packs);
  const intact = m.packs.filter((p) => !damage.packs.has(p));
  for (const p of m.packs) if (damage.packs.has(p)) problem(damage.packs.get(p)!);
  // a block missing from the intact packs may be in a damaged one: that pack is named already
  const missing = (what: string, hex: string) => {
    const bad = damage.blocks.get(hex);
    if (bad) problem(`${what}: ${bad}`);
    else if (intact.length === m.packs.length) problem(`${what} (${hex.slice(0, 16)}…) is in none of its packs`);
  };
  const where = await reader.locateSome(intact, m.segments);
  const intactAt = (loc: BlockLocation | undefined, hex: string) => loc !== undefined && !damage.inPack.get(loc.packId)?.has(hex);
  let listOk = true;
  m.segments.forEach((hex, s) => {
    if (!intactAt(where.get(hex), hex)) {
      missing(`segment ${s}`, hex);
      listOk = false;
    }
  });
  if (!listOk) return;
  const blocksIn = (s: number) => Math.min(m.segment_blocks, m.block_count - s * m.segment_blocks);
  // the segments still to look for: not found whole, in packs this checkpoint names, before
  const todo: number[] = [];
  m.segments.forEach((hex, s) => {
    const packs = wholeSegments.get(hex);
    if (packs && packs.every((p) => mine.has(p))) v.blocks += blocksIn(s);
    else todo.push(s);
  });
  // with the manifest's hints a window reads only its segments' packs' indexes, so it can be
  // small and memory stays that of a window; without them each window scans every index
  const intactNumber = new Map(intact.map((p, i) => [p, i]));
  const window = windowSegments(m, 1);
  for (let w = 0; w < todo.length; w += window) {
    const segs = todo.slice(w, w + window);
    const lists = await Promise.all(segs.map((s) => reader.block(where.get(m.segments[s]!)!)));
    for (const [k, s] of segs.entries()) {
      if (lists[k]!.length !== blocksIn(s) * SEGMENT_ENTRY_BYTES) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: segment ${s} has the wrong length`);
    }
    // the packs the hints name for the window's segments first (all of them without hints);
    // a block they do not place (a damaged pack, a wrong hint) is looked for in the others
    const hinted = new Set<number>();
    for (const s of segs) for (const p of hintedPacks(m, s, 1)) if (intactNumber.has(m.packs[p]!)) hinted.add(intactNumber.get(m.packs[p]!)!);
    const first = m.segment_packs ? [...hinted].sort((a, b) => a - b) : intact.map((_, p) => p);
    const found = remap(await findBlocks(reader, first.map((p) => intact[p]!), damage, lists), first);
    if (found.some((f) => f.includes(-1))) {
      const scanned = new Set(first);
      const rest = intact.flatMap((_, p) => (scanned.has(p) ? [] : [p]));
      const more = remap(await findBlocks(reader, rest.map((p) => intact[p]!), damage, lists), rest);
      found.forEach((f, k) => f.forEach((p, b) => p < 0 && (f[b] = more[k]![b]!)));
    }
    // the windows' lists and the indexes they read are garbage now
    if ((w / window) % GC_EVERY_WINDOWS === GC_EVERY_WINDOWS - 1) Bun.gc(true);
    for (const [k, s] of segs.entries()) {
      const packs = new Set<string>();
      let whole = true;
      for (let b = 0; b < blocksIn(s); b++) {
        const p = found[k]![b]!;
        if (p >= 0) {
          packs.add(intact[p]!);
          v.blocks++;
        } else {
          whole = false;
          missing(`block ${s * m.segment_blocks + b}`, toHex(lists[k]!.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32)));
        }
      }
      if (whole) wholeSegments.set(m.segments[s]!, [...packs]);
    }
  }
  if (v.problems.length === 0) v.bytes = m.db_size_bytes;
}

/** Windows between two full collections. */
const GC_EVERY_WINDOWS = 8;

/** Numbers into a subset (`numbers[i]` for i ≥ 0) made numbers into the whole. */
function remap(found: Int32Array[], numbers: number[]): Int32Array[] {
  for (const f of found) for (let b = 0; b < f.length; b++) if (f[b]! >= 0) f[b] = numbers[f[b]!]!;
  return found;
}

/**
 * For each block of each list (SEGMENT_ENTRY_BYTES entries), the number in `packs` of one pack
 * holding an intact copy of it, or -1: one scan of the packs' indexes for all the lists.
 */
async function findBlocks(reader: StoreReader, packs: string[], damage: PackDamage, lists: Uint8Array[]): Promise<Int32Array[]> {
  const total = lists.reduce((n, l) => n + l.length / SEGMENT_ENTRY_BYTES, 0);
  const all = new Uint8Array(total * SEGMENT_ENTRY_BYTES);
  let at = 0;
  for (const l of lists) {
    all.set(l, at);
    at += l.length;
  }
  const table = DigestTable.create(total);
  for (let b = 0; b < total; b++) table.insertAt(all, b * SEGMENT_ENTRY_BYTES, b);
  const where = new Int32Array(total).fill(-1);
  for (let p = 0; p < packs.length; p++) {
    // each window reads every index again (the cache holds a few): what the last ones left is garbage
    if (p % 8 === 7) Bun.gc(false);
    const idx = await reader.index(packs[p]!);
    const bad = damage.inPack.get(packs[p]!);
    for (let i = 0; i < idx.count; i++) {
      const e = i * INDEX_ENTRY_BYTES;
      const w = table.getAt(idx.entries, e);
      if (w < 0 || where[w]! >= 0) continue;
      let same = true;
      for (let k = 0; k < 32 && same; k++) same = idx.entries[e + k] === all[w * SEGMENT_ENTRY_BYTES + k];
      if (!same || (bad && bad.has(toHex(idx.entries.subarray(e, e + 32))))) continue;
      where[w] = p;
    }
  }
  // a digest listed twice was entered once: every copy takes the first one's answer
  const out: Int32Array[] = [];
  at = 0;
  for (const l of lists) {
    const n = l.length / SEGMENT_ENTRY_BYTES;
    const o = new Int32Array(n);
    for (let b = 0; b < n; b++) o[b] = where[table.getAt(all, (at + b) * SEGMENT_ENTRY_BYTES)]!;
    out.push(o);
    at += n;
  }
  return out;
}

/** A stream (an archive) holds one checkpoint: stream it through every check a restore makes. */
async function verifyStream(reader: StreamReader, onProgress?: (p: VerifyProgress) => void): Promise<CheckpointVerdict[]> {
  const [id] = await reader.manifestIds();
  const v: CheckpointVerdict = { id: id!, ok: true, problems: [], blocks: 0, bytes: 0 };
  let lastReport = 0;
  try {
    let prev: string | undefined;
    const m = await reader.streamBlocks(
      (_b, data) => {
        v.blocks++;
        v.bytes += data.length;
        if (onProgress && v.bytes - lastReport >= 64 * 1024 * 1024) {
          lastReport = v.bytes;
          onProgress({ packsDone: 0, packsTotal: 0, bytesDone: v.bytes });
        }
      },
      {
        onIncludedFile: (f, stored) => {
          try {
            openIncluded(stored, f, reader.keys, reader.location);
          } catch (e) {
            v.problems.push(`carried file ${f.path}: ${errorMessage(e)}`);
          }
        },
        // the shipped log the archive carries: each segment whole and following the one before
        onLogFile: (path, data) => {
          const ref = segmentOf(path);
          if (!ref) return;
          try {
            const { header } = decodeSegment(data, ref, reader.location);
            if (prev !== undefined && header.prev !== prev) throw new CairnError("E_STORE_DAMAGED", `log segment ${reader.location}:${path} does not follow the segment before it`);
            prev = ref.digest;
          } catch (e) {
            v.problems.push(`${errorMessage(e)}: the archive restores only up to the segment before it`);
          }
        },
      },
    );
    v.bytes = m.db_size_bytes;
  } catch (e) {
    v.problems.push(errorMessage(e));
  }
  v.ok = v.problems.length === 0;
  return [v];
}

export interface LogVerdict {
  ok: boolean;
  segments: number;
  txns: number;
  bytes: number;
  problems: string[];
}

/**
 * Every segment of the shipped log (store/log.ts) read and checked (digest, header, every
 * transaction) and every chain followed from segment to segment: a damaged segment or a gap is
 * named with the window of instants it costs. Undefined when the store holds no log.
 */
export async function verifyLog(store: Store): Promise<LogVerdict | undefined> {
  const reader = store.reader;
  if (!reader) return undefined;
  const paths = await reader.source.list(`${LOG_DIR}/`);
  if (paths.length === 0) return undefined;
  const index = await indexLog(paths, reader.source, store.location);
  const v: LogVerdict = { ok: true, segments: 0, txns: 0, bytes: 0, problems: [] };
  const iso = (ms: number) => new Date(ms).toISOString();
  for (const c of index.chains.values()) {
    if (!c.info) v.problems.push(`log chain ${c.chain}: its record ${chainPath(c.chain)} is missing or damaged`);
    let prev: SegmentRef | undefined;
    for (const s of c.segments) {
      try {
        const data = await reader.source.get(s.path, MAX_SEGMENT_BYTES);
        const { header, txns } = decodeSegment(data, s, store.location);
        if (prev ? header.prev !== prev.digest : header.first_txn === 1 && header.prev !== null) {
          throw new CairnError("E_STORE_DAMAGED", `log segment ${store.location}/${s.path} does not follow the segment before it`);
        }
        v.segments++;
        v.txns += txns.length;
        v.bytes += data.byteLength;
      } catch (e) {
        v.problems.push(`${errorMessage(e)}: point-in-time restore on timeline ${c.chain} from ${iso(s.firstMs)} on is lost (earlier instants still restore)`);
        break;
      }
      prev = s;
    }
    if (c.gapAt !== undefined) {
      const after = c.segments.at(-1);
      v.problems.push(`log chain ${c.chain} has a gap at transaction ${c.gapAt}: point-in-time restore after ${after ? iso(after.untilMs) : "its start"} on that timeline is lost`);
    }
  }
  v.ok = v.problems.length === 0;
  return v;
}
