/**
 * Retention, for a local store and a remote one alike: which checkpoints have expired (one
 * policy), then their manifests go and the packs no remaining checkpoint needs are collected.
 *
 * Locally both steps need the store's readers lock exclusively, so nothing a running restore,
 * verify or export is reading is ever deleted: if a reader holds it, retention waits for the
 * next checkpoint. The collection runs in a worker (gc.ts). On a remote store, the packs no
 * manifest names are deleted, unless a reader holds a lease there (the same rule: retention
 * deletes nothing while a live reader is registered; store/lease.ts).
 */
import { dirname, join } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FileLock } from "../util/file-lock.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import { rmSync } from "node:fs";
import type { Backend, RandomReads, Writes } from "./backend.ts";
import { CHAIN_FILE, indexLog, LOG_DIR, neededLogFiles } from "./log.ts";
import { DirBackend, STORE_READERS_LOCK_FILE } from "./dir/backend.ts";
import { LocalStore } from "./dir/writer.ts";
import { manifestPath, type Manifest } from "./format.ts";
import { type GcResult, removeUnreferencedPacks } from "./gc.ts";
import { describeLeases, readLeases } from "./lease.ts";
import { retireGenerations } from "./keys.ts";
import type { KeyFile, StoreKeys } from "./crypto.ts";
import type { StoreJob } from "./jobs.ts";
import { StoreReader } from "./reader.ts";

/**
 * Which checkpoints a store keeps, with restic's `forget` meaning: a checkpoint is kept if any
 * rule keeps it. `last` keeps the newest N; each period rule keeps the newest checkpoint of
 * each of the last N periods (hours, days, ISO weeks, months, in UTC) that have one. Rules at
 * 0 keep nothing; with every rule at 0 nothing expires (max_db_checkpoints: 0 keeps all).
 */
export interface RetentionPolicy {
  last: number;
  hourly: number;
  daily: number;
  weekly: number;
  monthly: number;
}

export const PERIOD_RULES = ["hourly", "daily", "weekly", "monthly"] as const;
type PeriodRule = (typeof PERIOD_RULES)[number];

export function keepLast(n: number): RetentionPolicy {
  return { last: n, hourly: 0, daily: 0, weekly: 0, monthly: 0 };
}

/** True when the policy needs each checkpoint's creation time (any period rule is on). */
export function needsTimes(p: RetentionPolicy): boolean {
  return PERIOD_RULES.some((r) => p[r] > 0);
}

export function describePolicy(p: RetentionPolicy): string {
  const on = (["last", ...PERIOD_RULES] as const).filter((r) => p[r] > 0).map((r) => `keep_${r} ${p[r]}`);
  return on.length > 0 ? on.join(", ") : "keep all";
}

/** The period a time falls in, for a rule (UTC): 2026-12-01T13, 2026-12-01, 2026-W49, 2026-12. */
export function periodOf(rule: PeriodRule, ms: number): string {
  const d = new Date(ms);
  const iso = d.toISOString();
  if (rule === "hourly") return iso.slice(0, 13);
  if (rule === "daily") return iso.slice(0, 10);
  if (rule === "monthly") return iso.slice(0, 7);
  // ISO 8601 week: the week (Monday first) holding the Thursday of this date's week
  const day = (d.getUTCDay() + 6) % 7;
  const thursday = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - day + 3));
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * 86_400_000));
  return `${year}-W${String(week).padStart(2, "0")}`;
}

export interface RetentionEntry {
  id: number;
  /** Creation time (RFC 3339); undefined when the manifest could not be read (then it is kept). */
  created?: string;
}

export interface RetentionDecision {
  id: number;
  created?: string;
  keep: boolean;
  /** Why it is kept: "last 1/3", "daily 2026-12-01", "unreadable", "keep all". */
  reasons: string[];
}

/** Apply `p` to `entries` (any order); the answer is in ascending id order. */
export function decideRetention(entries: RetentionEntry[], p: RetentionPolicy): RetentionDecision[] {
  const newestFirst = [...entries].sort((a, b) => b.id - a.id);
  const reasons = new Map<number, string[]>(newestFirst.map((e) => [e.id, []]));
  const keepAll = p.last <= 0 && !needsTimes(p);
  if (keepAll) for (const e of newestFirst) reasons.get(e.id)!.push("keep all");
  for (let i = 0; i < Math.min(p.last, newestFirst.length); i++) reasons.get(newestFirst[i]!.id)!.push(`last ${i + 1}/${p.last}`);
  // newest first by creation time: the first checkpoint a rule meets in a new period is its newest
  const timed = newestFirst.filter((e) => e.created !== undefined).sort((a, b) => Date.parse(b.created!) - Date.parse(a.created!) || b.id - a.id);
  for (const rule of PERIOD_RULES) {
    if (p[rule] <= 0) continue;
    let seen: string | undefined;
    let n = 0;
    for (const e of timed) {
      if (n >= p[rule]) break;
      const period = periodOf(rule, Date.parse(e.created!));
      if (period === seen) continue;
      seen = period;
      n++;
      reasons.get(e.id)!.push(`${rule} ${period}`);
    }
  }
  // a checkpoint whose time is unknown is never removed by a rule that needs the time
  if (needsTimes(p)) for (const e of newestFirst) if (e.created === undefined) reasons.get(e.id)!.push("unreadable");
  return newestFirst
    .map((e) => ({ id: e.id, ...(e.created !== undefined ? { created: e.created } : {}), keep: reasons.get(e.id)!.length > 0, reasons: reasons.get(e.id)! }))
    .sort((a, b) => a.id - b.id);
}

/** The ids the decisions remove (ascending). */
export function expiredBy(decisions: RetentionDecision[]): number[] {
  return decisions.filter((d) => !d.keep).map((d) => d.id);
}

/** The checkpoints (ascending ids) that expire when the newest `keep` are kept; 0 keeps all. */
export function expiredCheckpoints(ids: number[], keep: number): number[] {
  return expiredBy(decideRetention(ids.map((id) => ({ id })), keepLast(keep)));
}

/** The decisions for a store's checkpoints: their creation times are read only when a rule needs them. */
export async function retentionOf(reader: StoreReader, ids: number[], p: RetentionPolicy): Promise<RetentionDecision[]> {
  const entries: RetentionEntry[] = [];
  for (const id of ids) {
    if (!needsTimes(p)) {
      entries.push({ id });
      continue;
    }
    try {
      entries.push({ id, created: (await reader.manifest(id)).created });
    } catch (e) {
      // removed meanwhile: not there to keep or remove
      if ((e as CairnError).code === "E_STORE_MISSING") continue;
      entries.push({ id });
    }
  }
  return decideRetention(entries, p);
}

export interface RetentionResult {
  /** What the policy decided for each checkpoint (empty when retention was postponed). */
  decisions: RetentionDecision[];
  removed: number[];
  gc?: GcResult;
  skipped?: string;
}

/**
 * Retention of the node's local store in `dir`, then garbage collection in a worker: always of
 * the packs no checkpoint names; with `lookForDeadBlocks`, also of the packs mostly holding
 * blocks no remaining checkpoint needs (which reads every checkpoint's segments and every
 * index: the caller decides how often that pays).
 */
export async function applyLocalRetention(
  dir: string,
  nodeId: string,
  policy: RetentionPolicy,
  sync: boolean,
  logger: Logger,
  lookForDeadBlocks = true,
  /** Workers of the caller's to run the collection on (a node keeps its own); else one is started and ended. */
  workers?: WorkerPool,
  /** The log chain the node is writing (WAL shipping): kept whole. */
  currentChain?: string,
  /** An encrypted store's key file. */
  keyFile?: KeyFile,
): Promise<RetentionResult> {
  const store = LocalStore.openForWrite(dir, nodeId, logger, keyFile);
  let readers: FileLock | undefined;
  try {
    try {
      readers = FileLock.exclusive(join(dir, STORE_READERS_LOCK_FILE), () => new CairnError("E_BUSY", "busy"));
    } catch {
      return { decisions: [], removed: [], skipped: "a restore, verify, export or copy to the remote is reading the store" };
    }
    const ids = await store.reader.manifestIds();
    const decisions = await retentionOf(store.reader, ids, policy);
    const removed = expiredBy(decisions);
    for (const id of removed) await store.removeManifest(id);
    if (removed.length > 0 && store.info.encryption) {
      try {
        const retired = await retireUnusedGenerations(store, ids.filter((id) => !removed.includes(id)));
        if (retired > 0) logger.info(`retention dropped ${retired} wrapped key(s) of key generations no remaining checkpoint uses`);
      } catch (e) {
        logger.warn(`could not drop the keys of retired key generations in ${dir}: ${errorMessage(e)}`);
      }
    }
    try {
      const logFiles = await pruneLog(store.reader.source as RandomReads, {
        delete: async (p) => {
          rmSync(join(dir, p), { force: true });
          if (p.endsWith(`/${CHAIN_FILE}`)) rmSync(join(dir, dirname(p)), { recursive: true, force: true });
        },
      }, store.reader, ids.filter((id) => !removed.includes(id)), currentChain, dir);
      if (logFiles > 0) logger.info(`retention removed ${logFiles} log file(s) no remaining checkpoint needs`);
    } catch (e) {
      logger.warn(`log retention in ${dir} failed: ${errorMessage(e)}`);
    }
    const pool = workers?.alive ? workers : new WorkerPool(1);
    try {
      const job: StoreJob = { job: "store", op: "gc", storeDir: dir, minLiveFraction: 0.5, sync, checkpointsRemoved: removed.length > 0 && lookForDeadBlocks, keys: store.keys?.spec };
      return { decisions, removed, gc: await pool.call<GcResult>(0, job) };
    } catch (e) {
      logger.warn(`garbage collection in ${dir} failed: ${errorMessage(e)}`);
      return { decisions, removed };
    } finally {
      if (pool !== workers) pool.terminate(new CairnError("E_CANCELLED", "garbage collection ended"));
    }
  } finally {
    readers?.release();
    store.release();
  }
}

/** Drop the wrapped keys of generations older than every remaining checkpoint's (after a rotation); returns how many went. */
async function retireUnusedGenerations(store: LocalStore, keptIds: number[]): Promise<number> {
  const enc = store.info.encryption!;
  // nothing older than the current generation holds keys (no rotation pending): no manifest need be read
  if (enc.slots.every((s) => s.generation === enc.generation)) return 0;
  let oldest = enc.generation;
  for (const id of keptIds) oldest = Math.min(oldest, (await store.reader.manifest(id)).key_generation ?? 1);
  const n = retireGenerations(enc, oldest);
  if (n > 0) store.rewriteInfo();
  return n;
}

/**
 * Retention of a remote store: the expired manifests go first, then every pack no remaining
 * manifest needs. A pack uploaded by a push that failed before its manifest is needed by none
 * and goes too (the next push uploads it again if needed). Nothing is deleted while a reader
 * holds a live lease on the prefix (store/lease.ts): they are looked for before the manifests
 * go and again before any pack or log file does; leases that expired are removed at the end.
 */
export async function applyRemoteRetention(
  remote: Backend & { random: RandomReads; writes: Writes },
  policy: RetentionPolicy,
  logger: Logger,
  keys?: StoreKeys,
): Promise<{ removed: number[]; kept: number[]; skipped?: string }> {
  const store = new StoreReader(remote, keys);
  const ids = await store.manifestIds();
  const expired = expiredBy(await retentionOf(store, ids, policy));
  if (expired.length === 0) return { removed: [], kept: ids };
  const before = await readLeases(remote.random);
  if (before.live.length > 0) {
    const skipped = `${describeLeases(before.live)} on ${remote.location}`;
    logger.info(`remote retention postponed: ${skipped}`);
    return { removed: [], kept: ids, skipped };
  }
  for (const id of expired) await remote.writes.delete(manifestPath(id));
  const kept = ids.filter((id) => !expired.includes(id));
  const manifests: Manifest[] = [];
  for (const id of kept) {
    try {
      manifests.push(await store.manifest(id));
    } catch (e) {
      // without knowing what a checkpoint needs, nothing may be collected
      logger.warn(`remote retention: cannot read checkpoint ${id} (${errorMessage(e)}); not collecting packs`);
      return { removed: expired, kept };
    }
  }
  const after = await readLeases(remote.random);
  if (after.live.length > 0) {
    const skipped = `${describeLeases(after.live)} on ${remote.location}; the packs of checkpoint(s) ${expired.join(", ")} are collected next time`;
    logger.info(`remote retention: ${skipped}`);
    return { removed: expired, kept, skipped };
  }
  await removeUnreferencedPacks(remote, store, manifests);
  await pruneLog(remote.random, remote.writes, store, kept, undefined, remote.location);
  for (const p of after.dead) await remote.writes.delete(p);
  return { removed: expired, kept };
}

/**
 * Remove the log files (store/log.ts) none of the checkpoints `keptIds` needs: the log from the
 * oldest retained checkpoint on stays, nothing older. A checkpoint that cannot be read keeps
 * everything. Returns how many files went.
 */
export async function pruneLog(random: RandomReads, writes: Pick<Writes, "delete">, reader: StoreReader, keptIds: number[], currentChain: string | undefined, location: string): Promise<number> {
  const paths = await random.list(`${LOG_DIR}/`);
  if (paths.length === 0) return 0;
  const kept: Manifest[] = [];
  for (const id of keptIds) {
    try {
      kept.push(await reader.manifest(id));
    } catch {
      return 0;
    }
  }
  const index = await indexLog(paths, random, location);
  const need = neededLogFiles(index, kept, currentChain);
  let n = 0;
  for (const p of paths) {
    if (need.has(p)) continue;
    // chain records go last, once nothing of the chain is left
    if (p.endsWith(`/${CHAIN_FILE}`)) continue;
    await writes.delete(p);
    n++;
  }
  for (const p of paths) {
    if (!p.endsWith(`/${CHAIN_FILE}`) || need.has(p)) continue;
    await writes.delete(p);
    n++;
  }
  return n;
}

export interface PruneResult {
  dir: string;
  policy: string;
  dry_run: boolean;
  checkpoints: RetentionDecision[];
  removed: number[];
  freed_bytes?: number;
}

/**
 * `prune-db-checkpoint`: the decisions of `policy` on the local store in `dir` and, unless
 * `dryRun`, their application (manifests, then the packs and log no survivor needs). Applying
 * needs the store unclaimed: a running node applies its own policy after each checkpoint, and
 * two policies on one store would undo each other.
 */
export async function pruneLocalStore(dir: string, policy: RetentionPolicy, o: { dryRun: boolean; logger: Logger; keyFile?: KeyFile }): Promise<PruneResult> {
  const reader = new StoreReader(new DirBackend(dir), LocalStore.keysOf(dir, o.keyFile));
  if (!(await reader.exists())) throw new CairnError("E_NOT_A_STORE", `${dir} is not a cairn checkpoint store (no cairn-store.json)`);
  const info = await reader.info();
  const base = { dir, policy: describePolicy(policy), dry_run: o.dryRun };
  if (o.dryRun) {
    const checkpoints = await retentionOf(reader, await reader.manifestIds(), policy);
    return { ...base, checkpoints, removed: expiredBy(checkpoints) };
  }
  const claim = LocalStore.claim(dir, (holder) =>
    new CairnError("E_BUSY", `a running node (pid ${holder?.pid ?? "unknown"}) owns ${dir}; its own retention applies its policy after each checkpoint`, {
      hint: "change the node's checkpoint_config.retention and send it SIGHUP, or stop it first; --dry-run shows what this policy would do",
    }),
  );
  try {
    const r = await applyLocalRetention(dir, info.node_id, policy, true, o.logger, true, undefined, undefined, o.keyFile);
    if (r.skipped) throw new CairnError("E_BUSY", `nothing was removed: ${r.skipped}`, { hint: "run it again once that is done" });
    return { ...base, checkpoints: r.decisions, removed: r.removed, freed_bytes: r.gc?.freedBytes ?? 0 };
  } finally {
    claim.release();
  }
}
