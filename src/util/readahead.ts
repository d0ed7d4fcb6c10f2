/**
 * Asking the kernel to start reading parts of a file into the page cache now (Linux
 * `posix_fadvise(POSIX_FADV_WILLNEED)`), so that many small reads scattered over a large file
 * that is out of the cache (a checkpoint's sample of a 16 GB database, the segment lists it
 * reads back from old packs) are fetched at once instead of one disk round trip after
 * another. Only a hint: where the call is missing nothing happens, and the reads that follow
 * are what they would have been.
 */
import { dlopen, FFIType } from "bun:ffi";

const POSIX_FADV_WILLNEED = 3;

type Fadvise = (fd: number, offset: number, length: number, advice: number) => number;

let fadvise: Fadvise | null | undefined;

function load(): Fadvise | null {
  if (fadvise !== undefined) return fadvise;
  try {
    const libc = dlopen("libc.so.6", { posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 } });
    fadvise = (fd, offset, length, advice) => libc.symbols.posix_fadvise(fd, offset, length, advice);
  } catch {
    fadvise = null;
  }
  return fadvise;
}

/** Start reading bytes [offset, offset + length) of `fd` into the page cache. */
export function readAhead(fd: number, offset: number, length: number): void {
  load()?.(fd, offset, length, POSIX_FADV_WILLNEED);
}
