/**
 * Which key files open an encrypted store, changed without rewriting its data: `key add` wraps
 * the store's keys (every generation the old key file opens) for a new key file too, `key
 * remove` takes a key file's copies away, `key rotate` starts a new generation whose master
 * key no other key file ever wrapped. After a rotation the node's next checkpoint builds on
 * nothing older (every block is sealed again under the new generation), and once retention
 * has removed the checkpoints of older generations their wrapped keys are dropped too
 * (retireGenerations): a leaked key file then opens nothing the store still holds.
 *
 * Only cairn-store.json changes, atomically (a folder: temp, fsync, rename; S3: one PUT). In a
 * folder the writer lock is taken, so a node's checkpoint or retention is never racing it.
 */
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { FileLock } from "../util/file-lock.ts";
import { isReadWrite } from "./backend.ts";
import { generateKey, type KeyFile, type StoreEncryption, unwrapMaster, wrapMaster } from "./crypto.ts";
import { decodeStoreInfo, encodeStoreInfo, MAX_STORE_INFO_BYTES, STORE_FILE, STORE_LOCK_FILE } from "./format.ts";
import { openStore } from "./open.ts";

export interface KeyChange {
  location: string;
  generation: number;
  /** Ids of the key files that open the current generation, after the change. */
  keys: string[];
  /** What the change did, for the operator. */
  done: string;
}

/** Change the key slots of the store at `location` with `change` (given the opened info), writing it back atomically. */
async function changeSlots(location: string, files: KeyFile[], change: (enc: StoreEncryption, where: string) => string): Promise<KeyChange> {
  const store = await openStore(location, files);
  const backend = store.backend;
  if (!isReadWrite(backend)) throw new CairnError("E_USAGE", `${store.location} is an archive; keys are changed in a checkpoint directory or an s3:// store`);
  const lock = backend.localDir
    ? FileLock.exclusive(join(backend.localDir, STORE_LOCK_FILE), (holder) => new CairnError("E_BUSY", `a node (pid ${holder?.pid ?? "unknown"}) is writing checkpoints into ${store.location}`, { hint: "try again when its checkpoint is done" }))
    : undefined;
  try {
    // read again under the lock: what the node may have written meanwhile counts
    const info = decodeStoreInfo(await backend.random.get(STORE_FILE, MAX_STORE_INFO_BYTES), `${store.location}/${STORE_FILE}`);
    const enc = info.encryption;
    if (!enc) throw new CairnError("E_USAGE", `the store at ${store.location} is not encrypted; it has no keys to change`);
    const done = change(enc, store.location);
    await backend.writes.put(STORE_FILE, encodeStoreInfo(info));
    const current = [...new Set(enc.slots.filter((s) => s.generation === enc.generation).map((s) => s.key_id))];
    return { location: store.location, generation: enc.generation, keys: current, done };
  } finally {
    lock?.release();
    backend.close?.();
  }
}

/** Let `added` open the store too: it gets a copy of every generation `opener` opens. */
export function addKey(location: string, opener: KeyFile, added: KeyFile): Promise<KeyChange> {
  return changeSlots(location, [opener], (enc) => {
    let n = 0;
    for (const slot of [...enc.slots]) {
      const bundle = unwrapMaster(opener.key, slot);
      if (!bundle) continue;
      if (enc.slots.some((s) => s.generation === slot.generation && s.key_id === added.id)) continue;
      enc.slots.push(wrapMaster(added.key, bundle, slot.generation));
      n++;
    }
    if (n === 0) throw new CairnError("E_USAGE", `the key file ${added.path} (key ${added.id}) opens the store already`);
    return `added key ${added.id} (${added.path})`;
  });
}

/** Take `removed`'s copies away: it no longer opens the store. Never the last key of the current generation. */
export function removeKey(location: string, removed: KeyFile): Promise<KeyChange> {
  return changeSlots(location, [removed], (enc, where) => {
    const left = enc.slots.filter((s) => s.key_id !== removed.id);
    if (!left.some((s) => s.generation === enc.generation)) {
      throw new CairnError("E_USAGE", `${removed.path} (key ${removed.id}) is the only key that opens the store at ${where}; removing it would lose the store`, {
        hint: "add another key first: cairn key add … --key-file OLD --new-key-file NEW",
      });
    }
    enc.slots = left;
    return `removed key ${removed.id} (${removed.path})`;
  });
}

/**
 * Start a new generation: a new master key (the store's name key stays, so names keep meaning
 * the same), wrapped by `file` only. New checkpoints are sealed under it; older ones expire
 * with retention, and their generations' keys with them.
 */
export function rotateKey(location: string, file: KeyFile): Promise<KeyChange> {
  return changeSlots(location, [file], (enc, where) => {
    let bundle: Uint8Array | undefined;
    for (const s of enc.slots) if (!bundle && s.generation === enc.generation) bundle = unwrapMaster(file.key, s);
    if (!bundle) throw new CairnError("E_KEY_WRONG", `the key file ${file.path} does not open the store at ${where}`);
    bundle.set(generateKey(), 0);
    enc.generation += 1;
    enc.slots.push(wrapMaster(file.key, bundle, enc.generation));
    const others = [...new Set(enc.slots.filter((s) => s.generation === enc.generation - 1 && s.key_id !== file.id).map((s) => s.key_id))];
    return `rotated to key generation ${enc.generation}, opened by key ${file.id} only${others.length ? ` (add the others again with cairn key add: ${others.join(", ")})` : ""}`;
  });
}

/** The generations of `enc` older than `oldestUsed` (no checkpoint needs them any more) dropped; returns how many slots went. */
export function retireGenerations(enc: StoreEncryption, oldestUsed: number): number {
  const before = enc.slots.length;
  enc.slots = enc.slots.filter((s) => s.generation >= Math.min(oldestUsed, enc.generation));
  return before - enc.slots.length;
}
