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
    const buf = typeof data === "string" ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
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
