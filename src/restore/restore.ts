/**
 * `cairn restore`: plan, guard, rebuild, check, swap.
 *
 * Guards, before anything is written: the target's storage lock (a running node holds it), an
 * existing database (refused without --force), a database of another node (refused), an
 * unknown checkpoint id (refused, listing the ids there are).
 *
 * The image is rebuilt in a staging folder beside the target (`.<name>.cairn-restore`, same
 * filesystem), each block checked as it is written, then checked by SQLite
 * (PRAGMA quick_check by default). Only then: with --force the existing database files move
 * to a sibling folder (never deleted), the staged database is renamed into the target in one
 * step, and the folder is fsynced. The target never holds a half-written database, and if
 * anything fails before the swap it is left as it was.
 */
import { existsSync, mkdirSync, rmdirSync, rmSync, unlinkSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { DirBackend } from "../store/dir/backend.ts";
import { Store } from "../store/store.ts";
import { CairnError, errorMessage, isDiskFull } from "../errors.ts";
import { assignNewNodeId, DB_FILE } from "../engine/database.ts";
import { LOCK_FILE, StorageLock } from "../engine/lock.ts";
import type { Logger } from "../log.ts";
import type { IncludedFile, Manifest } from "../store/format.ts";
import type { KeyFile } from "../store/crypto.ts";
import { openStore } from "../store/open.ts";
import { crashPoint, pausePoint } from "../util/crash-point.ts";
import type { FileLock } from "../util/file-lock.ts";
import { formatBytes } from "../util/display.ts";
import { assertTrustedDir, DIR_MODE, readOwnFile, removeDirNoFollow, writeFileAtomic } from "../util/fsx.ts";
import { WorkerPool } from "../util/worker-pool.ts";
import type { CheckJob } from "./check-job.ts";
import { rebuildImage } from "./rebuild.ts";
import { replayLog } from "./replay.ts";
import { currentChain, indexLog, type InstantPlan, LOG_DIR, type LogIndex, type LogPosition, planInstant, windowOf, writeLogOrigin } from "../store/log.ts";
import { type PlacedFile, placeCarriedFiles, targetOf } from "./files.ts";
import { openIncluded } from "../store/included.ts";
import { asideDirFor, describeExisting, type ExistingDatabase, stagingDirFor, swap } from "./target.ts";

export type IntegrityCheck = "none" | "quick" | "full";

export interface RestoreOptions {
  source: string;
  /** Key file(s) of an encrypted store. */
  keyFiles?: KeyFile[];
  dbPath: string;
  checkpointId?: number;
  /** Restore the state as of this instant (ms since the epoch): the shipped log after a checkpoint. */
  timestamp?: number;
  /** Follow this chain of the log (a timeline) instead of the current one. */
  timeline?: string;
  force: boolean;
  /** Give the restored database a new node id (a clone of the checkpoint's node). */
  newNodeId?: boolean;
  /** Put the files the checkpoint carries back at their recorded paths (--with-files)... */
  withFiles?: boolean;
  /** ...or under this folder, at their recorded absolute paths (--files-to DIR). */
  filesTo?: string;
  integrityCheck: IntegrityCheck;
  dryRun: boolean;
  workers: number;
  logger: Logger;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface RestorePlan {
  checkpoint_id: number;
  /** True when no --checkpoint-id was given (the newest intact checkpoint). */
  latest: boolean;
  source: string;
  node_id: string;
  created: string;
  size_bytes: number;
  db_path: string;
  staging_dir: string;
  /** Database files in the target that --force moves aside, and where to. */
  existing: ExistingDatabase | null;
  move_aside_to: string | null;
  /** The instant restored to when shipped transactions are applied (RFC 3339), else null. */
  reached: string | null;
  /** The log chain (timeline) followed, when shipped transactions are applied. */
  timeline: string | null;
}

export interface RestoreResult extends RestorePlan {
  /** With --new-node-id: the restored database's own node id (node_id is the checkpoint's). */
  new_node_id: string | null;
  /** With --with-files or --files-to: where each carried file went. */
  files: PlacedFile[];
  duration_ms: number;
  resumed: boolean;
  integrity_check: IntegrityCheck;
  /** Shipped transactions applied after the checkpoint. */
  replayed_txns: number;
}

/** The checkpoint and the shipped transactions after it that restore the state at an instant. */
interface LogPlan {
  plan: InstantPlan;
  untilMs: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * With a timestamp, or with neither a timestamp nor a checkpoint id on a store that holds a
 * shipped log: the plan to the instant (the newest the current timeline reaches, without a
 * timestamp). Undefined: restore a checkpoint exactly.
 */
async function planFromLog(o: RestoreOptions, reader: Store): Promise<LogPlan | undefined> {
  if (o.checkpointId !== undefined) {
    if (o.timestamp !== undefined) throw new CairnError("E_USAGE", "--checkpoint-id and --timestamp cannot be given together: --checkpoint-id restores that checkpoint exactly");
    return undefined;
  }
  // an archive's log comes after its packs: it is planned once the stream has passed (stage)
  if (!reader.reader) return undefined;
  const paths = await reader.reader.source.list(`${LOG_DIR}/`);
  if (paths.length === 0) {
    if (o.timestamp !== undefined || o.timeline !== undefined) throw new CairnError("E_NOT_FOUND", `${reader.location} holds no shipped transactions (WAL shipping was off): it restores only to its checkpoints`, { hint: "restore a checkpoint with --checkpoint-id N, or without --timestamp for the newest" });
    return undefined;
  }
  const index = await indexLog(paths, reader.reader.source, reader.location);
  const manifests: Manifest[] = [];
  for (const id of await reader.manifestIds()) {
    try {
      manifests.push(await reader.manifest(id));
    } catch (e) {
      if (e instanceof CairnError && e.code === "E_STORE_FORMAT") throw e;
      o.logger.warn(`checkpoint ${id} cannot be read (${errorMessage(e)}); skipping it`);
    }
  }
  const chain = o.timeline ?? currentChain(index);
  if (!chain || !index.chains.has(chain)) {
    throw new CairnError("E_NOT_FOUND", `there is no timeline ${o.timeline} in ${reader.location}; timelines there: ${[...index.chains.keys()].join(", ") || "none"}`);
  }
  return planTo(index, manifests, chain, o.timestamp, reader.location);
}

/**
 * The plan to `timestamp` on `chain` (without one, to the newest instant it reaches), or
 * undefined when no checkpoint of `manifests` can be brought forward and none was asked for.
 * An instant out of reach is E_NOT_FOUND naming the window there is.
 */
function planTo(index: LogIndex, manifests: Manifest[], chain: string, timestamp: number | undefined, location: string): LogPlan | undefined {
  const window = windowOf(index, manifests, chain);
  if (!window) {
    if (timestamp !== undefined) throw new CairnError("E_NOT_FOUND", `${location} has no checkpoint the shipped log of timeline ${chain} can be applied to: it restores only to its checkpoints`);
    return undefined;
  }
  const until = timestamp ?? window.to;
  const plan = until >= window.from && until <= window.to ? planInstant(index, manifests, chain, until) : undefined;
  if (!plan) {
    throw new CairnError("E_NOT_FOUND", `${iso(until)} is outside what ${location} can restore to: from ${iso(window.from)} to ${iso(window.to)} (timeline ${chain})`, {
      hint: "choose an instant in that window",
    });
  }
  return { plan, untilMs: until };
}


async function pickCheckpoint(
  reader: Store,
  wanted: number | undefined,
  source: string,
  logger: Logger,
): Promise<{ manifest: Manifest; candidates: number[] }> {
  const ids = await reader.checkpointIds(wanted);
  if (ids.length === 0) throw new CairnError("E_NOT_FOUND", `there are no checkpoints in ${source}`);
  if (wanted !== undefined) return { manifest: await reader.manifest(wanted), candidates: [wanted] };
  const candidates = [...ids].reverse();
  for (const id of candidates) {
    try {
      return { manifest: await reader.manifest(id), candidates: candidates.slice(candidates.indexOf(id)) };
    } catch (e) {
      // a newer format needs a newer binary, not an older checkpoint
      if (e instanceof CairnError && e.code === "E_STORE_FORMAT") throw e;
      logger.warn(`checkpoint ${id} cannot be read (${errorMessage(e)}); skipping it`);
    }
  }
  throw new CairnError("E_STORE_DAMAGED", `no checkpoint in ${source} can be read`);
}


export async function restore(o: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  const dbPath = resolve(o.dbPath);
  const reader = await openStore(o.source, o.keyFiles);
  // before anything is read: the node's retention and garbage collection wait while we hold
  // this, so the checkpoint chosen below cannot change under the restore
  const readers = await reader.hold((m) => o.logger.warn(m));
  try {
    await pausePoint("restore:store-held");
    return await restoreHeld(o, reader, dbPath, t0);
  } finally {
    await readers.release();
  }
}

async function restoreHeld(o: RestoreOptions, reader: Store, dbPath: string, t0: number): Promise<RestoreResult> {
  await reader.info();
  const fromLog = await planFromLog(o, reader);
  const first = fromLog ? fromLog.plan.manifest : (await pickCheckpoint(reader, o.checkpointId, o.source, o.logger)).manifest;

  // the target: not while a node runs there; an existing database only with --force, and only
  // one of the same node
  if (StorageLock.isHeld(dbPath)) throw StorageLock.busy(dbPath, StorageLock.holder(dbPath), "refusing to restore into it");
  // a target or staging folder another user can write into could be planted with a database
  assertTrustedDir(dbPath);
  assertTrustedDir(stagingDirFor(dbPath), { noLink: true });
  const existing = describeExisting(dbPath);
  // one stamp names everything this restore moves aside (the old database, carried files it replaces)
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const filesTo = o.filesTo ? resolve(o.filesTo) : undefined;
  const asideDir = existing ? asideDirFor(dbPath, stamp) : null;
  const plan = (m: Manifest, latest: boolean): RestorePlan => ({
    checkpoint_id: m.id,
    latest,
    source: reader.location,
    node_id: m.node_id,
    created: m.created,
    size_bytes: m.db_size_bytes,
    db_path: dbPath,
    staging_dir: stagingDirFor(dbPath),
    existing,
    move_aside_to: asideDir,
    reached: fromLog ? iso(fromLog.untilMs) : null,
    timeline: fromLog ? fromLog.plan.chain : null,
  });
  if (existing) {
    if (existing.node_id && existing.node_id !== first.node_id) {
      throw new CairnError(
        "E_OTHER_NODE",
        `${dbPath} holds the database of node ${existing.node_id}, but the checkpoint is of node ${first.node_id}; refusing to replace one node's database with another's`,
        { hint: "restore into an empty directory, or move the existing database away yourself first" },
      );
    }
    if (!o.force) {
      throw new CairnError("E_EXISTS", `${dbPath} already holds a database (${existing.files.join(", ")})`, {
        hint: `add --force to move it aside to ${asideDir} first`,
      });
    }
  }
  const latest = o.checkpointId === undefined && o.timestamp === undefined;
  if (o.dryRun) return { ...plan(first, latest), new_node_id: null, files: plannedFiles(o, first, filesTo), duration_ms: 0, resumed: false, integrity_check: o.integrityCheck, replayed_txns: 0 };
  if (!o.newNodeId && !existing) warnIfRecent(o, reader, first, fromLog?.untilMs);

  // from here on we hold the target's lock: no node can start on it while we work
  const hadDir = existsSync(dbPath);
  const hadLockFile = existsSync(join(dbPath, LOCK_FILE));
  const lock: FileLock = StorageLock.acquire(dbPath, "restore", "refusing to restore into it");
  let swapped = false;
  let archiveReached: { ms: number; chain: string } | undefined;
  try {
    let manifest = first;
    const candidates = o.checkpointId === undefined && !fromLog ? (await reader.manifestIds()).filter((id) => id <= first.id).reverse() : [first.id];
    for (let k = 0; ; k++) {
      try {
        // stage() runs check() on the image while its last flush runs
        const replay = { txns: 0, position: manifest.log };
        const archiveLog = !reader.reader && o.checkpointId === undefined && manifest.log !== undefined;
        const replayer =
          (fromLog &&
            (async (imageFile: string) => {
              const r = await replayLog({ store: reader, steps: fromLog.plan.steps, imageFile, pageSize: manifest.page_size, untilMs: fromLog.untilMs, start: manifest.log!, signal: o.signal });
              replay.txns = r.txns;
              replay.position = r.position;
              if (r.txns > 0) o.logger.info(`applied ${r.txns} shipped transaction(s) after checkpoint ${manifest.id}, up to ${iso(fromLog.untilMs)}`);
            })) ||
          (archiveLog &&
            (async (imageFile: string) => {
              const r = await replayArchiveLog(o, reader, manifest, imageFile);
              if (!r) return;
              replay.txns = r.txns;
              replay.position = r.position;
              archiveReached = { ms: r.untilMs, chain: manifest.log!.chain };
            }));
        if (!archiveLog && !reader.reader && o.timestamp !== undefined) {
          throw new CairnError("E_NOT_FOUND", `${reader.location} holds no shipped transactions: it restores only to its checkpoint`);
        }
        const carriedStored = new Map<string, Uint8Array>();
        const resumed = await stage(o, reader, manifest, dbPath, replayer, archiveLog, (f, stored) => void carriedStored.set(f.name, stored));
        // the carried files fetched and checked before anything is put in place
        const carried = o.withFiles || o.filesTo ? await carriedFiles(o, reader, manifest, carriedStored) : [];
        // checked as the checkpoint's node; then, for a clone, made a node of its own
        const newNodeId = o.newNodeId ? assignNewNodeId(join(stagingDirFor(dbPath), DB_FILE)) : null;
        await pausePoint("restore:before-swap");
        throwIfInterrupted(o.signal);
        crashPoint("restore:checked");
        swap(dbPath, existing ? asideDir : null);
        swapped = true;
        crashPoint("restore:swapped");
        removeDirNoFollow(stagingDirFor(dbPath));
        const files = placeCarriedFiles(carried, filesTo, stamp);
        for (const f of files) {
          o.logger.info(`carried file ${f.path}: ${f.action === "unchanged" ? "already there, unchanged" : `put back at ${f.written_to}`}${f.moved_aside_to ? ` (the different one there moved to ${f.moved_aside_to})` : ""}`);
        }
        if (replay.position && !newNodeId) {
          // the node started on it ships a new chain that forks here
          try {
            writeLogOrigin(dbPath, { ...replay.position, ms: fromLog ? fromLog.untilMs : archiveReached ? archiveReached.ms : replay.position.ms }, join(dbPath, DB_FILE));
          } catch (e) {
            o.logger.warn(`where the restored database stands in the shipped log was not recorded (${errorMessage(e)}); the node's next chain starts from its first checkpoint`);
          }
        }
        if (newNodeId) o.logger.info(`the restored database is node ${newNodeId}, a clone of node ${manifest.node_id}; it checkpoints into a store of its own`);
        return { ...plan(manifest, latest), new_node_id: newNodeId, files, ...(archiveReached ? { reached: iso(archiveReached.ms), timeline: archiveReached.chain } : {}), duration_ms: Math.round(performance.now() - t0), resumed, integrity_check: o.integrityCheck, replayed_txns: replay.txns };
      } catch (e) {
        const damaged = e instanceof CairnError && (e.code === "E_STORE_DAMAGED" || e.code === "E_STORE_MISSING" || e.code === "E_RESTORE_CHECK");
        const nextId = candidates[k + 1];
        // an interrupted restore keeps its staging folder to continue, and so does one whose
        // checked image could not be put in place; any other failure does not
        const keep = e instanceof CairnError && (e.code === "E_INTERRUPTED" || e.code === "E_RESTORE_SWAP" || e.code === "E_UNSAFE_PATH");
        if (!keep) removeDirNoFollow(stagingDirFor(dbPath));
        if (isDiskFull(e)) {
          throw new CairnError("E_DISK_FULL", `no space left on the device holding ${stagingDirFor(dbPath)}; ${dbPath} was not touched`, {
            hint: `free space there (the restore needs ${formatBytes(manifest.db_size_bytes)}), then run the same command again`,
            cause: e,
          });
        }
        if (!damaged || o.checkpointId !== undefined || nextId === undefined) throw e;
        o.logger.warn(`checkpoint ${manifest.id} is damaged (${errorMessage(e)}); trying checkpoint ${nextId}`);
        removeDirNoFollow(stagingDirFor(dbPath));
        manifest = await reader.manifest(nextId);
      }
    }
  } finally {
    lock.release();
    if (!swapped) {
      // leave the target as it was found
      if (!hadLockFile) rmSync(join(dbPath, LOCK_FILE), { force: true });
      if (!hadDir) {
        try {
          rmdirSync(dbPath);
        } catch {
          // not empty after all: leave it
        }
      }
    }
  }
}


interface StagingPlan {
  source: string;
  checkpoint_id: number;
  manifest_checksum: string;
}

/** Rebuild into the staging folder, continuing an earlier run of the same plan. */
async function stage(
  o: RestoreOptions,
  reader: Store,
  m: Manifest,
  dbPath: string,
  replay?: false | ((imageFile: string) => Promise<void>),
  archiveLog = false,
  onIncludedFile?: (f: IncludedFile, stored: Uint8Array) => void,
): Promise<boolean> {
  const dir = stagingDirFor(dbPath);
  const planFile = join(dir, "plan.json");
  const want: StagingPlan = { source: reader.location, checkpoint_id: m.id, manifest_checksum: m.checksum };
  let resumed = false;
  // a staging folder is trusted only if this user made it and nobody else can write into it;
  // even then, what an earlier run wrote is checked again against the digests (rebuild.ts)
  assertTrustedDir(dir, { noLink: true });
  if (existsSync(planFile)) {
    try {
      const had = JSON.parse(new TextDecoder().decode(readOwnFile(planFile, 64 * 1024))) as StagingPlan;
      resumed = had.source === want.source && had.checkpoint_id === want.checkpoint_id && had.manifest_checksum === want.manifest_checksum;
    } catch (e) {
      if (e instanceof CairnError && e.code === "E_UNSAFE_PATH") throw e;
      resumed = false;
    }
  }
  if (!resumed) {
    removeDirNoFollow(dir);
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    writeFileAtomic(planFile, JSON.stringify(want));
  } else o.logger.info(`continuing the interrupted restore of checkpoint ${m.id} in ${dir}`);
  const r = await rebuildImage({
    store: reader,
    manifest: m,
    imageFile: join(dir, DB_FILE),
    progressFile: join(dir, "progress.json"),
    workers: o.workers,
    signal: o.signal,
    onProgress: o.onProgress,
    onIncludedFile,
    onLogFile: archiveLog
      ? (path, data) => {
          // staged beside the image, applied once the stream has passed (paths checked by the stream reader)
          mkdirSync(join(dir, dirname(path)), { recursive: true, mode: DIR_MODE });
          writeFileAtomic(join(dir, path), data);
        }
      : undefined,
    whileFlushing: async () => {
      throwIfInterrupted(o.signal);
      if (replay) await replay(join(dir, DB_FILE));
      await check(o, join(dir, DB_FILE), m);
    },
  });
  if (resumed && r.resumedRanges > 0) o.logger.info(`${r.resumedRanges} of ${r.ranges} ranges were already restored (checked again)`);
  if (r.redoneRanges > 0) o.logger.warn(`${r.redoneRanges} range(s) written by the earlier run did not match the checkpoint and were restored again`);
  return resumed;
}

/** An archive's shipped log, staged by the stream: planned to the instant asked for (else its last) and applied. */
async function replayArchiveLog(o: RestoreOptions, archive: Store, m: Manifest, imageFile: string): Promise<{ txns: number; position: LogPosition; untilMs: number } | undefined> {
  const staged = new Store(new DirBackend(dirname(imageFile)));
  const paths = await staged.reader!.source.list(`${LOG_DIR}/`);
  if (paths.length === 0) {
    if (o.timestamp !== undefined) throw new CairnError("E_NOT_FOUND", `${archive.location} holds no shipped transactions: it restores only to its checkpoint`);
    return undefined;
  }
  const index = await indexLog(paths, staged.reader!.source, archive.location);
  const lp = planTo(index, [m], m.log!.chain, o.timestamp, archive.location);
  if (!lp) return undefined;
  const r = await replayLog({ store: staged, steps: lp.plan.steps, imageFile, pageSize: m.page_size, untilMs: lp.untilMs, start: m.log!, signal: o.signal });
  if (r.txns > 0) o.logger.info(`applied ${r.txns} shipped transaction(s) from the archive after checkpoint ${m.id}, up to ${iso(lp.untilMs)}`);
  return { ...r, untilMs: lp.untilMs };
}

/** What --with-files / --files-to would do, for a dry run. */
function plannedFiles(o: RestoreOptions, m: Manifest, filesTo: string | undefined): PlacedFile[] {
  if (!o.withFiles && !o.filesTo) return [];
  return (m.files ?? []).map((f) => ({ path: f.path, written_to: targetOf(f, filesTo), action: "written" as const }));
}

/** The files `m` carries, each read (from the archive's pass, or the store) and checked against its name. */
async function carriedFiles(o: RestoreOptions, reader: Store, m: Manifest, fromStream: Map<string, Uint8Array>): Promise<{ entry: IncludedFile; data: Uint8Array }[]> {
  if (!m.files?.length) {
    o.logger.warn(`checkpoint ${m.id} carries no files (checkpoint_config.include_files was not set when it was taken); only the database is restored`);
    return [];
  }
  const out: { entry: IncludedFile; data: Uint8Array }[] = [];
  for (const f of m.files) {
    const stored = fromStream.get(f.name);
    if (stored) out.push({ entry: f, data: openIncluded(stored, f, reader.streamer?.keys, reader.location) });
    else if (reader.reader) out.push({ entry: f, data: await reader.reader.carriedFile(f) });
    else throw new CairnError("E_STORE_MISSING", `${reader.location}: the carried file ${f.path} is not in the archive`);
  }
  return out;
}

/** How recent a store's last checkpoint or shipped transaction must be for restore to warn that its node may still be running. */
const RECENT_ACTIVITY_MS = 15 * 60_000;

/**
 * Restoring a node's checkpoint elsewhere while that node still runs makes two nodes of one
 * identity: the operator's call, but said when the store was written to moments ago.
 */
function warnIfRecent(o: RestoreOptions, reader: Store, m: Manifest, logUntilMs: number | undefined): void {
  const last = Math.max(Date.parse(m.created), logUntilMs ?? 0);
  const ago = Date.now() - last;
  if (!(ago >= 0 && ago < RECENT_ACTIVITY_MS)) return;
  o.logger.warn(
    `node ${m.node_id} wrote to ${reader.location} ${Math.max(1, Math.round(ago / 60_000))} min ago: if it is still running, a node started on this ` +
      `restore has the same identity; use --new-node-id for a clone of it`,
  );
}

function throwIfInterrupted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CairnError("E_INTERRUPTED", "restore interrupted");
}

/**
 * SQLite's own check of the staged database, in a worker so that an interrupt can stop it
 * (on a large database it takes minutes). No -wal or -shm is left beside the file.
 */
async function check(o: RestoreOptions, file: string, m: Manifest): Promise<void> {
  if (o.integrityCheck !== "none") {
    const pool = new WorkerPool(1);
    const onAbort = () => pool.terminate(new CairnError("E_INTERRUPTED", "restore interrupted"));
    o.signal?.addEventListener("abort", onAbort);
    try {
      const job: CheckJob = { job: "check", op: "sqlite", file, full: o.integrityCheck === "full" };
      const r = await pool.call<{ rows: string[]; nodeId: string | null }>(0, job);
      const pragma = o.integrityCheck === "full" ? "integrity_check" : "quick_check";
      if (r.rows.length !== 1 || r.rows[0] !== "ok") {
        throw new CairnError("E_RESTORE_CHECK", `the restored database of checkpoint ${m.id} fails PRAGMA ${pragma}: ${r.rows.slice(0, 3).join("; ")}`);
      }
      // (a clone's image may carry its new id already, from a run interrupted before the swap)
      if (r.nodeId !== m.node_id && !o.newNodeId) throw new CairnError("E_RESTORE_CHECK", `the restored database says node ${r.nodeId}, the checkpoint ${m.node_id}`);
    } finally {
      o.signal?.removeEventListener("abort", onAbort);
      pool.terminate(new CairnError("E_CANCELLED", "check done"));
    }
  }
  for (const f of [`${file}-wal`, `${file}-shm`]) if (existsSync(f)) unlinkSync(f);
}

