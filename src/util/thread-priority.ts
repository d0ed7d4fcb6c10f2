/**
 * Lower the CPU priority of the calling thread only (Linux: setpriority on a thread id), so
 * that background work such as a checkpoint yields the cores to the thread serving requests
 * whenever both want them. Best effort: where it cannot be done, nothing happens.
 */
import { dlopen, FFIType } from "bun:ffi";

const PRIO_PROCESS = 0;

export function lowerThisThreadPriority(nice: number): boolean {
  try {
    const libc = dlopen("libc.so.6", {
      gettid: { args: [], returns: FFIType.i32 },
      setpriority: { args: [FFIType.i32, FFIType.u32, FFIType.i32], returns: FFIType.i32 },
    });
    const ok = libc.symbols.setpriority(PRIO_PROCESS, libc.symbols.gettid(), nice) === 0;
    libc.close();
    return ok;
  } catch {
    return false;
  }
}
