/**
 * Copying checkpoints from the node's local store to a remote one (any backend with writes:
 * an S3 prefix), then the remote's retention (retention.ts).
 *
 * A push uploads only the stored files the remote lacks (packs are immutable and named by a
 * random id, so a file of the same name and size is the same file), a few at a time, each
 * pack before its index and every pack before the manifest that needs it: a checkpoint
 * becomes visible remotely only when everything it needs is there. The remote store records
 * the node that owns it, like a local one; another node's store is refused.
 */
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ReadWriteBackend } from "./backend.ts";
import { DirBackend } from "./dir/backend.ts";
import { encodeStoreInfo, includedPath, indexPath, manifestPath, MAX_MANIFEST_BYTES, packPath, sameStore, STORE_FILE, storeInfoForCopy } from "./format.ts";
import { StoreReader } from "./reader.ts";
import { applyRemoteRetention, type RetentionPolicy } from "./retention.ts";
import { type KeyFile, openStoreKeys } from "./crypto.ts";

/** Files uploaded at once. */
const UPLOAD_PARALLEL = 4;

export interface PushResult {
  /** Checkpoints copied by this push. */
  pushed: number[];
  uploaded_files: number;
  uploaded_bytes: number;
  /** Files the remote already held. */
  skipped_files: number;
  /** Checkpoints removed from the remote by its retention. */
  removed: number[];
  /** Checkpoints on the remote afterwards. */
  remote_checkpoints: number[];
  duration_ms: number;
}

export interface PushOptions {
  localDir: string;
  remote: ReadWriteBackend;
  /** Which local checkpoints to copy (default: every one newer than the remote's newest). */
  ids?: number[];
  /** Which checkpoints the remote keeps. */
  remoteRetention: RetentionPolicy;
  logger: Logger;
  signal?: AbortSignal;
  onProgress?: (uploadedBytes: number) => void;
  /** An encrypted local store's key file (the remote holds the same sealed files). */
  keyFile?: KeyFile;
}

/** Copy checkpoints of the local store in `localDir` to `remote`, then apply its retention. */
export async function pushCheckpoints(o: PushOptions): Promise<PushResult> {
  const t0 = performance.now();
  const localBackend = new DirBackend(o.localDir);
  const local = new StoreReader(localBackend);
  const info = await local.info();
  local.keys = info.encryption ? openStoreKeys(info.encryption, o.keyFile ? [o.keyFile] : [], o.localDir) : undefined;
  const remote = o.remote;
  const check = () => {
    if (o.signal?.aborted) throw new CairnError("E_CANCELLED", "push cancelled");
  };

  // the remote's owner, or a new remote store (read like any store)
  const remoteStore = new StoreReader(remote, local.keys);
  if (await remoteStore.exists()) {
    const theirs = await remoteStore.info();
    if (theirs.node_id !== info.node_id) {
      throw new CairnError("E_FOREIGN_STORE", `${remote.location} holds the checkpoints of node ${theirs.node_id}, not of this node (${info.node_id}); refusing to write into it`, {
        hint: "give each node its own remote prefix",
      });
    }
    if (!sameStore(theirs, info)) {
      throw new CairnError("E_FOREIGN_STORE", `${remote.location} was made from another local store of node ${info.node_id}; refusing to mix them`, {
        hint: "give the new store its own remote prefix",
      });
    }
    // a remote made by an older cairn holds the quick-hash seed itself: keep only its digest
    // there; the keys that open it follow the local store's (key add, remove, rotate, retired generations)
    if (theirs.quick_hash_seed !== undefined || JSON.stringify(theirs.encryption) !== JSON.stringify(info.encryption)) {
      await remote.writes.put(STORE_FILE, encodeStoreInfo(storeInfoForCopy(info)));
    }
  } else await remote.writes.put(STORE_FILE, encodeStoreInfo(storeInfoForCopy(info)));

  // hold the local store for reading: retention and collection wait until the files are uploaded
  const hold = await localBackend.readers.hold(0);
  const result: PushResult = { pushed: [], uploaded_files: 0, uploaded_bytes: 0, skipped_files: 0, removed: [], remote_checkpoints: [], duration_ms: 0 };
  try {
    const remoteIds = await remoteStore.manifestIds();
    const newestRemote = remoteIds.at(-1) ?? 0;
    const localIds = await local.manifestIds();
    const ids = (o.ids ?? localIds.filter((id) => id > newestRemote)).filter((id) => !remoteIds.includes(id));
    if (ids.length > 0) {
      const have = await remote.random.listSizes("packs/");
      for (const [f, size] of await remote.random.listSizes("files/")) have.set(f, size);
      for (const id of ids) {
        check();
        const m = await local.manifest(id);
        // every pack and index the checkpoint needs, pack first; only what the remote lacks
        const files: string[] = [];
        for (const p of m.packs) files.push(packPath(p), indexPath(p));
        for (const c of m.files ?? []) if (!files.includes(includedPath(c.name))) files.push(includedPath(c.name));
        const todo: string[] = [];
        for (const f of files) {
          const size = (await local.source.size(f)) ?? -1;
          if (size < 0) throw new CairnError("E_STORE_MISSING", `${o.localDir}/${f} is missing; checkpoint ${id} cannot be pushed`);
          if (have.get(f) === size) result.skipped_files++;
          else todo.push(f);
        }
        let next = 0;
        await Promise.all(
          Array.from({ length: Math.min(UPLOAD_PARALLEL, todo.length) }, async () => {
            while (next < todo.length) {
              check();
              const f = todo[next++]!;
              const bytes = await remote.writes.putFile(f, join(o.localDir, f));
              have.set(f, bytes);
              result.uploaded_files++;
              result.uploaded_bytes += bytes;
              o.onProgress?.(result.uploaded_bytes);
            }
          }),
        );
        check();
        // the manifest last: only now does the checkpoint exist remotely
        const manifest = await local.source.get(manifestPath(id), MAX_MANIFEST_BYTES);
        await remote.writes.put(manifestPath(id), manifest);
        result.uploaded_files++;
        result.uploaded_bytes += manifest.length;
        result.pushed.push(id);
      }
    }
  } finally {
    await hold.release();
  }
  const retained = await applyRemoteRetention(remote, o.remoteRetention, o.logger, local.keys);
  result.removed = retained.removed;
  result.remote_checkpoints = retained.kept;
  result.duration_ms = Math.round(performance.now() - t0);
  return result;
}
