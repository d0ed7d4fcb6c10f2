/**
 * Opening a checkpoint store named on the command line for reading. Today a local directory;
 * archives and s3:// URLs plug in here, behind the same ObjectSource interface.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { CairnError } from "../errors.ts";
import { FileLock } from "../engine/lock.ts";
import { STORE_READERS_LOCK_FILE } from "./local-store.ts";
import { DirSource } from "./objects.ts";
import { StoreReader } from "./reader.ts";

export async function openStoreReader(location: string): Promise<StoreReader> {
  const dir = resolve(location);
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new CairnError("E_NOT_FOUND", `${dir} does not exist`, { hint: "give the checkpoint directory (db_checkpoint_dir)" });
  }
  if (!st.isDirectory()) throw new CairnError("E_NOT_FOUND", `${dir} is not a directory`);
  return new StoreReader(new DirSource(dir));
}

/**
 * Hold the store's readers lock (shared) while reading it, so that the node's garbage
 * collection does not delete what is being read. Waits while a collection runs.
 */
export async function holdStoreForReading(reader: StoreReader, timeoutMs = 60_000): Promise<{ release(): void }> {
  if (!(reader.source instanceof DirSource)) return { release() {} };
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
