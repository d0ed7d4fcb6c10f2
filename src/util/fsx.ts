/**
 * Small file-system helpers: owner-only modes, durable replacement (temp name, fsync, rename,
 * fsync dir) and full reads.
 */
import { chmodSync, closeSync, constants, fstatSync, fsyncSync, linkSync, lstatSync, openSync, readdirSync, readSync, renameSync, rmdirSync, statSync, unlinkSync, writeSync } from "node:fs";
import { open as openAsync, rename as renameAsync, unlink as unlinkAsync } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { CairnError, errorMessage, sysCode } from "../errors.ts";

/** Everything cairn creates is owner-only: files 0600 and folders 0700, whatever the umask. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** Open flags for a file cairn creates: never an existing file, never through a symlink. */
export const CREATE_EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** The same, for a file cairn creates and then reads back. */
export const CREATE_EXCLUSIVE_RW = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** Open flags for an existing file cairn reads: never through a symlink. */
export const READ_NO_FOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW;

/** E_UNSAFE_PATH: a path cairn will not write through (planted by someone else, or a link). */
export function unsafePath(path: string, why: string): CairnError {
  return new CairnError("E_UNSAFE_PATH", `refusing to use ${path}: it ${why}`, {
    hint: "remove it (it may have been planted by another user), or use a folder only this user can write",
  });
}

/**
 * Check a folder cairn writes into and trusts what it finds there (a checkpoint store, a
 * restore's target or staging folder, tmp/): a directory owned by the running user that no
 * group or other user can write. With `noLink`, the path itself must not be a symlink (for
 * folders cairn made itself); otherwise a symlink to such a folder is fine (an operator's
 * layout). Throws E_UNSAFE_PATH otherwise; does nothing if the folder does not exist.
 */
export function assertTrustedDir(dir: string, opts: { noLink?: boolean } = {}): void {
  let st;
  try {
    st = opts.noLink ? lstatSync(dir) : statSync(dir);
  } catch (e) {
    if (sysCode(e) === "ENOENT") return;
    throw new CairnError("E_IO", `cannot inspect ${dir}: ${errorMessage(e)}`, { cause: e });
  }
  if (st.isSymbolicLink()) throw unsafePath(dir, "is a symbolic link");
  if (!st.isDirectory()) throw unsafePath(dir, "is not a folder");
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new CairnError("E_UNSAFE_PATH", `refusing to use ${dir}: it belongs to another user (uid ${st.uid}), who could plant files in it`, {
      hint: `run cairn as that user (sudo -u '#${st.uid}' cairn ...), or make the folder this user's (chown)`,
    });
  }
  if ((st.mode & 0o022) !== 0) {
    throw new CairnError("E_UNSAFE_PATH", `refusing to use ${dir}: other users can write into it (mode ${(st.mode & 0o777).toString(8)})`, {
      hint: `chmod go-w ${dir}`,
    });
  }
}

/**
 * Check a file just opened from a trusted folder before its contents are believed: a regular
 * file of the running user with one link. Throws E_UNSAFE_PATH naming `path`.
 */
export function assertOwnFile(fd: number, path: string): void {
  const st = fstatSync(fd);
  if (!st.isFile()) throw unsafePath(path, "is not a regular file");
  if (st.uid !== process.getuid?.()) throw unsafePath(path, `belongs to another user (uid ${st.uid})`);
  if (st.nlink !== 1) throw unsafePath(path, "has other hard links");
}

/** Read a whole file of a trusted folder: not through a symlink, and only our own regular file. */
export function readOwnFile(path: string, maxBytes: number): Uint8Array {
  return readOwn(path, maxBytes, false);
}

/** The first `bytes` of such a file (all of it if shorter), with the same checks. */
export function readOwnFilePrefix(path: string, bytes: number): Uint8Array {
  return readOwn(path, bytes, true);
}

function readOwn(path: string, maxBytes: number, prefix: boolean): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, READ_NO_FOLLOW);
  } catch (e) {
    if (sysCode(e) === "ELOOP") throw unsafePath(path, "is a symbolic link");
    throw e;
  }
  try {
    assertOwnFile(fd, path);
    const size = prefix ? Math.min(maxBytes, fstatSync(fd).size) : fstatSync(fd).size;
    if (size > maxBytes) throw new CairnError("E_STORE_DAMAGED", `${path} is ${size} bytes, more than such a file can be (${maxBytes})`);
    const buf = new Uint8Array(size);
    return buf.subarray(0, preadFully(fd, buf, 0, size, 0));
  } finally {
    closeSync(fd);
  }
}

/**
 * Empty a folder cairn owns (a store's tmp/, a staging folder) without ever following a link:
 * symlinks are unlinked, not followed; sub-folders are emptied the same way, then removed.
 */
export function emptyDirNoFollow(dir: string): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if (sysCode(e) === "ENOENT") return 0;
    throw e;
  }
  for (const n of names) {
    const p = join(dir, n);
    let st;
    try {
      st = lstatSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory()) {
      removed += emptyDirNoFollow(p);
      rmdirSync(p);
    } else unlinkSync(p);
    removed++;
  }
  return removed;
}

/** Remove a folder cairn made and everything in it, never following a link; nothing if absent. */
export function removeDirNoFollow(dir: string): void {
  let st;
  try {
    st = lstatSync(dir);
  } catch {
    return;
  }
  if (!st.isDirectory()) {
    unlinkSync(dir);
    return;
  }
  emptyDirNoFollow(dir);
  rmdirSync(dir);
}

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

/** fsyncDir off the calling thread (a node's event loop must not wait for the disk). */
export async function fsyncDirAsync(dir: string): Promise<void> {
  const fh = await openAsync(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** writeFileAtomic, with every step that waits for the disk off the calling thread. */
export async function writeFileAtomicAsync(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempNameFor(path);
  const fh = await openAsync(tmp, CREATE_EXCLUSIVE, FILE_MODE);
  try {
    try {
      await fh.writeFile(typeof data === "string" ? Buffer.from(data) : data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await renameAsync(tmp, path);
  } catch (e) {
    await unlinkAsync(tmp).catch(() => {});
    throw e;
  }
  await fsyncDirAsync(dirname(path));
}

/** Write `data` into a new owner-only file `tmp` (created exclusively) and fsync it. */
function writeSynced(tmp: string, data: string | Uint8Array): void {
  const fd = openSync(tmp, CREATE_EXCLUSIVE, FILE_MODE);
  try {
    writeFully(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // never made, or already renamed
  }
}

/**
 * Write `data` to `path` atomically: a new temp file beside it (created exclusively, owner
 * only), fsync, rename, fsync the folder. A failure leaves no temp file behind.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = tempNameFor(path);
  try {
    writeSynced(tmp, data);
    renameSync(tmp, path);
  } catch (e) {
    removeQuietly(tmp);
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Write a new file at `path` that must not exist yet: a temp file beside it (owner only),
 * fsync, then a hard link to `path` (which fails with EEXIST rather than replace anything),
 * the temp name removed and the folder fsynced. A failure leaves nothing behind.
 */
export function writeFileExclusive(path: string, data: string | Uint8Array): void {
  const tmp = tempNameFor(path);
  try {
    writeSynced(tmp, data);
    linkSync(tmp, path);
  } finally {
    removeQuietly(tmp);
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
