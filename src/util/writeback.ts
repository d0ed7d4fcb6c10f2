/**
 * Steady write-back of a file being written (Linux `sync_file_range`): start writing each
 * window of the file to disk as soon as it is complete, and wait for the window before it, so
 * that the dirty pages of one file never exceed two windows and the final fsync finds little
 * left to do. Durability still comes from that fsync; this only spreads the writing out (a
 * writer that stops to fdatasync every window instead waits out each flush, and the whole
 * file takes half again as long). Where the call is missing, `windowDone` says so and the
 * caller falls back to fdatasync.
 */
import { dlopen, FFIType } from "bun:ffi";

const SYNC_FILE_RANGE_WAIT_BEFORE = 1;
const SYNC_FILE_RANGE_WRITE = 2;
const SYNC_FILE_RANGE_WAIT_AFTER = 4;

type SyncFileRange = (fd: number, offset: number, nbytes: number, flags: number) => number;

let syncFileRange: SyncFileRange | null | undefined;

function load(): SyncFileRange | null {
  if (syncFileRange !== undefined) return syncFileRange;
  try {
    const libc = dlopen("libc.so.6", { sync_file_range: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.u32], returns: FFIType.i32 } });
    syncFileRange = (fd, offset, nbytes, flags) => libc.symbols.sync_file_range(fd, offset, nbytes, flags);
  } catch {
    syncFileRange = null;
  }
  return syncFileRange;
}

/**
 * Bytes [start, end) of `fd` are written: start their write-back, and wait for the window
 * before them ([prevStart, start)). False if the system cannot do this (then fdatasync).
 */
export function windowDone(fd: number, prevStart: number, start: number, end: number): boolean {
  const sfr = load();
  if (!sfr) return false;
  if (sfr(fd, start, end - start, SYNC_FILE_RANGE_WRITE) !== 0) return false;
  if (start > prevStart && sfr(fd, prevStart, start - prevStart, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) !== 0) return false;
  return true;
}
