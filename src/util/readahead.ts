/**
 * Asking the kernel to start reading parts of a file into the page cache now (Linux
 * `posix_fadvise(POSIX_FADV_WILLNEED)`), so that many small reads scattered over a large file
 * that is out of the cache (a checkpoint's sample of a 16 GB database, the segment lists it
 * reads back from old packs) are fetched at once instead of one disk round trip after
 * another. Only a hint: where the call is missing nothing happens, and the reads that follow
 * are what they would have been.
 */
import { libcFunction } from "./libc.ts";

const POSIX_FADV_WILLNEED = 3;

/** Start reading bytes [offset, offset + length) of `fd` into the page cache. */
export function readAhead(fd: number, offset: number, length: number): void {
  libcFunction("posix_fadvise", ["i32", "i64", "i64", "i32"])?.(fd, offset, length, POSIX_FADV_WILLNEED);
}
