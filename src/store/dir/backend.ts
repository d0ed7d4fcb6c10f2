/**
 * A checkpoint store in a local folder: random reads (pread, never through a symlink), writes
 * (atomic replacement), and the readers' hold: restore, verify, export and the remote copier
 * hold `cairn-store.readers` shared (flock) while they read; garbage collection takes it
 * exclusively, so nothing being read is deleted.
 */
import { closeSync, constants, copyFileSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, statSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { CairnError, errorMessage, sysCode } from "../../errors.ts";
import { FileLock } from "../../util/file-lock.ts";
import { readAhead } from "../../util/readahead.ts";
import { DIR_MODE, fsyncDir, preadFully, READ_NO_FOLLOW, tempNameFor, writeFileAtomic } from "../../util/fsx.ts";
import { type Backend, type BackendSpec, type Hold, missing, type RandomReads, tooLarge } from "../backend.ts";

/** Readers (restore, verify, export) hold this shared; garbage collection needs it exclusive. */
export const STORE_READERS_LOCK_FILE = "cairn-store.readers";

/** How long a reader waits for a garbage collection to end before it gives up. */
const HOLD_WAIT_MS = 60_000;

export class DirBackend implements Backend, RandomReads {
  readonly parallelReads = 1;
  /** Descriptors kept for readInto (a restore reads runs of many blocks from each pack). */
  private fds = new Map<string, number>();

  constructor(readonly location: string) {}

  get localDir(): string {
    return this.location;
  }

  get random(): RandomReads {
    return this;
  }

  readonly writes = {
    put: async (path: string, data: Uint8Array): Promise<void> => {
      mkdirSync(dirname(join(this.location, path)), { recursive: true, mode: DIR_MODE });
      writeFileAtomic(join(this.location, path), data);
    },
    putFile: async (path: string, localFile: string): Promise<number> => {
      const dest = join(this.location, path);
      mkdirSync(dirname(dest), { recursive: true, mode: DIR_MODE });
      const tmp = tempNameFor(dest);
      copyFileSync(localFile, tmp, constants.COPYFILE_EXCL);
      const fd = openSync(tmp, READ_NO_FOLLOW);
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, dest);
      fsyncDir(dirname(dest));
      return statSync(dest).size;
    },
    delete: async (path: string): Promise<void> => {
      try {
        unlinkSync(join(this.location, path));
      } catch (e) {
        if (sysCode(e) !== "ENOENT") throw e;
      }
    },
  };

  readonly readers = {
    /**
     * Hold the store for reading (shared), waiting while a garbage collection runs. A store
     * without the lock file (a copy, an extracted archive) has no collector to keep away.
     */
    hold: async (timeoutMs = HOLD_WAIT_MS): Promise<Hold> => {
      const path = join(this.location, STORE_READERS_LOCK_FILE);
      if (!existsSync(path)) return { release() {} };
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const lock = FileLock.shared(path);
        if (lock) return lock;
        if (Date.now() > deadline) {
          throw new CairnError("E_BUSY", `the node is collecting garbage in ${this.location} and did not finish within ${timeoutMs / 1000} s`, {
            hint: "try again in a minute",
          });
        }
        await Bun.sleep(100);
      }
    },
  };

  spec(): BackendSpec {
    return { kind: "dir", dir: this.location };
  }

  /** Open a stored file for reading, never through a symlink; a missing one is E_STORE_MISSING. */
  private open(path: string): number {
    try {
      return openSync(join(this.location, path), READ_NO_FOLLOW);
    } catch (e) {
      if (sysCode(e) === "ENOENT") throw missing(this.location, path, e);
      throw new CairnError("E_IO", `cannot read ${join(this.location, path)}: ${errorMessage(e)}`, { cause: e });
    }
  }

  async get(path: string, maxBytes: number): Promise<Uint8Array> {
    return this.getReusing(path, new Uint8Array(0), maxBytes);
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

  async getRange(path: string, offset: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    const got = await this.readInto(path, buf, 0, length, offset);
    return got === length ? buf : buf.subarray(0, got);
  }

  async readInto(path: string, into: Uint8Array, at: number, length: number, offset: number): Promise<number> {
    return preadFully(this.fdOf(path), into, at, length, offset);
  }

  /** Start reading `length` bytes at `offset` of `path` into the page cache (for reads about to come; util/readahead.ts). */
  readAhead(path: string, offset: number, length: number): void {
    readAhead(this.fdOf(path), offset, length);
  }

  private fdOf(path: string): number {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      fd = this.open(path);
      this.fds.set(path, fd);
    }
    return fd;
  }

  async size(path: string): Promise<number | undefined> {
    try {
      const st = statSync(join(this.location, path));
      return st.isFile() ? st.size : undefined;
    } catch {
      return undefined;
    }
  }

  async list(prefix: string): Promise<string[]> {
    return [...(await this.listSizes(prefix)).keys()].sort();
  }

  async listSizes(prefix: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const walk = (rel: string) => {
      let entries;
      try {
        entries = readdirSync(join(this.location, rel), { withFileTypes: true });
      } catch (e) {
        if (sysCode(e) === "ENOENT") return;
        throw e;
      }
      // links are neither followed nor listed
      for (const e of entries) {
        const p = `${rel}${e.name}`;
        if (e.isDirectory()) walk(`${p}/`);
        else if (e.isFile()) {
          try {
            out.set(p, statSync(join(this.location, p)).size);
          } catch {
            // removed meanwhile
          }
        }
      }
    };
    walk(prefix);
    return out;
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}
