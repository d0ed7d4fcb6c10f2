/**
 * flock(2) locks, through bun:ffi. The kernel drops a lock when its holder dies, even by
 * kill -9, so a stale lock file never blocks anyone. Exclusive lock files hold the holder's
 * pid and what it is ("1234 restore") so that whoever is refused can say who holds it.
 *
 * Lock files are opened without following a symlink (O_NOFOLLOW), and one cairn writes into
 * must be a regular file of the running user with one link: a lock file planted by another
 * user (a symlink or hard link to a file of root's, say) is refused, never truncated.
 */
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync, statSync, unlinkSync, writeSync } from "node:fs";
import { type CairnError, sysCode } from "../errors.ts";
import { FILE_MODE, unsafePath } from "./fsx.ts";

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

let libc: { symbols: { flock: (fd: number, op: number) => number } } | undefined;
function flock(fd: number, op: number): number {
  libc ??= dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
  return libc.symbols.flock(fd, op);
}

/** Who holds a lock file: the pid and what it is, as its holder wrote them. */
export interface LockHolder {
  pid: number;
  /** "node", "restore", ... (absent in lock files of older versions) */
  kind?: string;
}

/** The holder named in a lock file, if it names one. */
export function lockHolder(path: string): LockHolder | undefined {
  try {
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    let text: string;
    try {
      const buf = new Uint8Array(128);
      const n = readSync(fd, buf, 0, buf.length, 0);
      text = new TextDecoder().decode(buf.subarray(0, n));
    } finally {
      closeSync(fd);
    }
    const [pidText, kind] = text.trim().split(/\s+/);
    const pid = Number.parseInt(pidText ?? "", 10);
    return Number.isFinite(pid) && pid > 0 ? { pid, kind: kind || undefined } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `path` still names the file open as `fd`. */
function sameFile(path: string, fd: number): boolean {
  try {
    const a = statSync(path);
    const b = fstatSync(fd);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

const OPEN_FOR_WRITE = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;

/** Open (creating if missing) a lock file this process will write into; refuses anything but our own regular file. */
function openOwnLockFile(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FOR_WRITE, FILE_MODE);
  } catch (e) {
    if (sysCode(e) === "ELOOP") throw unsafePath(path, "is a symbolic link");
    throw e;
  }
  const st = fstatSync(fd);
  const why = !st.isFile()
    ? "is not a regular file"
    : st.uid !== process.getuid?.()
      ? `belongs to another user (uid ${st.uid})`
      : st.nlink !== 1
        ? "has other hard links"
        : undefined;
  if (why) {
    closeSync(fd);
    throw unsafePath(path, why);
  }
  return fd;
}

export class FileLock {
  private constructor(
    readonly path: string,
    private fd: number | undefined,
    private readonly exclusive: boolean,
    private readonly removeOnRelease = false,
  ) {}

  /**
   * Take an exclusive lock on `path` (created if missing) without waiting, writing our pid and
   * `kind` into it; if another process holds it, throw what `busy(holder)` returns. With
   * `removeOnRelease` the file goes when the lock is released (a lock beside an operator's
   * file, which should leave nothing behind).
   */
  static exclusive(path: string, busy: (holder: LockHolder | undefined) => CairnError, kind = "", opts: { removeOnRelease?: boolean } = {}): FileLock {
    for (let attempt = 0; ; attempt++) {
      const fd = openOwnLockFile(path);
      if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
        closeSync(fd);
        throw busy(lockHolder(path));
      }
      // a lock file its last holder removed between our open and our lock: ours would be on a
      // file nobody else sees; take the one now at the path instead
      if (opts.removeOnRelease && !sameFile(path, fd)) {
        closeSync(fd);
        if (attempt < 10) continue;
        throw busy(undefined);
      }
      ftruncateSync(fd, 0);
      writeSync(fd, `${process.pid}${kind ? ` ${kind}` : ""}\n`);
      return new FileLock(path, fd, true, opts.removeOnRelease);
    }
  }

  /**
   * Take a shared lock (many readers at once, no exclusive holder) on an existing lock file
   * without waiting. Undefined if an exclusive holder has it, or if there is no such file.
   * Read-only: a reader may lock a store that belongs to another user.
   */
  static shared(path: string): FileLock | undefined {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      return undefined;
    }
    if (!fstatSync(fd).isFile() || flock(fd, LOCK_SH | LOCK_NB) !== 0) {
      closeSync(fd);
      return undefined;
    }
    return new FileLock(path, fd, false);
  }

  /** True if some process holds an exclusive lock on `path` right now. */
  static isHeld(path: string): boolean {
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
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
    if (this.removeOnRelease) {
      try {
        unlinkSync(this.path);
      } catch {
        // already gone
      }
    } else if (this.exclusive) {
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
