/**
 * The storage directory's lock: <storage_path>/cairn.lock (flock, util/file-lock.ts), held by
 * a node for its whole life and by `restore` while it works.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { FileLock, type LockHolder, lockHolder } from "../util/file-lock.ts";
import { DIR_MODE } from "../util/fsx.ts";


export const LOCK_FILE = "cairn.lock";

/** The storage directory's lock (see above). */
export class StorageLock {
  /**
   * Take the lock on `dir` (created if missing) as `kind`, or throw E_LOCKED naming the
   * holder. `refusal` ends the message, saying what was refused.
   */
  static acquire(dir: string, kind: "node" | "restore", refusal = "refusing to start a node on it"): FileLock {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    return FileLock.exclusive(
      join(dir, LOCK_FILE),
      (holder) => StorageLock.busy(dir, holder, refusal),
      kind,
    );
  }

  /** The E_LOCKED error for `dir` held by `holder`. */
  static busy(dir: string, holder: LockHolder | undefined, refusal: string): CairnError {
    const restoring = holder?.kind === "restore";
    return new CairnError(
      "E_LOCKED",
      restoring
        ? `a restore (pid ${holder.pid}) is working on ${dir}; ${refusal}`
        : `a node is running on ${dir} (pid ${holder?.pid ?? "unknown"}); ${refusal}`,
      {
        hint: restoring
          ? "wait for that restore to finish"
          : holder
            ? `stop the node first (kill ${holder.pid}, or systemctl stop cairn)`
            : "stop the node first",
      },
    );
  }

  static holder(dir: string): LockHolder | undefined {
    return lockHolder(join(dir, LOCK_FILE));
  }

  static isHeld(dir: string): boolean {
    return FileLock.isHeld(join(dir, LOCK_FILE));
  }
}
