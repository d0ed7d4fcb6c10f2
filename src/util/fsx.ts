/** Small file-system helpers: durable replacement (temp name, fsync, rename, fsync dir) and full reads. */
import { closeSync, fsyncSync, openSync, readSync, renameSync, statSync, writeSync } from "node:fs";
import { dirname } from "node:path";

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

/** Write `data` to `path` atomically: a temp file beside it, fsync, rename, fsync the folder. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now().toString(36)}`;
  const fd = openSync(tmp, "w", 0o644);
  try {
    writeFully(fd, typeof data === "string" ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dirname(path));
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
