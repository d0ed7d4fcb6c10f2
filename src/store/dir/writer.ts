/**
 * A checkpoint store in a local directory, opened for writing by the node that owns it. The
 * writer holds cairn-store.lock (flock) while it writes, so only one process writes at a time;
 * a store created by another node is refused. Opening cleans up what a crashed writer left.
 *
 * Nothing is created in the folder until it is known to be a store this user may write: a
 * folder of its own (not another user's, not writable by others), either holding a store of
 * this node or empty. tmp/ and the other folders must be real folders, never links, and
 * leftovers are removed without following a link.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { CairnError, errorMessage } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { FileLock, type LockHolder } from "../../util/file-lock.ts";
import { assertTrustedDir, DIR_MODE, emptyDirNoFollow, fsyncDir, fsyncDirAsync, readOwnFile, writeFileAtomic, writeFileAtomicAsync } from "../../util/fsx.ts";
import {
  DEFAULT_BLOCK_SIZE,
  decodeStoreInfo,
  encodedManifest,
  encodeManifest,
  encodeStoreInfo,
  indexPath,
  type Manifest,
  manifestPath,
  MAX_STORE_INFO_BYTES,
  packPath,
  STORE_FILE,
  STORE_FORMAT,
  STORE_LOCK_FILE,
  STORE_OWNER_LOCK_FILE,
  type StoreInfo,
} from "../format.ts";
import { type KeyFile, newStoreEncryption, openStoreKeys, sealedIfKeys, type StoreKeys } from "../crypto.ts";
import { StoreReader } from "../reader.ts";
import { DirBackend, STORE_READERS_LOCK_FILE } from "./backend.ts";

/** The folders of a store, which must be real folders of this user. */
const STORE_FOLDERS = ["tmp", "packs", "manifests", "files"];

export class LocalStore {
  readonly reader: StoreReader;
  readonly tmpDir: string;

  private constructor(
    readonly dir: string,
    readonly info: StoreInfo,
    private readonly lock: FileLock,
    /** An encrypted store's keys. */
    readonly keys: StoreKeys | undefined,
  ) {
    this.reader = new StoreReader(new DirBackend(dir), keys);
    this.tmpDir = join(dir, "tmp");
  }

  /**
   * Open `dir` for writing as node `nodeId`, creating the store if the folder is empty or
   * missing. Throws E_STORE_BUSY if another process is writing, E_FOREIGN_STORE if another
   * node owns it. With `keyFile` the store is encrypted (a new one is made so; an existing one
   * must be, and must open with it); without, it must not be: the two are never mixed.
   */
  static openForWrite(dir: string, nodeId: string, logger: Logger, keyFile?: KeyFile): LocalStore {
    try {
      mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    } catch (e) {
      throw new CairnError("E_IO", `cannot create the checkpoint directory ${dir}: ${errorMessage(e)}`, { cause: e });
    }
    // refuse a folder that is not ours, another node's store or a folder holding anything else,
    // before creating anything in it (the store file never changes)
    assertTrustedDir(dir);
    for (const sub of STORE_FOLDERS) assertTrustedDir(join(dir, sub), { noLink: true });
    if (existsSync(join(dir, STORE_FILE))) LocalStore.ownInfo(dir, nodeId, keyFile);
    else LocalStore.assertEmpty(dir);
    const lock = FileLock.exclusive(join(dir, STORE_LOCK_FILE), (holder) =>
      new CairnError("E_BUSY", `another process (pid ${holder?.pid ?? "unknown"}) is writing checkpoints into ${dir}`),
    );
    try {
      const { info, keys } = LocalStore.ownInfo(dir, nodeId, keyFile);
      const store = new LocalStore(dir, info, lock, keys);
      store.cleanLeftovers(logger);
      return store;
    } catch (e) {
      lock.release();
      throw e;
    }
  }

  /**
   * The running node's claim on its configured store, held for its life: a second node
   * configured with the same folder is refused, and so is a prune that would apply another
   * policy beside the node's own retention.
   */
  static claim(dir: string, busy: (holder: LockHolder | undefined) => CairnError): FileLock {
    try {
      mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    } catch (e) {
      throw new CairnError("E_IO", `cannot create the checkpoint directory ${dir}: ${errorMessage(e)}`, { cause: e });
    }
    assertTrustedDir(dir);
    return FileLock.exclusive(join(dir, STORE_OWNER_LOCK_FILE), busy, "node");
  }

  /** Refuse a folder holding anything but what an empty store may hold. */
  private static assertEmpty(dir: string): void {
    const foreign = readdirSync(dir).filter((n) => ![STORE_LOCK_FILE, STORE_READERS_LOCK_FILE, STORE_OWNER_LOCK_FILE, "tmp"].includes(n));
    if (foreign.length > 0) {
      throw new CairnError("E_STORE_NOT_EMPTY", `${dir} is not empty and is not a cairn checkpoint store (it has ${foreign.slice(0, 3).join(", ")})`, {
        hint: "point the checkpoints at an empty or new directory",
      });
    }
  }

  private static ownInfo(dir: string, nodeId: string, keyFile: KeyFile | undefined): { info: StoreInfo; keys?: StoreKeys } {
    const file = join(dir, STORE_FILE);
    if (existsSync(file)) {
      const info = decodeStoreInfo(readOwnFile(file, MAX_STORE_INFO_BYTES), file);
      if (info.node_id !== nodeId) {
        throw new CairnError(
          "E_FOREIGN_STORE",
          `${dir} holds the checkpoints of node ${info.node_id}; node ${nodeId} may not write into it`,
          { hint: "give this node its own checkpoint directory (checkpoint_config.db_checkpoint_dir or --path)" },
        );
      }
      // readers (restore, verify, export, the remote copier) hold this one; a store made
      // without it gets it now
      if (!existsSync(join(dir, STORE_READERS_LOCK_FILE))) writeFileAtomic(join(dir, STORE_READERS_LOCK_FILE), "");
      if (info.quick_hash_seed === undefined) {
        throw new CairnError("E_FOREIGN_STORE", `${dir} is a copy of a store (an extracted archive or a download), not a node's own store; a node writes checkpoints only into a store it made`, {
          hint: "give this node an empty checkpoint directory",
        });
      }
      return { info, keys: LocalStore.keysFor(dir, info, keyFile) };
    }
    LocalStore.assertEmpty(dir);
    const seed = new DataView(crypto.getRandomValues(new Uint8Array(8)).buffer).getBigUint64(0, true);
    const info: StoreInfo = {
      format: STORE_FORMAT,
      node_id: nodeId,
      created: new Date().toISOString(),
      block_size: DEFAULT_BLOCK_SIZE,
      quick_hash_seed: seed.toString(),
    };
    const made = keyFile ? newStoreEncryption(keyFile) : undefined;
    if (made) info.encryption = made.encryption;
    writeFileAtomic(join(dir, STORE_READERS_LOCK_FILE), "");
    writeFileAtomic(file, encodeStoreInfo(info));
    return { info, keys: made?.keys };
  }

  /**
   * Refuse now, at a node's start, a configured store that is another node's (a clone's
   * config still naming its source's store, say), a copy, or one whose encryption the node's
   * key does not match: the node could never write into it.
   */
  static assertWritableBy(dir: string, nodeId: string, keyFile: KeyFile | undefined): void {
    if (existsSync(join(dir, STORE_FILE))) LocalStore.ownInfo(dir, nodeId, keyFile);
  }

  /** The keys of the store in `dir` with `keyFile` (undefined for a plaintext store or none yet; no lock taken). */
  static keysOf(dir: string, keyFile: KeyFile | undefined): StoreKeys | undefined {
    const file = join(dir, STORE_FILE);
    if (!existsSync(file)) return undefined;
    return LocalStore.keysFor(dir, decodeStoreInfo(readOwnFile(file, MAX_STORE_INFO_BYTES), file), keyFile);
  }

  /** An existing store's keys: encrypted with a key, or plaintext without; never a mix. */
  private static keysFor(dir: string, info: StoreInfo, keyFile: KeyFile | undefined): StoreKeys | undefined {
    if (!info.encryption) {
      if (!keyFile) return undefined;
      throw new CairnError("E_FOREIGN_STORE", `${dir} holds plaintext checkpoints; encrypted ones never go into the same store`, {
        hint: "point db_checkpoint_dir (and remote.url) at a new, empty location for encrypted checkpoints",
      });
    }
    if (!keyFile) {
      throw new CairnError("E_KEY_NEEDED", `the store at ${dir} is encrypted`, { hint: "set checkpoint_config.encryption.key_file, or give --key-file" });
    }
    return openStoreKeys(info.encryption, [keyFile], dir);
  }

  /** Remove files a crashed or cancelled writer left in tmp/ and half-written manifests. */
  private cleanLeftovers(logger: Logger): void {
    let removed = emptyDirNoFollow(this.tmpDir);
    const mdir = join(this.dir, "manifests");
    if (existsSync(mdir)) {
      for (const n of readdirSync(mdir)) {
        if (n.includes(".tmp-")) {
          unlinkSync(join(mdir, n));
          removed++;
        }
      }
    }
    if (removed > 0) logger.info(`removed ${removed} leftover file(s) of an unfinished checkpoint in ${this.dir}`);
    mkdirSync(this.tmpDir, { recursive: true, mode: DIR_MODE });
  }

  /** Write the store info back (its key slots changed), atomically. */
  rewriteInfo(): void {
    writeFileAtomic(join(this.dir, STORE_FILE), encodeStoreInfo(this.info));
  }

  async nextId(): Promise<number> {
    const ids = await this.reader.manifestIds();
    return (ids.at(-1) ?? 0) + 1;
  }

  /** Move a pack and its index written in tmp/ into place. */
  publishPack(packId: string): void {
    publishPackFiles(this.dir, packId);
  }

  /** fsync every folder that published packs were renamed into (off the calling thread). */
  async syncPackDirs(packIds: string[]): Promise<void> {
    await Promise.all([...new Set(packIds.map((p) => p.slice(0, 2)))].map((sub) => fsyncDirAsync(join(this.dir, "packs", sub))));
    await fsyncDirAsync(join(this.dir, "packs"));
  }

  /** Store `data` at `path` (a content-named object) unless it is there already. */
  async writeObjectOnce(path: string, data: Uint8Array): Promise<void> {
    const file = join(this.dir, path);
    if (existsSync(file)) return;
    mkdirSync(dirname(file), { recursive: true, mode: DIR_MODE });
    await writeFileAtomicAsync(file, data);
  }

  /**
   * Write a manifest last and atomically: from this moment the checkpoint exists (the disk is
   * waited for off the calling thread). Returns its size and the manifest as written (what
   * reading it back would give, without reading a large manifest back).
   */
  async writeManifest(m: Omit<Manifest, "checksum">): Promise<{ bytes: number; manifest: Manifest }> {
    mkdirSync(join(this.dir, "manifests"), { recursive: true, mode: DIR_MODE });
    const encoded = encodedManifest(m);
    const data = sealedIfKeys(encoded.bytes, manifestPath(m.id), this.keys);
    await writeFileAtomicAsync(join(this.dir, manifestPath(m.id)), data);
    return { bytes: data.length, manifest: encoded.manifest };
  }

  async removeManifest(id: number): Promise<void> {
    unlinkSync(join(this.dir, manifestPath(id)));
    await fsyncDirAsync(join(this.dir, "manifests"));
  }

  release(): void {
    this.lock.release();
  }
}

/**
 * Move a pack and its index written in `<dir>/tmp/` into place, pack first, so an index never
 * names a missing pack (a checkpoint's packs, and garbage collection's rewritten ones).
 */
export function publishPackFiles(dir: string, packId: string): void {
  const sub = join(dir, "packs", packId.slice(0, 2));
  mkdirSync(sub, { recursive: true, mode: DIR_MODE });
  renameSync(join(dir, "tmp", `${packId}.pack`), join(dir, packPath(packId)));
  renameSync(join(dir, "tmp", `${packId}.idx`), join(dir, indexPath(packId)));
}

/** Write a manifest into a local store atomically; returns its size. */
export function writeManifestFile(dir: string, m: Omit<Manifest, "checksum">, keys?: StoreKeys): number {
  mkdirSync(join(dir, "manifests"), { recursive: true, mode: DIR_MODE });
  const data = sealedIfKeys(encodeManifest(m), manifestPath(m.id), keys);
  writeFileAtomic(join(dir, manifestPath(m.id)), data);
  return data.length;
}
