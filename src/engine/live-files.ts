/**
 * The node's own descriptors of SQLite's files: `cairn.db`, `cairn.db-wal`, `cairn.db-shm`.
 *
 * THE RULE: no code in the node's process may open and then close a descriptor of any of
 * these files while a connection to the database is open. POSIX advisory locks belong to the
 * process, not to the descriptor: closing *any* descriptor of a file drops *every* fcntl lock
 * the process holds on it (sqlite.org/howtocorrupt.html §2.2), and worker threads are the same
 * process. Once SQLite's locks are gone, an operator's `sqlite3` believes it is alone, runs
 * recovery, and on exit deletes the WAL and the wal-index the node is still writing into.
 *
 * So every read the node makes of these files itself (the checkpoint's snapshot, the WAL
 * overlay, the wal-index header) goes through the descriptors opened here, once, when the node
 * starts. Descriptors are process-wide: workers are handed the numbers and never open or
 * close anything. They are closed only after the node's last connection has closed.
 *
 * The same descriptors tell whether the files the node writes are still the ones on disk:
 * `check()` compares each path's inode with the descriptor's, so a WAL or wal-index unlinked
 * or replaced under the node (by anything) is noticed before another write is acknowledged.
 */
import { closeSync, constants, fstatSync, openSync, statSync } from "node:fs";
import { CairnError, errorMessage } from "../errors.ts";

export interface LiveFileIds {
  dev: number;
  ino: number;
}

const NAMES = ["database", "WAL", "wal-index"] as const;

export class LiveFiles {
  private closed = false;
  private lost?: CairnError;

  private constructor(
    readonly dbFile: string,
    /** Descriptor of cairn.db, read-only. */
    readonly dbFd: number,
    /** Descriptor of cairn.db-wal, read-only. */
    readonly walFd: number,
    /** Descriptor of cairn.db-shm, read-only. */
    readonly shmFd: number,
    private readonly ids: LiveFileIds[],
  ) {}

  get walFile(): string {
    return `${this.dbFile}-wal`;
  }

  get shmFile(): string {
    return `${this.dbFile}-shm`;
  }

  private get paths(): string[] {
    return [this.dbFile, this.walFile, this.shmFile];
  }

  /**
   * Open the three files of a database that a connection of this process has open in WAL mode
   * (so that -wal and -shm exist). Call once, right after opening the node's connection.
   */
  static open(dbFile: string): LiveFiles {
    const fds: number[] = [];
    try {
      for (const p of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) fds.push(openSync(p, constants.O_RDONLY | constants.O_NOFOLLOW));
    } catch (e) {
      // nothing holds a lock yet that these descriptors could drop: the connection failed to
      // make its files, and the node does not start
      for (const fd of fds) closeSync(fd);
      throw new CairnError("E_DB_OPEN", `cannot open ${dbFile} and its -wal and -shm for reading: ${errorMessage(e)}`, { cause: e });
    }
    const ids = fds.map((fd) => {
      const st = fstatSync(fd);
      return { dev: st.dev, ino: st.ino };
    });
    return new LiveFiles(dbFile, fds[0]!, fds[1]!, fds[2]!, ids);
  }

  /** What is wrong with the files on disk, or undefined if each path is still the file the node uses. */
  problem(): string | undefined {
    const paths = this.paths;
    for (let i = 0; i < paths.length; i++) {
      let st;
      try {
        st = statSync(paths[i]!);
      } catch {
        return `the ${NAMES[i]} file ${paths[i]} was deleted while the node was using it`;
      }
      if (st.ino !== this.ids[i]!.ino || st.dev !== this.ids[i]!.dev) return `the ${NAMES[i]} file ${paths[i]} was replaced while the node was using it`;
    }
    return undefined;
  }

  /**
   * Throws E_DB_FILES_LOST (HTTP 503) if a file was unlinked or replaced: a write committed
   * into such a file would be lost, so none may be acknowledged. Once lost, always lost: the
   * node refuses writes until it is restarted (reads and a clean shutdown still work).
   */
  check(): void {
    if (this.lost) throw this.lost;
    const why = this.problem();
    if (why) {
      this.lost = new CairnError("E_DB_FILES_LOST", `writes are refused: ${why}`, {
        hint: "stop the node (a clean shutdown folds what it has into cairn.db), check the storage folder, and start it again",
      });
      throw this.lost;
    }
  }

  /** Why writes are refused, if they are. */
  get lostReason(): string | undefined {
    return this.lost?.message;
  }

  /** Identity of each file (tests and status). */
  fileIds(): LiveFileIds[] {
    return this.ids.map((x) => ({ ...x }));
  }

  /** Close the descriptors. Only after every connection of this process to the database has closed. */
  closeAfterDatabase(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.dbFd, this.walFd, this.shmFd]) {
      try {
        closeSync(fd);
      } catch {
        // already gone
      }
    }
  }
}
