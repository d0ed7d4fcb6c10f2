/**
 * A checkpoint store opened for reading, whatever holds it: read at random (a folder, S3,
 * through StoreReader) or as a stream (an archive, through StreamReader). list, verify,
 * restore and export take a Store and ask it for the capability they need.
 */
import { CairnError } from "../errors.ts";
import type { Backend, Hold } from "./backend.ts";
import { NO_HOLD } from "./backend.ts";
import type { Manifest, StoreInfo } from "./format.ts";
import { type KeyFile, openStoreKeys } from "./crypto.ts";
import { StoreReader } from "./reader.ts";
import { StreamReader } from "./stream-reader.ts";

export class Store {
  /** Random access (a folder, S3). */
  readonly reader?: StoreReader;
  /** Front to back (an archive). */
  readonly streamer?: StreamReader;

  constructor(
    readonly backend: Backend,
    private readonly keyFiles: KeyFile[] = [],
  ) {
    if (backend.random) this.reader = new StoreReader(backend);
    else if (backend.stream) this.streamer = new StreamReader(backend.location, backend.stream, keyFiles);
  }

  /**
   * Open an encrypted store's keys with the key files given (E_KEY_NEEDED without any,
   * E_KEY_WRONG if none opens it); nothing for a plaintext store or where there is no store.
   */
  async unlock(): Promise<void> {
    if (this.streamer) {
      await this.streamer.info();
      return;
    }
    const r = this.reader!;
    if (r.keys || !(await r.exists())) return;
    const info = await r.info();
    if (info.encryption) r.keys = openStoreKeys(info.encryption, this.keyFiles, this.location);
  }

  get location(): string {
    return this.backend.location;
  }

  private get either(): StoreReader | StreamReader {
    const r = this.reader ?? this.streamer;
    if (!r) throw new Error(`${this.location} cannot be read`);
    return r;
  }

  info(): Promise<StoreInfo> {
    return this.either.info();
  }

  exists(): Promise<boolean> {
    return this.either.exists();
  }

  manifestIds(): Promise<number[]> {
    return this.either.manifestIds();
  }

  manifest(id: number): Promise<Manifest> {
    return this.either.manifest(id);
  }

  /** The ids there are; E_NOT_FOUND naming them if `wanted` is given and is not one. */
  async checkpointIds(wanted?: number): Promise<number[]> {
    const ids = await this.manifestIds();
    if (wanted !== undefined && !ids.includes(wanted)) {
      throw new CairnError("E_NOT_FOUND", `there is no checkpoint ${wanted} in ${this.location}; checkpoints there: ${ids.join(", ") || "none"}`);
    }
    return ids;
  }

  /** The random-access reader, or E_USAGE saying `what` needs one (an archive is read as a stream). */
  randomReader(what: string): StoreReader {
    if (!this.reader) throw new CairnError("E_USAGE", `${this.location} is an archive; ${what} needs a checkpoint directory or an s3:// URL`);
    return this.reader;
  }

  /** Keep the node's garbage collection away while this reads (nothing to do where nothing collects). */
  hold(onWarn?: (message: string) => void): Promise<Hold> {
    return this.backend.readers?.hold(undefined, onWarn) ?? Promise.resolve(NO_HOLD);
  }
}
