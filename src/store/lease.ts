/**
 * Readers' leases on a store another host prunes: the one rule every reader and every
 * retention follows is that retention deletes nothing while a live reader is registered in
 * the store. In a local folder the registration is the shared lock on `cairn-store.readers`
 * (it lives exactly as long as the reading process); under an S3 prefix, where no lock spans
 * hosts, it is a lease object `leases/<id>.json` with an expiry, renewed while the reader
 * reads and deleted when it is done. A reader that died stops protecting once its lease
 * expires (plus a margin for clocks that disagree), and retention then removes the lease.
 *
 * The order makes it safe without a lock: a reader writes its lease before it reads anything;
 * retention looks for live leases before it deletes a manifest and again before it deletes
 * any pack or log file. A reader that read a manifest before retention deleted it registered
 * before that, so the second look sees it and the packs stay; a reader registered after the
 * second look lists the manifests after the deletion and never picks the deleted ones.
 */
import { hostname } from "node:os";
import { CairnError, errorMessage } from "../errors.ts";
import type { Hold, RandomReads, Writes } from "./backend.ts";

export const LEASE_DIR = "leases";
export const DEFAULT_LEASE_TTL_MS = 5 * 60_000;
/** How long past its expiry a lease still counts at most (the reader's clock and ours may disagree); never more than its lifetime. */
export const LEASE_CLOCK_MARGIN_MS = 60_000;
/** Environment variable: a reader's lease lifetime in seconds (renewed at a third of it). */
export const LEASE_TTL_ENV = "CAIRN_READER_LEASE_SECS";
const MAX_LEASE_BYTES = 4096;

export interface LeaseRecord {
  format: 1;
  holder: string;
  pid: number;
  created: string;
  expires: string;
  /** Its lifetime: the margin past `expires` is at most this. */
  ttl_ms: number;
}

export interface LeaseOptions {
  ttlMs?: number;
  now?: () => number;
  /** Told when the lease cannot be written or renewed (the read goes on, unprotected). */
  onWarn?: (message: string) => void;
}

export function leaseTtlFromEnv(env: Record<string, string | undefined> = process.env): number {
  const v = env[LEASE_TTL_ENV];
  if (v === undefined || v === "") return DEFAULT_LEASE_TTL_MS;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 1 || n > 86_400) throw new CairnError("E_USAGE", `${LEASE_TTL_ENV}=${JSON.stringify(v)} is not a number of seconds from 1 to 86400`);
  return Math.round(n * 1000);
}

/**
 * Register a reader: write its lease, renew it at a third of its lifetime until released. A
 * lease that cannot be written (read-only credentials) is warned about, not fatal: the read
 * goes on, but the owner's retention is not kept away.
 */
export async function takeLease(writes: Writes, location: string, o: LeaseOptions = {}): Promise<Hold> {
  const ttl = o.ttlMs ?? leaseTtlFromEnv();
  const now = o.now ?? Date.now;
  const id = Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("hex");
  const path = `${LEASE_DIR}/${id}.json`;
  const created = new Date(now()).toISOString();
  const record = (): Uint8Array =>
    new TextEncoder().encode(`${JSON.stringify({ format: 1, holder: hostname(), pid: process.pid, created, expires: new Date(now() + ttl).toISOString(), ttl_ms: ttl } satisfies LeaseRecord)}\n`);
  try {
    await writes.put(path, record());
  } catch (e) {
    o.onWarn?.(`cannot register this reader in ${location} (${errorMessage(e)}); the owning node's retention may remove what this reads meanwhile`);
    return { release() {} };
  }
  let released = false;
  let renewing: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    renewing = writes.put(path, record()).catch((e) => o.onWarn?.(`cannot renew this reader's lease in ${location}: ${errorMessage(e)}`));
  }, Math.max(1000, Math.floor(ttl / 3)));
  timer.unref?.();
  return {
    async release() {
      if (released) return;
      released = true;
      clearInterval(timer);
      // a renewal in flight could write the lease again after the delete: delete after it
      await renewing;
      await writes.delete(path).catch((e) => o.onWarn?.(`cannot remove this reader's lease from ${location} (${errorMessage(e)}); it expires on its own`));
    },
  };
}

/** The leases under `leases/`: the live ones, and the paths of those that expired (or are not leases). */
export async function readLeases(random: RandomReads, now = Date.now()): Promise<{ live: LeaseRecord[]; dead: string[] }> {
  const live: LeaseRecord[] = [];
  const dead: string[] = [];
  for (const path of await random.list(`${LEASE_DIR}/`)) {
    let rec: LeaseRecord | undefined;
    try {
      rec = JSON.parse(new TextDecoder().decode(await random.get(path, MAX_LEASE_BYTES))) as LeaseRecord;
    } catch (e) {
      // deleted meanwhile (a reader done): nothing to keep
      if (e instanceof CairnError && e.code === "E_STORE_MISSING") continue;
      rec = undefined;
    }
    const expires = rec && rec.format === 1 && typeof rec.expires === "string" ? Date.parse(rec.expires) : Number.NaN;
    const margin = Math.min(LEASE_CLOCK_MARGIN_MS, Number.isFinite(rec?.ttl_ms) && rec!.ttl_ms > 0 ? rec!.ttl_ms : LEASE_CLOCK_MARGIN_MS);
    if (Number.isFinite(expires) && expires + margin > now) live.push(rec!);
    else dead.push(path);
  }
  return { live, dead };
}

/** How live leases are named to an operator. */
export function describeLeases(live: LeaseRecord[]): string {
  const first = live[0]!;
  return `${live.length} reader(s) registered (e.g. ${first.holder} pid ${first.pid} since ${first.created})`;
}
