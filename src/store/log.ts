/**
 * The shipped transaction log of a store (point-in-time restore): what the node commits between
 * checkpoints, as chains of log segments.
 *
 *   log/<chain>/chain.json   the chain's origin: which node, and the state it starts from
 *   log/<chain>/<first txn>-<last txn>-<first ms>-<until ms>-<digest>.seg
 *
 * A chain is one unbroken run of the node's history. Its transactions are numbered from 1; a
 * segment holds transactions first..last, each with its commit time and the full image of
 * every page it wrote, and says that nothing else was committed up to `until` (the instant it
 * was cut). A segment names the digest of the one before it, and its own digest (BLAKE3 of the
 * whole file) is in its name, so a gap, a damaged file or a file from elsewhere is found. A
 * checkpoint records where in which chain its image stands (`Manifest.log`): restoring to an
 * instant is the newest checkpoint at or before it, then the transactions after it up to the
 * instant, along the chain and the chains it forked from.
 *
 * A chain starts from the state of another chain at a transaction (a fork: the node was
 * restored to that point), or from nothing known (`base: null`: the first start with
 * shipping, or a start after a crash the log could not be continued across), in which case
 * it is usable only from its first checkpoint on.
 *
 * Segment file: "CAIRNLG1", u32 LE length of the header, the header (JSON), then the body
 * (zstd-compressed when the store's `compression` is zstd): per transaction f64 LE commit time (ms), u32 LE database size in pages
 * after it, u32 LE number of pages, then per page u32 LE page number and the page.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { writeFileAtomic } from "../util/fsx.ts";
import type { RandomReads } from "./backend.ts";
import type { Manifest } from "./format.ts";
import { blockDigest, toHex } from "./hash.ts";

export const LOG_DIR = "log";
export const CHAIN_FILE = "chain.json";
const MAGIC = new TextEncoder().encode("CAIRNLG1");
export const LOG_FORMAT = 1;
/** Largest segment file read whole; the shipper cuts segments far below it. */
export const MAX_SEGMENT_BYTES = 512 * 1024 * 1024;
const MAX_HEADER_BYTES = 64 * 1024;
/** Bytes from a segment's start that always hold its whole header. */
export const SEGMENT_HEADER_PREFIX_BYTES = MAGIC.length + 4 + MAX_HEADER_BYTES;
export const CHAIN_ID_RE = /^[0-9a-f]{16}$/;
const SEGMENT_NAME_RE = /^(\d{12})-(\d{12})-(\d{13})-(\d{13})-([0-9a-f]{64})\.seg$/;

/** Where a checkpoint's image stands in the log: every transaction of `chain` up to `txn` is in it. */
export interface LogPosition {
  chain: string;
  txn: number;
  /** The instant the image was pinned (ms since the epoch): its state holds from then until the next transaction. */
  ms: number;
}

export interface ChainInfo {
  format: number;
  chain: string;
  node_id: string;
  created: string;
  /** The state the chain starts from: another chain's state at a transaction, or null (unknown: usable from a checkpoint in it). */
  base: LogPosition | null;
  /** Where the node's WAL stood when the chain started (to continue it after a crash before its first segment). */
  wal?: { salt1: number; salt2: number; frame: number };
}

export interface SegmentRef {
  path: string;
  chain: string;
  firstTxn: number;
  lastTxn: number;
  firstMs: number;
  untilMs: number;
  digest: string;
}

export interface SegmentHeader {
  format: number;
  chain: string;
  node_id: string;
  first_txn: number;
  last_txn: number;
  first_ms: number;
  until_ms: number;
  /** Digest of the segment before this one in the chain; null for the chain's first. */
  prev: string | null;
  page_size: number;
  /** Bytes of the body before compression. */
  raw_bytes: number;
  /** How the body is stored (the store's `compression`; absent: zstd). */
  compression?: "none" | "zstd";
  /** Where the last transaction ends in the node's WAL (to continue the chain after a crash). */
  wal: { salt1: number; salt2: number; frame: number };
}

export interface LogTxn {
  txn: number;
  commitMs: number;
  dbPages: number;
  /** Page numbers and images, in the order written. */
  pages: { pgno: number; data: Uint8Array }[];
}

const pad = (n: number, w: number) => String(n).padStart(w, "0");

export function chainPath(chain: string): string {
  return `${LOG_DIR}/${chain}/${CHAIN_FILE}`;
}

export function segmentPath(h: Pick<SegmentHeader, "chain" | "first_txn" | "last_txn" | "first_ms" | "until_ms">, digest: string): string {
  return `${LOG_DIR}/${h.chain}/${pad(h.first_txn, 12)}-${pad(h.last_txn, 12)}-${pad(h.first_ms, 13)}-${pad(h.until_ms, 13)}-${digest}.seg`;
}

/** The segment a stored path names, or undefined for any other path. */
export function segmentOf(path: string): SegmentRef | undefined {
  const parts = path.split("/");
  if (parts.length !== 3 || parts[0] !== LOG_DIR || !CHAIN_ID_RE.test(parts[1]!)) return undefined;
  const m = SEGMENT_NAME_RE.exec(parts[2]!);
  if (!m) return undefined;
  const ref = { path, chain: parts[1]!, firstTxn: Number(m[1]), lastTxn: Number(m[2]), firstMs: Number(m[3]), untilMs: Number(m[4]), digest: m[5]! };
  if (ref.firstTxn < 1 || ref.lastTxn < ref.firstTxn || ref.untilMs < ref.firstMs) return undefined;
  return ref;
}

export function newChainId(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(8)));
}

// ---- encoding ---------------------------------------------------------------------------------

export function encodeChain(info: ChainInfo): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(info, null, 1)}\n`);
}

export function decodeChain(data: Uint8Array, name: string): ChainInfo {
  let c: ChainInfo;
  try {
    c = JSON.parse(new TextDecoder().decode(data)) as ChainInfo;
  } catch {
    throw new CairnError("E_STORE_DAMAGED", `${name}: not valid JSON (truncated or damaged)`);
  }
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `${name}: ${why}`);
  if (typeof c !== "object" || c === null) throw bad("not an object");
  if (typeof c.format === "number" && c.format > LOG_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `${name}: log format ${c.format} is newer than this cairn understands (${LOG_FORMAT})`, { hint: "use a newer cairn binary" });
  }
  if (c.format !== LOG_FORMAT || typeof c.chain !== "string" || !CHAIN_ID_RE.test(c.chain)) throw bad("is not a chain record");
  if (typeof c.node_id !== "string" || typeof c.created !== "string") throw bad("has no node id or creation time");
  if (c.base !== null && !isPosition(c.base)) throw bad("has an invalid base");
  return c;
}

export function isPosition(p: unknown): p is LogPosition {
  const x = p as LogPosition;
  return typeof x === "object" && x !== null && typeof x.chain === "string" && CHAIN_ID_RE.test(x.chain) && Number.isSafeInteger(x.txn) && x.txn >= 0 && Number.isFinite(x.ms) && x.ms >= 0;
}

/** A segment's bytes, its digest, and the path (with the digest) to store them under. */
export function encodeSegment(h: Omit<SegmentHeader, "format" | "raw_bytes" | "compression">, compression: "none" | "zstd", txns: { commitMs: number; dbPages: number; pages: { pgno: number; data: Uint8Array }[] }[]): { path: string; data: Uint8Array; digest: string } {
  let raw = 0;
  for (const t of txns) raw += 16 + t.pages.reduce((n, p) => n + 4 + p.data.byteLength, 0);
  const body = new Uint8Array(raw);
  const dv = new DataView(body.buffer);
  let at = 0;
  for (const t of txns) {
    dv.setFloat64(at, t.commitMs, true);
    dv.setUint32(at + 8, t.dbPages, true);
    dv.setUint32(at + 12, t.pages.length, true);
    at += 16;
    for (const p of t.pages) {
      dv.setUint32(at, p.pgno, true);
      body.set(p.data, at + 4);
      at += 4 + p.data.byteLength;
    }
  }
  const header = new TextEncoder().encode(JSON.stringify({ format: LOG_FORMAT, ...h, raw_bytes: raw, compression } satisfies SegmentHeader));
  const z = compression === "zstd" ? Bun.zstdCompressSync(body, { level: 1 }) : body;
  const data = new Uint8Array(MAGIC.length + 4 + header.length + z.byteLength);
  data.set(MAGIC, 0);
  new DataView(data.buffer).setUint32(MAGIC.length, header.length, true);
  data.set(header, MAGIC.length + 4);
  data.set(z, MAGIC.length + 4 + header.length);
  const digest = toHex(blockDigest(data));
  return { path: segmentPath(h, digest), data, digest };
}

/** Parse and check a segment against the name it was stored under; E_STORE_DAMAGED naming it. */
export function decodeSegment(data: Uint8Array, ref: SegmentRef, location: string): { header: SegmentHeader; txns: LogTxn[] } {
  const name = `${location}/${ref.path}`;
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `log segment ${name} ${why}`);
  if (toHex(blockDigest(data)) !== ref.digest) throw bad("does not match its digest (damaged)");
  const header = decodeSegmentHeader(data, name);
  const h = header.header;
  if (h.chain !== ref.chain || h.first_txn !== ref.firstTxn || h.last_txn !== ref.lastTxn || h.first_ms !== ref.firstMs || h.until_ms !== ref.untilMs) throw bad("does not match its name");
  let body: Uint8Array;
  if (h.compression === "none") body = data.subarray(header.bodyAt);
  else {
    try {
      body = Bun.zstdDecompressSync(data.subarray(header.bodyAt));
    } catch {
      throw bad("has a body that does not decompress");
    }
  }
  if (body.byteLength !== h.raw_bytes) throw bad("has a body of the wrong length");
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const txns: LogTxn[] = [];
  let at = 0;
  let last = h.first_ms;
  for (let txn = h.first_txn; txn <= h.last_txn; txn++) {
    if (at + 16 > body.byteLength) throw bad("ends before its last transaction");
    const commitMs = dv.getFloat64(at, true);
    const dbPages = dv.getUint32(at + 8, true);
    const n = dv.getUint32(at + 12, true);
    at += 16;
    if (!(commitMs >= last && commitMs <= h.until_ms) || dbPages < 1) throw bad(`has an impossible transaction ${txn}`);
    last = commitMs;
    const pages: LogTxn["pages"] = [];
    for (let i = 0; i < n; i++) {
      if (at + 4 + h.page_size > body.byteLength) throw bad(`ends inside transaction ${txn}`);
      const pgno = dv.getUint32(at, true);
      if (pgno < 1) throw bad(`names page 0 in transaction ${txn}`);
      pages.push({ pgno, data: body.subarray(at + 4, at + 4 + h.page_size) });
      at += 4 + h.page_size;
    }
    txns.push({ txn, commitMs, dbPages, pages });
  }
  if (at !== body.byteLength) throw bad("has bytes after its last transaction");
  if (txns[0] && txns[0].commitMs !== h.first_ms) throw bad("has a first commit time that does not match its name");
  return { header: h, txns };
}

export function decodeSegmentHeader(data: Uint8Array, name: string): { header: SegmentHeader; bodyAt: number } {
  const bad = (why: string) => new CairnError("E_STORE_DAMAGED", `log segment ${name} ${why}`);
  if (data.byteLength < MAGIC.length + 4 || !MAGIC.every((b, i) => data[i] === b)) throw bad("is not a cairn log segment");
  const len = new DataView(data.buffer, data.byteOffset).getUint32(MAGIC.length, true);
  if (len > MAX_HEADER_BYTES || MAGIC.length + 4 + len > data.byteLength) throw bad("has a damaged header");
  let h: SegmentHeader;
  try {
    h = JSON.parse(new TextDecoder().decode(data.subarray(MAGIC.length + 4, MAGIC.length + 4 + len))) as SegmentHeader;
  } catch {
    throw bad("has a header that is not JSON");
  }
  if (typeof h.format === "number" && h.format > LOG_FORMAT) {
    throw new CairnError("E_STORE_FORMAT", `log segment ${name} has format ${h.format}, newer than this cairn understands (${LOG_FORMAT})`, { hint: "use a newer cairn binary" });
  }
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (h.format !== LOG_FORMAT || !count(h.first_txn) || !count(h.last_txn) || !count(h.raw_bytes) || ![512, 1024, 2048, 4096, 8192, 16384, 32768, 65536].includes(h.page_size)) throw bad("has an invalid header");
  if (h.compression !== undefined && h.compression !== "none" && h.compression !== "zstd") throw bad("has an unknown compression");
  if (h.prev !== null && (typeof h.prev !== "string" || !/^[0-9a-f]{64}$/.test(h.prev))) throw bad("names an invalid previous segment");
  return { header: h, bodyAt: MAGIC.length + 4 + len };
}

// ---- what a store's log holds ----------------------------------------------------------------

export interface ChainIndex {
  chain: string;
  info?: ChainInfo;
  /** Segments with no gap between them, in order, from the oldest retention kept (transaction 1 until it removes any). */
  segments: SegmentRef[];
  /** The first transaction missing after `segments` when more segments follow a gap (the rest cannot be used). */
  gapAt?: number;
  /** Segments after a gap, unusable. */
  stranded: SegmentRef[];
}

export interface LogIndex {
  chains: Map<string, ChainIndex>;
}

/** Index the log from a listing of the store's paths (chain records read when `random` is given). */
export async function indexLog(paths: string[], random: RandomReads | undefined, location: string, chainInfos?: Map<string, ChainInfo>): Promise<LogIndex> {
  const chains = new Map<string, ChainIndex>();
  const byChain = new Map<string, SegmentRef[]>();
  for (const p of paths) {
    if (!p.startsWith(`${LOG_DIR}/`)) continue;
    const parts = p.split("/");
    if (parts.length === 3 && parts[2] === CHAIN_FILE && CHAIN_ID_RE.test(parts[1]!)) {
      if (!byChain.has(parts[1]!)) byChain.set(parts[1]!, []);
      continue;
    }
    const ref = segmentOf(p);
    if (!ref) continue;
    if (!byChain.has(ref.chain)) byChain.set(ref.chain, []);
    byChain.get(ref.chain)!.push(ref);
  }
  for (const [chain, refs] of byChain) {
    refs.sort((a, b) => a.firstTxn - b.firstTxn || a.lastTxn - b.lastTxn);
    const segments: SegmentRef[] = [];
    let next = refs[0]?.firstTxn ?? 1;
    let i = 0;
    for (; i < refs.length; i++) {
      const r = refs[i]!;
      if (r.lastTxn < next) continue; // a duplicate of what is covered already (a retried upload)
      if (r.firstTxn !== next) break;
      segments.push(r);
      next = r.lastTxn + 1;
    }
    const stranded = refs.slice(i).filter((r) => r.lastTxn >= next);
    let info = chainInfos?.get(chain);
    if (!info && random) {
      try {
        info = decodeChain(await random.get(chainPath(chain), MAX_HEADER_BYTES), `${location}/${chainPath(chain)}`);
      } catch (e) {
        if ((e as CairnError).code === "E_STORE_FORMAT") throw e;
        info = undefined;
      }
    }
    chains.set(chain, { chain, info, segments, stranded, ...(stranded.length > 0 ? { gapAt: next } : {}) });
  }
  return { chains };
}

// ---- planning a restore to an instant ------------------------------------------------------------

/** One stretch of a history: transactions `from`..`to` of `chain` (to = Infinity: to its end). */
interface Piece {
  chain: string;
  from: number;
  to: number;
}

/** The history leading to the end of `chain`: its ancestors' stretches first, then its own. */
export function lineage(index: LogIndex, chain: string): Piece[] {
  const pieces: Piece[] = [{ chain, from: 1, to: Infinity }];
  const seen = new Set([chain]);
  let base = index.chains.get(chain)?.info?.base ?? null;
  while (base && !seen.has(base.chain)) {
    seen.add(base.chain);
    pieces.unshift({ chain: base.chain, from: 1, to: base.txn });
    base = index.chains.get(base.chain)?.info?.base ?? null;
  }
  return pieces;
}

/** The current timeline: the newest chain, by its creation (then by its latest instant). */
export function currentChain(index: LogIndex): string | undefined {
  let best: ChainIndex | undefined;
  const key = (c: ChainIndex) => [c.info ? Date.parse(c.info.created) : 0, c.segments.at(-1)?.untilMs ?? 0] as const;
  for (const c of index.chains.values()) {
    if (!best) best = c;
    else {
      const [a1, a2] = key(c);
      const [b1, b2] = key(best);
      if (a1 > b1 || (a1 === b1 && a2 > b2)) best = c;
    }
  }
  return best?.chain;
}

export interface ReplayStep {
  segment: SegmentRef;
  /** Apply transactions from..to of the segment (inclusive). */
  from: number;
  to: number;
}

export interface InstantPlan {
  manifest: Manifest;
  steps: ReplayStep[];
  chain: string;
}

/** The newest instant `m` can be brought to along the history of `chain` (its own chain and what follows it). */
export function reachableFrom(index: LogIndex, m: Pick<Manifest, "log">, chain: string): number | undefined {
  if (!m.log) return undefined;
  const pieces = lineage(index, chain);
  const at = pieces.findIndex((p) => p.chain === m.log!.chain && m.log!.txn >= p.from - 1 && m.log!.txn <= p.to);
  if (at < 0) return undefined;
  let until = m.log.ms;
  let txn = m.log.txn;
  for (let k = at; k < pieces.length; k++) {
    const p = pieces[k]!;
    const c = index.chains.get(p.chain);
    if (!c) return until;
    for (const s of c.segments) {
      if (s.lastTxn <= txn || s.firstTxn > p.to) continue;
      if (s.firstTxn > txn + 1) return until;
      until = Math.max(until, s.untilMs);
      txn = s.lastTxn;
    }
    if (k + 1 < pieces.length) {
      if (txn < p.to) return until; // the stretch is not all there
      txn = 0;
    }
  }
  return until;
}

/**
 * Which checkpoint and which transactions restore the state at `ms` along `chain`'s history:
 * the newest checkpoint at or before `ms` on it, then every transaction after it committed at or
 * before `ms`. Undefined when the log does not reach `ms` from any checkpoint.
 */
export function planInstant(index: LogIndex, manifests: Manifest[], chain: string, ms: number): InstantPlan | undefined {
  const pieces = lineage(index, chain);
  const onLine = (m: Manifest) => m.log !== undefined && pieces.some((p) => p.chain === m.log!.chain && m.log!.txn <= p.to);
  const candidates = manifests.filter((m) => onLine(m) && m.log!.ms <= ms).sort((a, b) => b.log!.ms - a.log!.ms || b.id - a.id);
  for (const m of candidates) {
    if ((reachableFrom(index, m, chain) ?? -1) < ms) continue;
    const steps: ReplayStep[] = [];
    const at = pieces.findIndex((p) => p.chain === m.log!.chain && m.log!.txn <= p.to);
    let txn = m.log!.txn;
    let done = false;
    for (let k = at; k < pieces.length && !done; k++) {
      const p = pieces[k]!;
      const c = index.chains.get(p.chain)!;
      for (const s of c.segments) {
        if (s.lastTxn <= txn || s.firstTxn > p.to) continue;
        if (s.firstMs > ms) {
          done = true;
          break;
        }
        const to = Math.min(s.lastTxn, p.to);
        // the segment's own transactions are filtered by time when it is read (replay)
        steps.push({ segment: s, from: txn + 1, to });
        txn = to;
        if (s.untilMs >= ms && to === s.lastTxn) {
          done = true;
          break;
        }
      }
      if (k + 1 < pieces.length && !done) txn = 0;
    }
    return { manifest: m, steps, chain };
  }
  return undefined;
}

/** The window of instants the store can restore to along `chain`, or undefined if none. */
export function windowOf(index: LogIndex, manifests: Pick<Manifest, "log">[], chain: string): { from: number; to: number } | undefined {
  const pieces = lineage(index, chain);
  let from = Infinity;
  let to = -Infinity;
  for (const m of manifests) {
    if (!m.log || !pieces.some((p) => p.chain === m.log!.chain && m.log!.txn <= p.to)) continue;
    const r = reachableFrom(index, m, chain);
    if (r === undefined) continue;
    from = Math.min(from, m.log.ms);
    to = Math.max(to, r);
  }
  return from <= to ? { from, to } : undefined;
}

/**
 * The log files the checkpoints `kept` need: for each, the segments after its position along
 * every history it lies on (its own chain onward, and the chains forked from it later), and the
 * chain records. `current` (the node's chain being written) is always kept whole.
 */
export function neededLogFiles(index: LogIndex, kept: Manifest[], current?: string): Set<string> {
  const need = new Set<string>();
  const children = new Map<string, ChainIndex[]>();
  for (const c of index.chains.values()) {
    const b = c.info?.base;
    if (b) {
      if (!children.has(b.chain)) children.set(b.chain, []);
      children.get(b.chain)!.push(c);
    }
  }
  const keepFrom = (chain: string, after: number, visited: Set<string>) => {
    if (visited.has(chain)) return;
    visited.add(chain);
    const c = index.chains.get(chain);
    if (!c) return;
    need.add(chainPath(chain));
    for (const s of [...c.segments, ...c.stranded]) if (s.lastTxn > after) need.add(s.path);
    for (const child of children.get(chain) ?? []) if (child.info!.base!.txn >= after) keepFrom(child.chain, 0, visited);
  };
  for (const m of kept) if (m.log) keepFrom(m.log.chain, m.log.txn, new Set());
  // the chain being written, before its first retained checkpoint: all of it
  if (current && !kept.some((m) => m.log?.chain === current)) keepFrom(current, 0, new Set());
  return need;
}

// ---- beside the database: where its state stands in the log ------------------------------------

/** Written by a clean stop of a shipping node: where its chain ends. */
export const LOG_STATE_FILE = "cairn-log-state";
/** Written by a restore: where the restored state stands (the node's next chain forks there). */
export const LOG_ORIGIN_FILE = "cairn-log-origin";

/** The database file as a clean stop or a restore left it (a change by anything else shows here). */
export interface DbMark {
  ino: number;
  size: number;
  mtimeMs: number;
}

export function dbMarkOf(file: string): DbMark | undefined {
  try {
    const st = statSync(file);
    return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
  } catch {
    return undefined;
  }
}

export const sameDbMark = (a: DbMark | undefined, b: DbMark | undefined): boolean => !!a && !!b && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;

export interface LogOrigin {
  position: LogPosition;
  mark: DbMark;
}

/** Record, after a restore, where the restored database stands in the log. */
export function writeLogOrigin(dbDir: string, position: LogPosition, dbFile: string): void {
  const mark = dbMarkOf(dbFile);
  if (!mark) return;
  writeFileAtomic(join(dbDir, LOG_ORIGIN_FILE), JSON.stringify({ position, mark } satisfies LogOrigin));
}
