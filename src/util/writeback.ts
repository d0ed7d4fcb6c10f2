/**
 * Steady write-back of a file being written (Linux `sync_file_range`): start writing each
 * window of the file to disk as soon as it is complete, and wait only for the window that
 * many windows back, so that the disk always has work while the writer goes on, the dirty
 * pages of one file stay bounded, and the final fsync finds little left to do. Durability
 * still comes from that fsync; this only spreads the writing out (a writer that stops to
 * fdatasync every window waits out each flush instead, and takes half again as long). Where
 * the call is missing, `windowDone` says so and the caller falls back to fdatasync.
 */
import { libcFunction } from "./libc.ts";

const SYNC_FILE_RANGE_WAIT_BEFORE = 1;
const SYNC_FILE_RANGE_WRITE = 2;
const SYNC_FILE_RANGE_WAIT_AFTER = 4;

/**
 * Bytes [start, end) of `fd` are written: start their write-back, and wait for whatever of
 * [0, waitEnd) is still being written. False if the system cannot do this (then fdatasync).
 */
export function windowDone(fd: number, start: number, end: number, waitEnd: number): boolean {
  const sfr = libcFunction("sync_file_range", ["i32", "i64", "i64", "u32"]);
  if (!sfr) return false;
  if (sfr(fd, start, end - start, SYNC_FILE_RANGE_WRITE) !== 0) return false;
  if (waitEnd > 0 && sfr(fd, 0, waitEnd, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) !== 0) return false;
  return true;
}
