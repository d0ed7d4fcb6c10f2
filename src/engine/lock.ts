/**
 * flock(2) locks, through bun:ffi. The kernel drops a lock when its holder dies, even by
 * kill -9, so a stale lock file never blocks anyone. Exclusive lock files hold the holder's
 * pid so that whoever is refused can say who holds it.
 *
 * StorageLock is the storage directory's lock: <storage_path>/cairn.lock, held by a node for
 * its whole life and by `restore` while it works.
 */
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { DIR_MODE, FILE_MODE } from "../util/fsx.ts";

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

let libc: { symbols: { flock: (fd: number, op: number) => number } } | undefined;
function flock(fd: number, op: number): number {
  libc ??= dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
  return libc.symbols.flock(fd, op);
}

/** The pid written in a lock file by its current holder, if it names one. */
export function lockHolder(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, "utf8").trim(), 10);
    return Number.isFinite(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export class FileLock {
  private constructor(
    readonly path: string,
    private fd: number | undefined,
    private readonly exclusive: boolean,
  ) {}

  /**
   * Take an exclusive lock on `path` (created if missing) without waiting, writing our pid
   * into it; if another process holds it, throw what `busy(holderPid)` returns.
   */
  static exclusive(path: string, busy: (holder: number | undefined) => CairnError): FileLock {
    const fd = openSync(path, "a+", FILE_MODE);
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      closeSync(fd);
      throw busy(lockHolder(path));
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`);
    return new FileLock(path, fd, true);
  }

  /**
   * Take a shared lock (many readers at once, no exclusive holder) without waiting. Returns
   * undefined if an exclusive holder has it, or if the file does not exist and cannot be made.
   */
  static shared(path: string): FileLock | undefined {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch {
      try {
        fd = openSync(path, "a+", FILE_MODE);
      } catch {
        return undefined;
      }
    }
    if (flock(fd, LOCK_SH | LOCK_NB) !== 0) {
      closeSync(fd);
      return undefined;
    }
    return new FileLock(path, fd, false);
  }

  /** True if some process holds an exclusive lock on `path` right now. */
  static isHeld(path: string): boolean {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch {
      return false;
    }
    try {
      if (flock(fd, LOCK_SH | LOCK_NB) !== 0) return true;
      flock(fd, LOCK_UN);
      return false;
    } finally {
      closeSync(fd);
    }
  }

  release(): void {
    if (this.fd === undefined) return;
    if (this.exclusive) {
      try {
        ftruncateSync(this.fd, 0);
      } catch {
        // the lock goes with the fd regardless
      }
    }
    flock(this.fd, LOCK_UN);
    closeSync(this.fd);
    this.fd = undefined;
  }
}

export const LOCK_FILE = "cairn.lock";

/** The storage directory's lock (see above). */
export class StorageLock {
  /**
   * Take the lock on `dir` (created if missing) or throw E_LOCKED naming the holder's pid.
   * `refusal` ends the message, saying what was refused.
   */
  static acquire(dir: string, refusal = "refusing to start a second node on it"): FileLock {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    return FileLock.exclusive(join(dir, LOCK_FILE), (holder) =>
      new CairnError("E_LOCKED", `a node is running on ${dir} (pid ${holder ?? "unknown"}); ${refusal}`, {
        hint: holder ? `stop the node first (kill ${holder}, or systemctl stop cairn)` : "stop the node first",
      }),
    );
  }

  static holder(dir: string): number | undefined {
    return lockHolder(join(dir, LOCK_FILE));
  }

  static isHeld(dir: string): boolean {
    return FileLock.isHeld(join(dir, LOCK_FILE));
  }
}
