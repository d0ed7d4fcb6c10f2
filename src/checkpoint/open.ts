/**
 * Opening a checkpoint store named on the command line, for reading: the one place that knows
 * the backends. A folder and an `s3://BUCKET/PREFIX` URL are read through an ObjectSource
 * (random access: StoreReader); an archive file is read as a stream (ArchiveReader). list,
 * verify, restore and export take either and never ask which backend it is.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { CairnError } from "../errors.ts";
import { FileLock } from "../engine/lock.ts";
import { ArchiveReader } from "./archive.ts";
import { STORE_READERS_LOCK_FILE } from "./local-store.ts";
import { DirSource } from "./objects.ts";
import { StoreReader } from "./reader.ts";
import type { PackSourceSpec } from "../restore/range-worker.ts";
import { isS3Url, resolveS3Settings, S3Source } from "./s3.ts";

/** A checkpoint store opened for reading, whatever holds it. */
export type CheckpointSource = StoreReader | ArchiveReader;

/** Open `location` for reading; an s3:// URL takes its settings from the environment. */
export async function openCheckpointSource(location: string): Promise<CheckpointSource> {
  if (isS3Url(location)) {
    const reader = new StoreReader(new S3Source(resolveS3Settings({ url: location })));
    // a prefix exists only through its objects: a mistyped one must not "verify" as empty
    if (!(await reader.exists())) {
      throw new CairnError("E_NOT_FOUND", `${reader.location} holds no checkpoint store (no cairn-store.json)`, {
        hint: "check the bucket and prefix (list them with your S3 tool)",
      });
    }
    return reader;
  }
  const path = resolve(location);
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new CairnError("E_NOT_FOUND", `${path} does not exist`, {
      hint: "give the checkpoint directory (db_checkpoint_dir), an archive file or an s3:// URL",
    });
  }
  if (st.isFile()) return new ArchiveReader(path, path);
  if (!st.isDirectory()) throw new CairnError("E_NOT_FOUND", `${path} is neither a directory nor an archive file`);
  return new StoreReader(new DirSource(path));
}

/** How a worker reaches the packs of a store opened here (plain data, posted to workers). */
export function packSourceOf(reader: StoreReader): PackSourceSpec {
  return reader.source instanceof S3Source ? { s3: reader.source.spec } : { dir: reader.location };
}

/** A store that must allow random access (export reads from one; archives are read as streams). */
export async function openStoreReader(location: string): Promise<StoreReader> {
  const src = await openCheckpointSource(location);
  if (src.kind === "archive") {
    throw new CairnError("E_USAGE", `${location} is an archive; this needs a checkpoint directory or an s3:// URL`, { exitStatus: 2 });
  }
  return src;
}

/**
 * Hold the store's readers lock (shared) while reading it, so that the node's garbage
 * collection does not delete what is being read. Waits while a collection runs. Only local
 * directories have one; an archive never changes.
 */
export async function holdStoreForReading(reader: CheckpointSource, timeoutMs = 60_000): Promise<{ release(): void }> {
  if (reader.kind !== "objects" || !(reader.source instanceof DirSource)) return { release() {} };
  const path = join(reader.location, STORE_READERS_LOCK_FILE);
  if (!existsSync(path)) return { release() {} };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lock = FileLock.shared(path);
    if (lock) return lock;
    if (Date.now() > deadline) {
      throw new CairnError("E_STORE_BUSY", `the node is collecting garbage in ${reader.location} and did not finish within ${timeoutMs / 1000} s`, {
        hint: "try again in a minute",
      });
    }
    await Bun.sleep(100);
  }
}
