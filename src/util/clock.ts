/**
 * The clock background loops take (the checkpoint schedule, the task timeout, the remote
 * copier's retries, the WAL folds), so tests can drive them with a fake one.
 *
 * Timers of any length: Bun (like Node) caps a timer at 2^31 - 1 ms (24.8 days) and fires a
 * longer one after 1 ms instead. A monthly checkpoint interval would then run checkpoints back
 * to back, and retention would delete the history they replace. So a long timer is a chain of
 * timers no longer than the cap, each leg measuring what is left on the clock.
 */

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The longest single timer the platform keeps: 2^31 - 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The timers a chain is made of: at most MAX_TIMER_MS each (anything longer fires at once). */
export interface TimerPlatform {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** A timer of any length on `platform`, as a chain of legs of at most MAX_TIMER_MS. */
export function longTimeout(platform: TimerPlatform, fn: () => void, ms: number): { cancel(): void } {
  const due = platform.now() + Math.max(0, ms);
  let handle: unknown;
  let cancelled = false;
  const leg = () => {
    if (cancelled) return;
    const left = due - platform.now();
    if (left <= 0) {
      fn();
      return;
    }
    handle = platform.setTimeout(leg, Math.min(left, MAX_TIMER_MS));
  };
  handle = platform.setTimeout(leg, Math.min(Math.max(0, ms), MAX_TIMER_MS));
  return {
    cancel() {
      cancelled = true;
      platform.clearTimeout(handle);
    },
  };
}

const realTimers: TimerPlatform = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

/** The real clock. Its timers never keep the process alive by themselves. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => longTimeout(realTimers, fn, ms),
  clearTimeout: (h) => (h as { cancel(): void } | undefined)?.cancel(),
};

/** Run `fn` every `ms` on `clock` until the returned function is called. */
export function every(clock: Clock, ms: number, fn: () => void): () => void {
  let handle: unknown;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    fn();
    if (!stopped) handle = clock.setTimeout(tick, ms);
  };
  handle = clock.setTimeout(tick, ms);
  return () => {
    stopped = true;
    clock.clearTimeout(handle);
  };
}

/** Wait `ms` on `clock`, or reject with the signal's reason if it aborts first. */
export function sleepOn(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((res, rej) => {
    if (signal?.aborted) return rej(signal.reason);
    const t = clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      res();
    }, ms);
    const onAbort = () => {
      clock.clearTimeout(t);
      rej(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
