/**
 * The target of a restore, as restore.ts sees it: where the rebuild is staged and where an
 * existing database is moved aside (both on the target's own filesystem, so that every move is
 * a rename), what database is there now (read without changing it), and the swap that puts
 * the restored database in place.
 */
import { Database } from "bun:sqlite";
import { CHANGES_FILE } from "../engine/change-tracker.ts";
import { LOG_ORIGIN_FILE, LOG_STATE_FILE } from "../store/log.ts";
import { closeSync, existsSync, mkdirSync, openSync, readSync, renameSync, rmdirSync, statSync, unlinkSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import { DB_FILE } from "../engine/database.ts";
import { headerPageSize, scanWalRecovery } from "../engine/sqlite-files.ts";
import { crashPoint } from "../util/crash-point.ts";
import { DIR_MODE, fsyncDir } from "../util/fsx.ts";

export const DB_FILES = [DB_FILE, `${DB_FILE}-wal`, `${DB_FILE}-shm`];

/** Database files in a target, and the node id of the database there (null if it cannot be read). */
export interface ExistingDatabase {
  files: string[];
  node_id: string | null;
}

/**
 * Where the restore is staged: beside the target, on its filesystem, so that the final rename
 * is atomic. When the target is itself a mount point, its parent is another filesystem; then
 * the staging folder goes inside it (a hidden folder no node reads).
 */
export function stagingDirFor(dbPath: string): string {
  return isMountPoint(dbPath) ? join(dbPath, ".cairn-restore") : join(dirname(dbPath), `.${basename(dbPath)}.cairn-restore`);
}

/**
 * Where --force moves the existing database: beside the target, or inside it when the target
 * is its own filesystem (a dedicated volume), so that the move is a rename on one filesystem.
 */
export function asideDirFor(dbPath: string, stamp: string): string {
  return isMountPoint(dbPath) ? join(dbPath, `.cairn-replaced-${stamp}`) : `${dbPath}.replaced-${stamp}`;
}

/** True if `dir` is on another filesystem than its parent (false if it does not exist yet). */
function isMountPoint(dir: string): boolean {
  try {
    return statSync(dir).dev !== statSync(dirname(dir)).dev;
  } catch {
    // the target does not exist yet: it will be made on its parent's filesystem
    return false;
  }
}


/** How much of an existing database is read to find its node id (meta is one of its first tables). */
const PROBE_PAGES = 64;

/**
 * The node id of an existing database, read without opening it in place: SQLite would create
 * or rewrite -wal and -shm beside it even read-only. Its first pages, with their newest
 * committed versions from the WAL laid over them, are loaded into an in-memory database.
 * Null if that does not answer (then nothing can be said about the database's owner).
 */
export function existingNodeId(dbFile: string): string | null {
  let db: Database | undefined;
  try {
    const fd = openSync(dbFile, "r");
    const head = new Uint8Array(100);
    readSync(fd, head, 0, 100, 0);
    const pageSize = headerPageSize(head);
    if (pageSize < 512) return null;
    const image = new Uint8Array(PROBE_PAGES * pageSize);
    readSync(fd, image, 0, image.length, 0);
    closeSync(fd);
    const overlay = scanWalRecovery(`${dbFile}-wal`);
    if (overlay) {
      const wfd = openSync(`${dbFile}-wal`, "r");
      try {
        overlay.pages.forEach((p, i) => {
          if (p <= PROBE_PAGES) readSync(wfd, image, (p - 1) * pageSize, pageSize, overlay.offsets[i]!);
        });
      } finally {
        closeSync(wfd);
      }
    }
    // an in-memory image cannot be in WAL mode: mark it as a rollback-journal database
    image[18] = 1;
    image[19] = 1;
    db = Database.deserialize(image, { readonly: true });
    return db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'node_id'").get()?.value ?? null;
  } catch {
    return null;
  } finally {
    db?.close();
  }
}


export function describeExisting(dbPath: string): ExistingDatabase | null {
  const files = DB_FILES.filter((f) => existsSync(join(dbPath, f)));
  if (files.length === 0) return null;
  return { files, node_id: existsSync(join(dbPath, DB_FILE)) ? existingNodeId(join(dbPath, DB_FILE)) : null };
}


/** Move the existing database aside (if any), rename the staged one in, fsync both folders. */
export function swap(dbPath: string, asideDir: string | null): void {
  const staged = join(stagingDirFor(dbPath), DB_FILE);
  mkdirSync(dbPath, { recursive: true, mode: DIR_MODE });
  const moved: string[] = [];
  try {
    if (asideDir) {
      const present = DB_FILES.filter((f) => existsSync(join(dbPath, f)));
      if (present.length > 0) {
        mkdirSync(asideDir, { recursive: true, mode: DIR_MODE });
        for (const f of present) {
          renameSync(join(dbPath, f), join(asideDir, f));
          moved.push(f);
        }
        fsyncDir(asideDir);
        crashPoint("restore:moved-aside");
      }
    }
    // stale -wal/-shm must never sit beside the restored database
    for (const f of DB_FILES.slice(1)) if (existsSync(join(dbPath, f))) unlinkSync(join(dbPath, f));
    // and the node's record of pages changed since its last checkpoint describes the old one
    // (it would be refused anyway: the restored file is not the one it was saved with)
    for (const stale of [CHANGES_FILE, LOG_STATE_FILE, LOG_ORIGIN_FILE]) if (existsSync(join(dbPath, stale))) unlinkSync(join(dbPath, stale));
    renameSync(staged, join(dbPath, DB_FILE));
  } catch (e) {
    // put back what was moved: the target is left as it was, the checked image stays staged
    for (const f of moved.reverse()) {
      try {
        renameSync(join(asideDir!, f), join(dbPath, f));
      } catch {
        // it stays in the aside folder, which the error names
      }
    }
    if (asideDir && moved.length > 0) {
      try {
        rmdirSync(asideDir);
      } catch {
        // not empty: something could not be moved back
      }
    }
    throw new CairnError("E_RESTORE_SWAP", `the restored database could not be put in place in ${dbPath}: ${errorMessage(e)}; ${dbPath} was left as it was`, {
      hint: "fix the cause and run the same command again (the checked image is kept and reused)",
      cause: e,
    });
  }
  fsyncDir(dbPath);
  fsyncDir(dirname(dbPath));
}

/** Leftover staging folders (for --help texts and tests). */
export function stagingDirOf(dbPath: string): string {
  return stagingDirFor(resolve(dbPath));
}


