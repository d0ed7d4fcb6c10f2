/**
 * Temp dirs for the bench: every one is made with mkdtemp under /tmp and remembered, so that
 * run.ts can remove them all at the end, whether the run succeeded, failed or was interrupted.
 */
import { mkdtempSync, rmSync } from "node:fs";

export class TempDirs {
  private readonly made: string[] = [];
  private closed = false;

  /** A fresh, empty dir /tmp/<prefix>XXXXXX. Short, so Unix socket paths inside it stay short. */
  make(prefix = "cairn-bench-"): string {
    if (this.closed) throw new Error("the bench is shutting down; not making a temp dir");
    const dir = mkdtempSync(`/tmp/${prefix}`);
    this.made.push(dir);
    return dir;
  }

  /** Remove one dir made here now (e.g. a large database no longer needed). */
  remove(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
    const i = this.made.indexOf(dir);
    if (i >= 0) this.made.splice(i, 1);
  }

  /** Remove every dir made here and refuse to make more; returns the ones that could not be removed. */
  removeAll(): string[] {
    this.closed = true;
    const failed: string[] = [];
    for (const dir of this.made.splice(0)) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        failed.push(dir);
      }
    }
    return failed;
  }
}

/**
 * Cleanup shared by `bun run bench` and `bun run soak`: stop every node and remove the temp
 * dirs, at the end and on SIGINT/SIGTERM (then exit 130). Returns the cleanup to call.
 */
export function installCleanup(tmp: TempDirs, log: (msg: string) => void, stopAllNodes: () => Promise<void>): () => Promise<void> {
  const cleanUp = async () => {
    await stopAllNodes();
    const left = tmp.removeAll();
    if (left.length > 0) log(`could not remove: ${left.join(", ")}`);
  };
  let interrupted = false;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = true;
      log(`${sig}: stopping nodes and removing temp dirs`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
  return cleanUp;
}
