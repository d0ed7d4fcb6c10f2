/**
 * The one interface behind which a checkpoint store's files are read, whatever holds them: a
 * directory (here), and later an archive or an S3 prefix. Paths are relative to the store's
 * root with "/" separators (see format.ts).
 */
import { closeSync, fstatSync, openSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { CairnError, errorMessage, sysCode } from "../errors.ts";
import { preadFully, READ_NO_FOLLOW } from "../util/fsx.ts";

export interface ObjectSource {
  /** How to name the store to an operator (a path or URL). */
  readonly location: string;
  /**
   * A whole object of at most `maxBytes` (the format's limit for what it holds; a larger one
   * is E_STORE_DAMAGED, never read whole). Throws E_STORE_MISSING if there is none.
   */
  get(path: string, maxBytes: number): Promise<Uint8Array>;
  /** `length` bytes at `offset`; fewer only if the object is shorter (damaged). */
  getRange(path: string, offset: number, length: number): Promise<Uint8Array>;
  /** Size in bytes, or undefined if absent. */
  size(path: string): Promise<number | undefined>;
  /** Paths of every object under `prefix` (a folder path ending in "/"), any depth. */
  list(prefix: string): Promise<string[]>;
  /**
   * A whole object read into `reuse` when it fits (a view of it), else into a new buffer: for
   * readers that scan many objects and keep none. Optional; get() serves otherwise.
   */
  getReusing?(path: string, reuse: Uint8Array, maxBytes: number): Promise<Uint8Array>;
}

export function missing(location: string, path: string, cause?: unknown): CairnError {
  return new CairnError("E_STORE_MISSING", `${location}/${path} is missing`, { cause });
}

export function tooLarge(location: string, path: string, size: number | string, maxBytes: number): CairnError {
  return new CairnError("E_STORE_DAMAGED", `${location}/${path} is ${size} bytes, more than such a file can be (${maxBytes})`);
}

/** A checkpoint store in a local directory. */
export class DirSource implements ObjectSource {
  constructor(readonly location: string) {}

  async get(path: string, maxBytes: number): Promise<Uint8Array> {
    const fd = this.open(path);
    try {
      const size = fstatSync(fd).size;
      if (size > maxBytes) throw tooLarge(this.location, path, size, maxBytes);
      const buf = new Uint8Array(size);
      return buf.subarray(0, preadFully(fd, buf, 0, size, 0));
    } finally {
      closeSync(fd);
    }
  }

  /** Open a stored file for reading, never through a symlink; a missing one is E_STORE_MISSING. */
  private open(path: string): number {
    try {
      return openSync(join(this.location, path), READ_NO_FOLLOW);
    } catch (e) {
      if (sysCode(e) === "ENOENT") throw missing(this.location, path, e);
      throw new CairnError("E_STORE_IO", `cannot read ${join(this.location, path)}: ${errorMessage(e)}`, { cause: e });
    }
  }

  async getRange(path: string, offset: number, length: number): Promise<Uint8Array> {
    const fd = this.open(path);
    try {
      const buf = new Uint8Array(length);
      const got = preadFully(fd, buf, 0, length, offset);
      return got === length ? buf : buf.subarray(0, got);
    } finally {
      closeSync(fd);
    }
  }

  async getReusing(path: string, reuse: Uint8Array, maxBytes: number): Promise<Uint8Array> {
    const fd = this.open(path);
    try {
      const size = fstatSync(fd).size;
      if (size > maxBytes) throw tooLarge(this.location, path, size, maxBytes);
      const buf = size <= reuse.length ? reuse : new Uint8Array(size);
      return buf.subarray(0, preadFully(fd, buf, 0, size, 0));
    } finally {
      closeSync(fd);
    }
  }

  async size(path: string): Promise<number | undefined> {
    try {
      return statSync(join(this.location, path)).size;
    } catch {
      return undefined;
    }
  }

  async list(prefix: string): Promise<string[]> {
    const out: string[] = [];
    const walk = (rel: string) => {
      let entries;
      try {
        entries = readdirSync(join(this.location, rel), { withFileTypes: true });
      } catch (e) {
        if (sysCode(e) === "ENOENT") return;
        throw e;
      }
      for (const e of entries) {
        const p = `${rel}${e.name}`;
        if (e.isDirectory()) walk(`${p}/`);
        else if (e.isFile()) out.push(p);
      }
    };
    walk(prefix);
    return out.sort();
  }
}
