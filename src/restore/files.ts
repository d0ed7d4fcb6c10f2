/**
 * Putting the files a checkpoint carries back (restore --with-files, --files-to DIR): each at
 * its recorded path (or under DIR), written atomically (temp name, fsync, rename, fsync the
 * folder) with the permission bits it had (never group- or world-writable). A different file
 * already there is moved aside beside it, never overwritten; the same content is left alone.
 */
import { chmodSync, closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { CairnError, errorMessage, sysCode } from "../errors.ts";
import type { IncludedFile } from "../store/format.ts";
import { equalBytes } from "../store/pack.ts";
import { DIR_MODE, fsyncDir, preadFully, writeFileAtomic } from "../util/fsx.ts";

export interface PlacedFile {
  /** The path it was carried from. */
  path: string;
  /** Where it was put. */
  written_to: string;
  /** written: nothing was there; unchanged: the same content was; replaced: a different file was moved aside. */
  action: "written" | "unchanged" | "replaced";
  moved_aside_to?: string;
}

/** Where `f` goes: its own path, or the same path under `to`. */
export function targetOf(f: IncludedFile, to: string | undefined): string {
  return to ? join(to, f.path) : f.path;
}

/** What is at `path` now: nothing, a regular file's content, or something else (a link, a folder). */
function existing(path: string, maxBytes: number): { kind: "none" } | { kind: "file"; data: Uint8Array } | { kind: "other" } {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if (sysCode(e) === "ENOENT") return { kind: "none" };
    throw e;
  }
  if (!st.isFile() || st.size > maxBytes) return { kind: "other" };
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const data = new Uint8Array(fstatSync(fd).size);
    return { kind: "file", data: data.subarray(0, preadFully(fd, data, 0, data.length, 0)) };
  } finally {
    closeSync(fd);
  }
}

export function placeCarriedFiles(files: { entry: IncludedFile; data: Uint8Array }[], to: string | undefined, stamp: string): PlacedFile[] {
  const placed: PlacedFile[] = [];
  for (const { entry, data } of files) {
    const target = targetOf(entry, to);
    try {
      mkdirSync(dirname(target), { recursive: true, mode: DIR_MODE });
      const now = existing(target, data.length);
      const mode = entry.mode & 0o755;
      if (now.kind === "file" && equalBytes(now.data, data)) {
        chmodSync(target, mode);
        placed.push({ path: entry.path, written_to: target, action: "unchanged" });
        continue;
      }
      let aside: string | undefined;
      if (now.kind !== "none") {
        aside = `${target}.replaced-${stamp}`;
        renameSync(target, aside);
        fsyncDir(dirname(target));
      }
      writeFileAtomic(target, data);
      chmodSync(target, mode);
      placed.push({ path: entry.path, written_to: target, action: aside ? "replaced" : "written", ...(aside ? { moved_aside_to: aside } : {}) });
    } catch (e) {
      const done = placed.length > 0 ? ` (${placed.map((p) => p.written_to).join(", ")} already put back)` : "";
      throw new CairnError("E_IO", `cannot put the carried file ${entry.path} back at ${target}: ${errorMessage(e)}${done}`, { cause: e });
    }
  }
  return placed;
}
