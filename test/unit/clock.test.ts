/**
 * Timers longer than a platform timer can hold. Bun (like Node) keeps a timer of at most
 * 2^31 - 1 ms (24.8 days) and fires a longer one after 1 ms instead, so a monthly checkpoint
 * interval, a year-long task timeout or a delay of 25 days must be chains of shorter timers.
 * A fake platform here behaves as Bun does, on a fake time the test moves by hand.
 *
 * (On the code before the fix, src/util/clock.ts did not exist and the node's clock handed
 * such durations straight to setTimeout: this whole file fails there.)
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CheckpointManager } from "../../src/checkpoint/manager.ts";
import type { CheckpointConfig } from "../../src/config/config.ts";
import { dbPathIn, openNodeDatabase } from "../../src/engine/database.ts";
import { LiveFiles } from "../../src/engine/live-files.ts";
import { silentLogger } from "../../src/log.ts";
import { type Clock, every, longTimeout, MAX_TIMER_MS, systemClock, type TimerPlatform } from "../../src/util/clock.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const MINUTE = 60_000;
const DAY = 86_400_000;

/**
 * Timers as Bun keeps them, on a fake time: a timer longer than 2^31 - 1 ms fires after 1 ms
 * (Bun prints a TimeoutOverflowWarning and does just that). Every timer set is recorded.
 */
class BunLikePlatform implements TimerPlatform {
  // the real time as the start: checkpoints stamp their creation with the real clock
  private t = Date.now();
  private timers = new Map<number, { at: number; fn: () => void }>();
  private next = 1;
  /** Every duration setTimeout was asked for, in order. */
  readonly requested: number[] = [];

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): number {
    this.requested.push(ms);
    const effective = ms > MAX_TIMER_MS ? 1 : Math.max(1, ms);
    const id = this.next++;
    this.timers.set(id, { at: this.t + effective, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  pending(): number {
    return this.timers.size;
  }
  /** Move time forward by `ms`, firing due timers in order (a timer set by one that fires too, if due). */
  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, x]) => x.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = until;
  }
}

/** A Clock whose timers are chains (longTimeout) on the platform: what systemClock is, on real timers. */
function chainedClock(p: BunLikePlatform): Clock {
  return {
    now: () => p.now(),
    setTimeout: (fn, ms) => longTimeout(p, fn, ms),
    clearTimeout: (h) => (h as { cancel(): void } | undefined)?.cancel(),
  };
}

describe("the fake platform is faithful to Bun", () => {
  test("Bun's own setTimeout fires a timer of 2^31 ms at once (the premise of the fix)", async () => {
    let fired = false;
    // biome-ignore lint: the overflow is the point
    const t = setTimeout(() => (fired = true), 2 ** 31);
    const deadline = Date.now() + 2_000;
    while (!fired && Date.now() < deadline) await Bun.sleep(5);
    clearTimeout(t);
    expect(fired).toBe(true);
    expect(MAX_TIMER_MS).toBe(2 ** 31 - 1);
  });

  test("and so does the fake: a raw 30-day timer on it fires after 1 ms", () => {
    const p = new BunLikePlatform();
    let fired = 0;
    p.setTimeout(() => fired++, 30 * DAY);
    p.advance(1);
    expect(fired).toBe(1);
  });
});

describe("longTimeout on a platform that caps timers", () => {
  test("30 days fires exactly once, at 30 days, not before", () => {
    const p = new BunLikePlatform();
    const start = p.now();
    const firedAt: number[] = [];
    longTimeout(p, () => firedAt.push(p.now()), 30 * DAY);
    // no leg asks the platform for more than it can hold
    expect(Math.max(...p.requested)).toBeLessThanOrEqual(MAX_TIMER_MS);
    p.advance(1);
    p.advance(10 * MINUTE);
    expect(firedAt).toEqual([]);
    p.advance(25 * DAY); // past the first leg (24.8 days)
    expect(firedAt).toEqual([]);
    p.advance(30 * DAY - (25 * DAY + 10 * MINUTE + 1) - 1); // 1 ms before due
    expect(p.now()).toBe(start + 30 * DAY - 1);
    expect(firedAt).toEqual([]);
    p.advance(1);
    expect(firedAt).toEqual([start + 30 * DAY]);
    p.advance(60 * DAY);
    expect(firedAt).toEqual([start + 30 * DAY]);
    expect(p.pending()).toBe(0);
    expect(Math.max(...p.requested)).toBeLessThanOrEqual(MAX_TIMER_MS);
  });

  test("a short timer is one platform timer", () => {
    const p = new BunLikePlatform();
    let fired = 0;
    longTimeout(p, () => fired++, 5_000);
    expect(p.requested).toEqual([5_000]);
    p.advance(4_999);
    expect(fired).toBe(0);
    p.advance(1);
    expect(fired).toBe(1);
  });

  test("cancel works mid-chain: after the first leg, nothing fires and nothing is left pending", () => {
    const p = new BunLikePlatform();
    let fired = 0;
    const t = longTimeout(p, () => fired++, 60 * DAY);
    p.advance(26 * DAY); // the first leg has fired and set the second
    expect(p.requested.length).toBe(2);
    expect(p.pending()).toBe(1);
    t.cancel();
    expect(p.pending()).toBe(0);
    p.advance(100 * DAY);
    expect(fired).toBe(0);
  });

  test("every() with a month interval fires once a month, on the month", () => {
    const p = new BunLikePlatform();
    const clock = chainedClock(p);
    const start = p.now();
    const firedAt: number[] = [];
    const stop = every(clock, 30 * DAY, () => firedAt.push(p.now() - start));
    p.advance(10 * MINUTE);
    expect(firedAt).toEqual([]);
    for (let d = 0; d < 95; d++) p.advance(DAY);
    expect(firedAt).toEqual([30 * DAY, 60 * DAY, 90 * DAY]);
    stop();
    p.advance(60 * DAY);
    expect(firedAt).toHaveLength(3);
    expect(p.pending()).toBe(0);
  });
});

describe("systemClock on Bun's real timers", () => {
  test("a 30-day timer does not fire at once, and clearTimeout cancels it", async () => {
    let fired = false;
    const h = systemClock.setTimeout(() => (fired = true), 30 * DAY);
    // a short observation window: the claim is that nothing happens (the raw Bun timer would fire after 1 ms)
    await Bun.sleep(200);
    expect(fired).toBe(false);
    systemClock.clearTimeout(h);
  });
});

describe("CheckpointManager: interval of 30 days on the capped platform", () => {
  test("with 3 checkpoints and max 3, advancing 10 minutes takes no checkpoint; the next is due 30 days after the newest", async () => {
    const dir = tmpDir();
    const { db, nodeId } = openNodeDatabase(join(dir, "db"));
    db.query("INSERT INTO meta VALUES ('x', ?)").run("y".repeat(10_000));
    const live = LiveFiles.open(dbPathIn(join(dir, "db")));
    const base: CheckpointConfig = {
      dir: join(dir, "ckpt"),
      retention: { last: 3, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
      includeFiles: [],
      intervalMs: 30 * DAY,
      sync: false,
      maxBackgroundOperations: 1,
      periodic: false,
      startupDelayMs: 0,
      retryBackoffMs: 300_000,
      taskTimeoutMs: 3_600_000,
      compression: "none",
      maxWriteBytesPerSec: 0,
      maxPacedWalBytes: 0,
      walShipping: { enabled: false, intervalMs: 1000, synchronous: false, synchronousTimeoutMs: 10_000, remoteLagWarningMs: 60_000 },
    };
    const wal = { pause: async () => ({ resume: () => {} }) };
    try {
      // three checkpoints taken by hand first
      const first = new CheckpointManager({ config: base, nodeId, live, storagePath: join(dir, "db"), wal, logger: silentLogger });
      for (let i = 1; i <= 3; i++) {
        const run = first.request();
        const done = await first.wait(run.run);
        expect(done?.outcome).toBe("success");
        expect(done?.result?.id).toBe(i);
      }
      const newest = Date.parse(first.status().last_success!.result!.created);
      await first.stop();

      // then the periodic schedule, on the capped platform
      const p = new BunLikePlatform();
      const manager = new CheckpointManager({
        config: { ...base, periodic: true },
        nodeId,
        live,
        storagePath: join(dir, "db"),
        wal,
        logger: silentLogger,
        clock: chainedClock(p),
      });
      await manager.start();
      try {
        expect(Date.parse(manager.status().next_periodic!)).toBe(newest + 30 * DAY);
        for (let i = 0; i < 10; i++) {
          p.advance(MINUTE);
          await Bun.sleep(1);
        }
        const s = manager.status();
        expect(s.running).toBeNull();
        expect(s.successes + s.failures + s.cancellations).toBe(0);
        expect(Date.parse(s.next_periodic!)).toBe(newest + 30 * DAY);
        expect(Math.max(...p.requested)).toBeLessThanOrEqual(MAX_TIMER_MS);
      } finally {
        await manager.stop();
      }
    } finally {
      db.close();
      live.closeAfterDatabase();
    }
  }, 30_000);
});
