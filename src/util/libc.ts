/**
 * One libc function through bun:ffi, for the few system calls Bun does not expose
 * (`sync_file_range`, `posix_fadvise`): loaded once, on first use; undefined where the system
 * has no such function (the caller then does without).
 */
import { dlopen, FFIType } from "bun:ffi";

type IntFunction = (...args: number[]) => number;

const loaded = new Map<string, IntFunction | undefined>();

/** libc's `name`, taking `args` (i32 or i64 each) and returning an i32. */
export function libcFunction(name: string, args: ("i32" | "i64" | "u32")[]): IntFunction | undefined {
  if (loaded.has(name)) return loaded.get(name);
  let f: IntFunction | undefined;
  try {
    const libc = dlopen("libc.so.6", { [name]: { args: args.map((a) => FFIType[a]), returns: FFIType.i32 } });
    const sym = libc.symbols[name] as unknown as IntFunction;
    f = (...a) => sym(...a);
  } catch {
    f = undefined;
  }
  loaded.set(name, f);
  return f;
}
