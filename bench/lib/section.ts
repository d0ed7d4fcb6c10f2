/**
 * A bench section: a titled function that measures something and returns its markdown. run.ts
 * calls the sections in order; they share a context (temp dirs, progress log, measurements one
 * section computes and another reuses, and a tally of failures that makes the run fail).
 */
import type { TempDirs } from "./tmp.ts";

export interface BenchContext {
  readonly tmp: TempDirs;
  /** Progress for the operator (stderr); the results go to stdout and results.md. */
  log(msg: string): void;
  /** Compute `key` once per run, whichever section asks first; later calls share the result. */
  once<T>(key: string, compute: () => Promise<T>): Promise<T>;
  /** Record a problem that must fail the run (e.g. failed requests) without aborting it. */
  fail(reason: string): void;
}

export interface Section {
  title: string;
  /** Markdown for the body of the section (run.ts writes the heading). */
  run(ctx: BenchContext): Promise<string>;
}

export function createContext(tmp: TempDirs, log: (msg: string) => void): BenchContext & { failures: string[] } {
  const memo = new Map<string, Promise<unknown>>();
  const failures: string[] = [];
  return {
    tmp,
    log,
    failures,
    once<T>(key: string, compute: () => Promise<T>): Promise<T> {
      let p = memo.get(key);
      if (!p) {
        p = compute();
        memo.set(key, p);
      }
      return p as Promise<T>;
    },
    fail(reason: string) {
      failures.push(reason);
    },
  };
}
