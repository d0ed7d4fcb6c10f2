/**
 * The one interface behind which a checkpoint store's bytes live, whatever holds them: a
 * local folder (dir/), an S3 prefix (s3/) or an archive file (archive/). Paths are relative to
 * the store's root with "/" separators (see format.ts).
 *
 * A backend offers what it can, as capabilities, and callers ask for a capability, never for
 * a class: random reads (a folder, S3), reads in stored order (an archive), writes (a folder,
 * S3), a readers' hold that keeps retention and garbage collection away while something reads
 * (a folder's lock, an S3 prefix's leases: store/lease.ts),
 * and a local folder a checkpoint can be written into directly. open.ts is the one place that
 * knows which backend a location names.
 */
import { CairnError } from "../errors.ts";

/** Random access to the store's files. */
export interface RandomReads {
  /**
   * A whole file of at most `maxBytes` (the format's limit for what it holds: a larger one is
   * E_STORE_DAMAGED, never read whole). E_STORE_MISSING if there is none.
   */
  get(path: string, maxBytes: number): Promise<Uint8Array>;
  /** `length` bytes at `offset`; fewer only if the file is shorter (damaged). */
  getRange(path: string, offset: number, length: number): Promise<Uint8Array>;
  /** The same, read into `into` at `at` (no allocation where the backend can avoid it); returns bytes read. */
  readInto(path: string, into: Uint8Array, at: number, length: number, offset: number): Promise<number>;
  /**
   * A whole file read into `reuse` when it fits (a view of it), else into a new buffer: for
   * readers that scan many files and keep none.
   */
  getReusing(path: string, reuse: Uint8Array, maxBytes: number): Promise<Uint8Array>;
  /** Size in bytes, or undefined if absent. */
  size(path: string): Promise<number | undefined>;
  /** Paths of every file under `prefix` (a folder path ending in "/"), any depth, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Sizes of every file under `prefix`, in one listing. */
  listSizes(prefix: string): Promise<Map<string, number>>;
  /** How many reads in flight at once pay off (1 for a local disk, a few for S3). */
  readonly parallelReads: number;
}

/** One file of a store read in stored order. */
export interface StreamEntry {
  path: string;
  size: number;
  /** `n` bytes of the file's body, or fewer only where it ends. */
  read(n: number): Promise<Uint8Array>;
  /** True if nothing of the body is left. */
  atEnd(): Promise<boolean>;
}

/** The store's files in the order they were written (an archive). */
export interface StreamReads {
  /** The files in order; each must be read fully (or not at all) before the next is asked for. */
  entries(): AsyncGenerator<StreamEntry>;
  /** E_STORE_DAMAGED for a stream that is cut short or damaged as a whole (checked before streaming). */
  checkWhole?(): Promise<void>;
}

/** Writing the store's files (each written whole; readers never see a partial one). */
export interface Writes {
  put(path: string, data: Uint8Array): Promise<void>;
  /** Upload a local file; returns its size. */
  putFile(path: string, localFile: string): Promise<number>;
  /** Remove a file; nothing if it is already gone. */
  delete(path: string): Promise<void>;
}

export interface Hold {
  /** Let go (a remote lease is deleted: wait for it before the process ends). */
  release(): void | Promise<void>;
}

/** Keeping garbage collection away while something reads the store. */
export interface ReadersHold {
  /** `onWarn` hears of a registration that could not be made (the read goes on, unprotected). */
  hold(timeoutMs?: number, onWarn?: (message: string) => void): Promise<Hold>;
}

/** How a worker thread opens the same backend again (plain data, safe to post). */
export type BackendSpec = { kind: "dir"; dir: string } | { kind: "s3"; settings: unknown } | { kind: "archive"; file: string };

export interface Backend {
  /** How to name the store to an operator (a path or URL); never holds a credential. */
  readonly location: string;
  readonly random?: RandomReads;
  readonly stream?: StreamReads;
  readonly writes?: Writes;
  readonly readers?: ReadersHold;
  /** A local folder: checkpoints are written into it directly (dir/writer.ts). */
  readonly localDir?: string;
  /** An archive file not written yet: a checkpoint of a local store is exported into it (archive/export.ts). */
  readonly archiveOutput?: string;
  /**
   * Told of every failed request that is retried (a remote backend), for the status of a copy
   * that goes on retrying; set by whoever reports on it.
   */
  onAttemptFailed?: (what: string, err: unknown) => void;
  /** For a backend workers can open too. */
  spec?(): BackendSpec;
  /** Let go of what it holds open (descriptors); it may be used again afterwards. */
  close?(): void;
}

/** A backend that can be read at random and written (an S3 prefix a node copies into). */
export type ReadWriteBackend = Backend & { random: RandomReads; writes: Writes };

export function isReadWrite(b: Backend): b is ReadWriteBackend {
  return b.random !== undefined && b.writes !== undefined;
}

export function missing(location: string, path: string, cause?: unknown): CairnError {
  return new CairnError("E_STORE_MISSING", `${location}/${path} is missing`, { cause });
}

export function tooLarge(location: string, path: string, size: number | string, maxBytes: number): CairnError {
  return new CairnError("E_STORE_DAMAGED", `${location}/${path} is ${size} bytes, more than such a file can be (${maxBytes})`);
}

/** The backend's random reads, or E_USAGE naming what needs them. */
export function randomReadsOf(b: Backend, what: string): RandomReads {
  if (!b.random) throw new CairnError("E_USAGE", `${b.location} is read as a stream (an archive); ${what} needs a checkpoint directory or an s3:// URL`);
  return b.random;
}

/** A hold that holds nothing (a backend with no readers' hold: an archive never changes). */
export const NO_HOLD: Hold = { release() {} };
