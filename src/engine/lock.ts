/**
 * The storage directory's lock: flock(2) on <storage_path>/cairn.lock, held by a node for its
 * whole life (and by `restore` while it works). The kernel drops it when the process dies,
 * even by kill -9, so a stale lock file never blocks anyone. The file holds the holder's pid
 * so that the one refused can say who holds it.
 */
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

let libc: { symbols: { flock: (fd: number, op: number) => number } } | undefined;
function flock(fd: number, op: number): number {
  libc ??= dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
  return libc.symbols.flock(fd, op);
}

export const LOCK_FILE = "cairn.lock";

export class StorageLock {
  private constructor(
    readonly path: string,
    private fd: number | undefined,
  ) {}

  /**
   * Take the lock on `dir` (created if missing) or throw E_LOCKED naming the holder's pid.
   * `refusal` ends the message, saying what was refused.
   */
  static acquire(dir: string, refusal = "refusing to start a second node on it"): StorageLock {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, LOCK_FILE);
    const fd = openSync(path, "a+", 0o644);
    if (flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      closeSync(fd);
      const holder = StorageLock.holder(dir);
      throw new CairnError(
        "E_LOCKED",
        `a node is running on ${dir} (pid ${holder ?? "unknown"}); ${refusal}`,
        { hint: holder ? `stop the node first (kill ${holder}, or systemctl stop cairn)` : "stop the node first" },
      );
    }
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`);
    return new StorageLock(path, fd);
  }

  /** The pid written by the current holder, if the file names one. */
  static holder(dir: string): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(join(dir, LOCK_FILE), "utf8").trim(), 10);
      return Number.isFinite(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** True if some process holds the lock on `dir` right now (probes without keeping it). */
  static isHeld(dir: string): boolean {
    let fd: number;
    try {
      fd = openSync(join(dir, LOCK_FILE), "r");
    } catch {
      return false;
    }
    try {
      if (flock(fd, LOCK_EX | LOCK_NB) !== 0) return true;
      flock(fd, LOCK_UN);
      return false;
    } finally {
      closeSync(fd);
    }
  }

  release(): void {
    if (this.fd === undefined) return;
    try {
      ftruncateSync(this.fd, 0);
    } catch {
      // the lock goes with the fd regardless
    }
    flock(this.fd, LOCK_UN);
    closeSync(this.fd);
    this.fd = undefined;
  }
}
