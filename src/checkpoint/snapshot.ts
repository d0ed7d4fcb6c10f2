/**
 * Pinning a consistent, point-in-time view of the live database without SQLite's backup API
 * (bun:sqlite has none). The node's WAL checkpoints are paused by the caller, so nothing
 * writes the database file; a read transaction on a connection of our own keeps SQLite from
 * restarting the WAL under us; and in the same synchronous step (the node's writes all run on
 * this thread, so none can commit in between) we read the wal-index header: frames
 * 1..mxFrame are exactly the committed state at this instant. The snapshot is the database
 * file with those frames laid over it (see wal-format.ts), read by the workers.
 *
 * A guard compares the database file's size and mtime at the end: if anything else wrote it
 * (an operator's sqlite3 running a checkpoint, say) the snapshot is refused, never kept.
 *
 * A PASSIVE fold of the node's that was already running is let finish beside the pin
 * (engine/wal.ts): it copies into the database file only frames up to the lowest read mark,
 * and the pin's mark is the end of the WAL as pinned, so every page it writes is one whose
 * frame the snapshot lays over the file anyway (the file's bytes of it are never used); it
 * truncates the file only when no frame came after the pin, to the snapshot's own size. The
 * guard's "before" is then the file as that fold left it.
 *
 * Every read of the live files goes through the node's own descriptors (LiveFiles): opening
 * and closing one here would drop SQLite's locks (see engine/live-files.ts). The connection
 * pinned here is SQLite's own, and SQLite keeps its descriptors open while others hold locks.
 */
import { Database } from "bun:sqlite";
import { fstatSync, readSync } from "node:fs";
import { CairnError } from "../errors.ts";
import type { LiveFiles } from "../engine/live-files.ts";
import { headerPageSize, readWalIndexHeader, type WalIndexHeader } from "../engine/sqlite-files.ts";

export interface PinnedSnapshot {
  dbFile: string;
  walFile: string;
  /**
   * When the WAL holds frames not yet in the database file: its index header. Frames
   * 1..mxFrame stay put while the pin is held; a worker finds their pages (scanWal), off this thread.
   */
  walIndex?: WalIndexHeader;
  /** The wal-index header at the pin, whether or not the WAL holds frames to lay over the file. */
  walHeader: WalIndexHeader;
  pageSize: number;
  /** Pages in the database file (used when there is no WAL to lay over it). */
  dbFilePages: number;
  /** The node's running totals as of the snapshot. */
  totals: { blob_count: number; blob_bytes: number };
  /** Throws E_SNAPSHOT_CHANGED if the database file changed since the pin (or since the fold running at the pin ended). */
  checkGuard(): Promise<void>;
  release(): void;
}

function dbHeaderPageSize(dbFd: number): number {
  const buf = new Uint8Array(100);
  readSync(dbFd, buf, 0, 100, 0);
  return headerPageSize(buf);
}

/** `folding`: the node's PASSIVE fold running at the pin, if one is; it settles when the fold has ended. */
export function pinSnapshot(live: LiveFiles, folding?: Promise<void>): PinnedSnapshot {
  const dbFile = live.dbFile;
  const conn = new Database(dbFile, { readwrite: true, create: false });
  let open = true;
  const release = () => {
    if (!open) return;
    open = false;
    try {
      conn.exec("COMMIT");
    } catch {
      // nothing to end
    }
    conn.close();
  };
  try {
    conn.exec("PRAGMA wal_autocheckpoint = 0");
    conn.exec("BEGIN");
    // --- from here to the end of this function nothing else can commit (same thread) ---
    const totals = conn.query<{ blob_count: number; blob_bytes: number }, []>("SELECT blob_count, blob_bytes FROM totals").get()!;
    const hdr = readWalIndexHeader(live.shmFd);
    const atPin = fstatSync(live.dbFd);
    let before = atPin;
    const settled = folding?.then(
      () => void (before = fstatSync(live.dbFd)),
      () => void (before = fstatSync(live.dbFd)),
    );
    const useWal = hdr.mxFrame > hdr.nBackfill;
    const pageSize = useWal ? hdr.pageSize : dbHeaderPageSize(live.dbFd);
    return {
      dbFile,
      walFile: `${dbFile}-wal`,
      walIndex: useWal ? hdr : undefined,
      walHeader: hdr,
      pageSize,
      dbFilePages: Math.floor(atPin.size / pageSize),
      totals,
      async checkGuard() {
        await settled;
        const after = fstatSync(live.dbFd);
        if (after.size !== before.size || after.mtimeMs !== before.mtimeMs) {
          throw new CairnError(
            "E_SNAPSHOT",
            "the database file changed while the checkpoint read it (did another process checkpoint its WAL?); the copy was discarded",
            { hint: "make sure nothing but the node opens the database, then try again" },
          );
        }
      },
      release,
    };
  } catch (e) {
    release();
    throw e;
  }
}
