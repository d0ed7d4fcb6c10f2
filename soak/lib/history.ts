/**
 * What the soak wrote: blob contents derived from (id, version), and the history of every
 * request per id with the times it was sent and acknowledged, so a restored checkpoint can be
 * checked against what the node had acknowledged when the checkpoint's snapshot was taken.
 *
 * Requests on one id never overlap (the load keeps at most one in flight per id), so the order
 * of acknowledgements on an id is the order the node committed them.
 */

export const KiB = 1024;
export const MIN_SIZE = 1 * KiB;
export const MAX_SIZE = 64 * KiB;

function seedOf(id: string, version: number): number {
  return Number(BigInt.asUintN(32, BigInt(Bun.hash(`${id}@${version}`))));
}

/** The body of version `version` of `id`: MIN_SIZE–MAX_SIZE pseudo-random bytes (mulberry32). */
export function contentOf(id: string, version: number): Uint8Array {
  let a = seedOf(id, version);
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const size = MIN_SIZE + (next() % (MAX_SIZE - MIN_SIZE + 1));
  const words = new Uint32Array(Math.ceil(size / 4));
  for (let i = 0; i < words.length; i++) words[i] = next();
  return new Uint8Array(words.buffer, 0, size);
}

/** A fingerprint of a body, to recognise which version a stored blob is. */
export function fingerprint(bytes: Uint8Array): string {
  return `${bytes.length}:${BigInt(Bun.hash(bytes)).toString(16)}`;
}

export interface OpRecord {
  kind: "put" | "delete";
  /** The version a PUT wrote (for a DELETE: the version it removed). */
  version: number;
  /** fingerprint() of the body a PUT sent. */
  fp?: string;
  sentMs: number;
  /** When the acknowledgement was read; NaN if the request failed (its effect is unknown). */
  ackMs: number;
}

export interface IdHistory {
  ops: OpRecord[];
  /** The state after the last acknowledged request (what the load believes). */
  present: boolean;
  versions: number;
  busy: boolean;
}

export class History {
  readonly ids: string[] = [];
  readonly byId = new Map<string, IdHistory>();
  ackedWrites = 0;
  ackedDeletes = 0;
  failed = 0;
  firstFailure: string | undefined;

  newId(): string {
    const id = `soak-${this.ids.length.toString().padStart(7, "0")}`;
    this.ids.push(id);
    this.byId.set(id, { ops: [], present: false, versions: 0, busy: false });
    return id;
  }

  get(id: string): IdHistory {
    return this.byId.get(id)!;
  }
}

export interface Window {
  /** stats.started of the checkpoint, ms since the epoch. */
  startedMs: number;
  /** created of the checkpoint, ms since the epoch. */
  createdMs: number;
}

export interface AuditCounts {
  blobsChecked: number;
  /** An id whose last write acknowledged before `started` is missing or older than that write. */
  lostWrites: number;
  /** An id deleted (acknowledged) before `started` that is present with a version not allowed. */
  resurrected: number;
  /** A blob whose content matches no version ever written for its id (or an unknown id). */
  torn: number;
  /** A version the snapshot cannot have seen (sent after `created`). */
  fromTheFuture: number;
  /** size column disagreeing with length(data). */
  badSize: number;
  examples: string[];
}

/**
 * Check the rows of one restored database (id → fingerprint of data) against the history.
 * Allowed for each id: the state after the last request acknowledged before `started`, or the
 * state after any request that may have been committed while the snapshot was pinned (sent
 * before `created`, and acknowledged at or after `started` or never).
 */
export function audit(history: History, rows: Map<string, { fp: string; sizeOk: boolean }>, w: Window): AuditCounts {
  const c: AuditCounts = { blobsChecked: rows.size, lostWrites: 0, resurrected: 0, torn: 0, fromTheFuture: 0, badSize: 0, examples: [] };
  const note = (msg: string) => {
    if (c.examples.length < 10) c.examples.push(msg);
  };
  for (const [id, row] of rows) {
    if (!row.sizeOk) {
      c.badSize++;
      note(`${id}: size column differs from length(data)`);
    }
    if (!history.byId.has(id)) {
      c.torn++;
      note(`${id}: an id the soak never wrote`);
    }
  }
  for (const id of history.ids) {
    const h = history.get(id);
    let last: OpRecord | undefined;
    const maybe: OpRecord[] = [];
    for (const op of h.ops) {
      const acked = !Number.isNaN(op.ackMs);
      if (acked && op.ackMs < w.startedMs) last = op;
      else if (op.sentMs < w.createdMs) maybe.push(op);
    }
    const row = rows.get(id);
    if (!row) {
      const absentOk = !last || last.kind === "delete" || maybe.some((o) => o.kind === "delete");
      if (!absentOk) {
        c.lostWrites++;
        note(`${id}: absent, but version ${last!.version} was acknowledged before the snapshot`);
      }
      continue;
    }
    const match = h.ops.find((o) => o.kind === "put" && o.fp === row.fp);
    if (!match) {
      c.torn++;
      note(`${id}: content matches none of its ${h.versions} version(s)`);
      continue;
    }
    const v = match.version;
    const allowed = (last?.kind === "put" && last.version === v) || maybe.some((o) => o.kind === "put" && o.version === v);
    if (allowed) continue;
    if (last && (last.kind === "put" ? v < last.version : v <= last.version)) {
      if (last.kind === "put") {
        c.lostWrites++;
        note(`${id}: version ${v}, but version ${last.version} was acknowledged before the snapshot`);
      } else {
        c.resurrected++;
        note(`${id}: version ${v} present, but it was deleted before the snapshot`);
      }
    } else {
      c.fromTheFuture++;
      note(`${id}: version ${v} was sent after the checkpoint was created`);
    }
  }
  return c;
}
