/**
 * Files carried with each checkpoint (checkpoint_config.include_files: the node's config, its
 * key files): read whole, stored once per content as `files/<xx>/<name>` (the name is the
 * content's block name, a keyed digest in an encrypted store, where the object is sealed like a
 * manifest), named in the manifest with the path, size and mode they had, and checked against
 * their name whenever they are read back.
 */
import { closeSync, constants, fstatSync, openSync } from "node:fs";
import { CairnError, errorMessage, sysCode } from "../errors.ts";
import { preadFully } from "../util/fsx.ts";
import { openStored, sealedIfKeys, type StoreKeys } from "./crypto.ts";
import { type IncludedFile, includedPath, MAX_INCLUDED_FILE_BYTES, MAX_INCLUDED_FILES } from "./format.ts";
import { DIGEST_BYTES, fromHex, toHex } from "./hash.ts";
import { blockNameInto, isBlockNamed } from "./pack.ts";

/** A stored carried file is its content, plus a seal's overhead in an encrypted store. */
export const MAX_INCLUDED_STORED_BYTES = MAX_INCLUDED_FILE_BYTES + 4096;

export interface CarriedFile {
  path: string;
  data: Uint8Array;
  mode: number;
}

/** Read the files to carry, now; one that cannot be read fails with its name. */
export function readIncludeFiles(paths: readonly string[]): CarriedFile[] {
  if (paths.length > MAX_INCLUDED_FILES) throw new CairnError("E_CONFIG", `checkpoint_config.include_files: at most ${MAX_INCLUDED_FILES} files`);
  return paths.map((path) => {
    const fail = (why: string, cause?: unknown) => new CairnError("E_IO", `checkpoint_config.include_files: cannot read ${path}: ${why}`, { cause });
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDONLY);
    } catch (e) {
      throw fail(sysCode(e) === "ENOENT" ? "no such file" : sysCode(e) === "EACCES" ? "permission denied" : errorMessage(e), e);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw fail("not a regular file");
      if (st.size > MAX_INCLUDED_FILE_BYTES) throw fail(`${st.size} bytes; a carried file may be at most ${MAX_INCLUDED_FILE_BYTES}`);
      const data = new Uint8Array(st.size);
      return { path, data: data.subarray(0, preadFully(fd, data, 0, data.length, 0)), mode: st.mode & 0o7777 };
    } catch (e) {
      if (e instanceof CairnError) throw e;
      throw fail(errorMessage(e), e);
    } finally {
      closeSync(fd);
    }
  });
}

/** What the manifest says of a carried file, and its stored object (path and bytes). */
export function includedObject(f: CarriedFile, keys?: StoreKeys): { entry: IncludedFile; path: string; stored: Uint8Array } {
  const name = new Uint8Array(DIGEST_BYTES);
  blockNameInto(f.data, name, keys);
  const entry: IncludedFile = { path: f.path, name: toHex(name), size: f.data.length, mode: f.mode };
  const path = includedPath(entry.name);
  return { entry, path, stored: sealedIfKeys(f.data, path, keys) };
}

/** A carried file's content from its stored object, checked against its name and size. */
export function openIncluded(stored: Uint8Array, f: IncludedFile, keys: StoreKeys | undefined, location: string): Uint8Array {
  const path = includedPath(f.name);
  const data = openStored(stored, path, `${location}/${path}`, keys);
  if (data.length !== f.size || !isBlockNamed(data, fromHex(f.name), keys)) {
    throw new CairnError("E_STORE_DAMAGED", `${location}/${path}: the carried file ${f.path} does not match its digest (damaged)`);
  }
  return data;
}
