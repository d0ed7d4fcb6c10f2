/**
 * The one place that knows which backend a location names: a folder, `s3://BUCKET/PREFIX`, or
 * an archive file (.tar, .tar.gz, .tar.zst). Everything else asks the backend it gets for a
 * capability (store/backend.ts).
 */
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { CairnError } from "../errors.ts";
import type { Backend, BackendSpec } from "./backend.ts";
import { ArchiveBackend } from "./archive/backend.ts";
import { isArchiveName } from "./archive/names.ts";
import { DirBackend } from "./dir/backend.ts";
import { isS3Url, resolveS3Settings, S3Backend, type S3Settings, type S3SourceSpec } from "./s3/backend.ts";
import type { KeyFile } from "./crypto.ts";
import { Store } from "./store.ts";

/**
 * Open `location` for reading; an s3:// URL takes its settings from the environment. An
 * encrypted store is opened with `keyFiles` (E_KEY_NEEDED without, E_KEY_WRONG if none opens it).
 */
export async function openStore(location: string, keyFiles: KeyFile[] = []): Promise<Store> {
  const store = storeAt(location, keyFiles);
  // a prefix exists only through its objects: a mistyped one must not "verify" as empty
  if (isS3Url(location) && !(await store.exists())) {
    throw new CairnError("E_NOT_FOUND", `${store.location} holds no checkpoint store (no cairn-store.json)`, {
      hint: "check the bucket and prefix (list them with your S3 tool)",
    });
  }
  await store.unlock();
  return store;
}

function storeAt(location: string, keyFiles: KeyFile[]): Store {
  if (isS3Url(location)) return new Store(new S3Backend(resolveS3Settings({ url: location })), keyFiles);
  const path = resolve(location);
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new CairnError("E_NOT_FOUND", `${path} does not exist`, {
      hint: "give the checkpoint directory (db_checkpoint_dir), an archive file or an s3:// URL",
    });
  }
  if (st.isFile()) return new Store(new ArchiveBackend(path, path), keyFiles);
  if (!st.isDirectory()) throw new CairnError("E_NOT_FOUND", `${path} is neither a directory nor an archive file`);
  return new Store(new DirBackend(path), keyFiles);
}

/**
 * Where a checkpoint is to go (`checkpoint create --path`): a folder (written into directly),
 * an s3:// prefix (copied into, with `settings` for it) or an archive name (exported into).
 */
export function openTarget(location: string, settings: Omit<S3Settings, "url"> = {}): Backend {
  if (isS3Url(location)) return new S3Backend(resolveS3Settings({ ...settings, url: location }));
  const path = resolve(location);
  if (isArchiveName(path)) return { location: path, archiveOutput: path };
  return new DirBackend(path);
}

/** The same backend again, in a worker thread. */
export function openBackend(spec: BackendSpec): Backend {
  switch (spec.kind) {
    case "dir":
      return new DirBackend(spec.dir);
    case "s3":
      return new S3Backend(spec.settings as S3SourceSpec);
    case "archive":
      return new ArchiveBackend(spec.file, spec.file);
  }
}

/** How an operator's location prints (a folder resolved, a URL as given). */
export function locationOf(location: string): string {
  return isS3Url(location) ? location : resolve(location);
}
