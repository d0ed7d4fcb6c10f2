/**
 * Waiting in tests. The rule: tests pass on a busy machine too, so they wait for conditions,
 * never for fixed sleeps. A fixed sleep that is long enough on an idle machine is too short on
 * a loaded one (everything there takes several times longer), and one that "makes sure
 * something did not happen" proves nothing unless the thing had an observable chance to.
 */
import { readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

export interface WaitOptions {
  /** What is awaited, for the message if it never comes ("the checkpoint to write into tmp/"). */
  what: string;
  /** Give up after this long. Generous by default: a deadline is for a hang, not a pace. */
  timeoutMs?: number;
  /** Pause between two looks at the condition. */
  intervalMs?: number;
  /** More to say if it never comes (the node's log, the last status seen), computed only then. */
  detail?: () => string;
}

type Truthy<T> = Exclude<T, false | 0 | "" | null | undefined>;

/**
 * Poll `cond` until it returns something truthy, and return that. Throws, naming `what`, if
 * `timeoutMs` passes first.
 */
export async function waitFor<T>(cond: () => T | Promise<T>, opts: WaitOptions): Promise<Truthy<T>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const started = performance.now();
  for (;;) {
    const v = await cond();
    if (v) return v as Truthy<T>;
    if (performance.now() - started > timeoutMs) {
      const more = opts.detail ? `\n${opts.detail()}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}${more}`);
    }
    await Bun.sleep(opts.intervalMs ?? 25);
  }
}

/** The newest mtime (ms) of any file or folder under `dir`, `dir` itself included. */
function newestMtime(dir: string): number {
  let newest = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/**
 * Wait until the file system's clock has moved past every mtime under `dir`: from then on, a
 * file written (even rewritten with the same bytes) under `dir` shows a newer mtime than any it
 * has now. File timestamps come from a coarse clock (one tick is several ms), so right after a
 * write a second write may carry the very same mtime. A probe file beside `dir` (same file
 * system, outside the tree) is written until its mtime is newer.
 */
export async function fsClockPast(dir: string): Promise<void> {
  const newest = newestMtime(dir);
  const probe = join(dirname(dir), `.mtime-probe-${process.pid}`);
  try {
    await waitFor(
      () => {
        writeFileSync(probe, "");
        return statSync(probe).mtimeMs > newest;
      },
      { what: `the file system clock to pass the newest mtime under ${dir}`, intervalMs: 2 },
    );
  } finally {
    rmSync(probe, { force: true });
  }
}
