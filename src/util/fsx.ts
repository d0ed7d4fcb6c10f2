/**
 * Small file-system helpers: owner-only modes, durable replacement (temp name, fsync, rename,
 * fsync dir) and full reads.
 */
import { chmodSync, closeSync, constants, fsyncSync, lstatSync, openSync, readdirSync, readSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** Everything cairn creates is owner-only: files 0600 and folders 0700, whatever the umask. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** Open flags for a file cairn creates: never an existing file, never through a symlink. */
export const CREATE_EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A fresh, unguessable temp name beside `path` (hidden, so listings skip it). */
export function tempNameFor(path: string): string {
  const rnd = Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex");
  return join(dirname(path), `.${basename(path)}.tmp-${rnd}`);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  fsyncPath(dir);
}

/**
 * Write `data` to `path` atomically: a new temp file beside it (created exclusively, owner
 * only), fsync, rename, fsync the folder. A failure leaves no temp file behind.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = tempNameFor(path);
  const fd = openSync(tmp, CREATE_EXCLUSIVE, FILE_MODE);
  try {
    try {
      writeFully(fd, typeof data === "string" ? Buffer.from(data) : data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // never made, or already renamed
    }
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Take away group and other permissions under `root` (itself included): files to at most 0600,
 * folders to 0700. Symlinks are neither followed nor changed. With `only`, just those entries
 * of `root` (not recursively). Returns how many were changed, for an installation made before
 * cairn kept everything owner-only.
 */
export function tightenModes(root: string, only?: string[]): number {
  let changed = 0;
  const visit = (p: string, depth: number) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.isSymbolicLink()) return;
    if ((st.mode & 0o077) !== 0 && (st.isFile() || st.isDirectory())) {
      try {
        chmodSync(p, st.mode & 0o700);
        changed++;
      } catch {
        // not ours to change: the start goes on, the next start tries again
      }
    }
    if (st.isDirectory() && (only === undefined || depth === 0)) {
      let names: string[];
      try {
        names = only ?? readdirSync(p);
      } catch {
        return;
      }
      for (const n of names) visit(join(p, n), depth + 1);
    }
  };
  visit(root, 0);
  return changed;
}

/** Size of a file in bytes; 0 if it does not exist. */
export function fileSizeOrZero(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Write all of `data` to `fd`, at `position` if given (else at its current offset), looping over short writes. */
export function writeFully(fd: number, data: Uint8Array, position?: number): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off, position === undefined ? null : position + off);
}

/** Read `length` bytes at `offset` of `fd` into `into` at `at`, looping over short reads; returns the bytes read (fewer only at end of file). */
export function preadFully(fd: number, into: Uint8Array, at: number, length: number, offset: number): number {
  let got = 0;
  while (got < length) {
    const n = readSync(fd, into, at + got, length - got, offset + got);
    if (n <= 0) break;
    got += n;
  }
  return got;
}
