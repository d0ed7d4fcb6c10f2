/**
 * The checkpoint's I/O pacer (util/io-pressure.ts) on a fake clock: a fixed ceiling holds,
 * an idle node is not waited for, slow commits halve the rate and quiet ones raise it again.
 */
import { describe, expect, test } from "bun:test";
import { CommitPressure, IoPacer, resetWalLimitReached, walLimitReached } from "../../src/util/io-pressure.ts";

const MiB = 1024 * 1024;

/** A fake clock shared by the node's side (which reads Date.now()) and the pacer. */
function fakeTime(start = 1_000_000) {
  let t = start;
  const realNow = Date.now;
  return {
    now: () => t,
    sleep: (ms: number) => {
      t += ms;
    },
    advance: (ms: number) => {
      t += ms;
    },
    /** Run `f` with Date.now() on this clock (CommitPressure stamps commits with it). */
    at<T>(f: () => T): T {
      Date.now = () => t;
      try {
        return f();
      } finally {
        Date.now = realNow;
      }
    },
  };
}

describe("I/O pacer", () => {
  test("a fixed ceiling: bytes go no faster than it, whatever the node does", () => {
    const clock = fakeTime();
    const pacer = new IoPacer(undefined, { maxBytesPerSec: 10 * MiB, now: clock.now, sleep: clock.sleep });
    const t0 = clock.now();
    for (let i = 0; i < 50; i++) pacer.account(MiB);
    // 50 MiB at 10 MiB/s: 5 s, the first MiB free
    expect(clock.now() - t0).toBeGreaterThanOrEqual(4900);
    expect(clock.now() - t0).toBeLessThanOrEqual(5000);
  });

  test("no commits lately: no waiting at all", () => {
    const clock = fakeTime();
    const pressure = new CommitPressure();
    const pacer = new IoPacer(pressure.buffer, { maxBytesPerSec: 0, now: clock.now, sleep: clock.sleep });
    const t0 = clock.now();
    for (let i = 0; i < 100; i++) {
      pacer.account(8 * MiB);
      clock.advance(1);
    }
    expect(clock.now() - t0).toBe(100);
    expect(pacer.currentRate).toBe(Number.POSITIVE_INFINITY);
  });

  test("commits that ended before the work began are not waited for", () => {
    const clock = fakeTime();
    const pressure = new CommitPressure();
    for (let i = 0; i < 10; i++) {
      clock.at(() => pressure.note(2));
      clock.advance(20);
    }
    // the writes an operator checkpoints right after: the last commit a moment before the pacer
    const pacer = new IoPacer(pressure.buffer, { maxBytesPerSec: 0, now: clock.now, sleep: clock.sleep });
    const t0 = clock.now();
    for (let i = 0; i < 50; i++) {
      pacer.account(8 * MiB);
      clock.advance(5);
    }
    expect(clock.now() - t0).toBe(250);
    expect(pacer.currentRate).toBe(Number.POSITIVE_INFINITY);
    // and once clients write again, beside it, it holds back
    clock.at(() => pressure.note(2));
    clock.advance(101);
    pacer.account(MiB);
    expect(pacer.currentRate).toBeLessThan(Number.POSITIVE_INFINITY);
  });

  test("commits slower than usual halve the rate; quiet intervals raise it", () => {
    const clock = fakeTime();
    const pressure = new CommitPressure();
    // the usual: 2 ms commits, a few every interval
    for (let i = 0; i < 40; i++) {
      clock.at(() => pressure.note(2));
      clock.advance(30);
    }
    const pacer = new IoPacer(pressure.buffer, { maxBytesPerSec: 0, now: clock.now, sleep: clock.sleep });
    const rates: number[] = [];
    const interval = (commitMs: number) => {
      clock.at(() => pressure.note(commitMs));
      clock.advance(101);
      pacer.account(64 * 1024);
      rates.push(pacer.currentRate);
    };
    interval(2);
    const start = rates[0]!;
    // slow commits: the rate halves each interval, to a floor
    for (let i = 0; i < 6; i++) interval(40);
    expect(rates[1]).toBeLessThan(start);
    const floor = rates.at(-1)!;
    expect(floor).toBeGreaterThan(0);
    for (let i = 2; i <= 6; i++) expect(rates[i]).toBe(Math.max(floor, rates[i - 1]! / 2));
    // quiet again: it climbs back
    for (let i = 0; i < 10; i++) interval(2);
    expect(rates.at(-1)!).toBeGreaterThan(floor * 4);
  });

  test("once the WAL passes max_paced_wal_bytes it stops giving way for the rest of the work, and says how large the WAL was; the fixed ceiling still holds", () => {
    const clock = fakeTime();
    const pressure = new CommitPressure();
    for (let i = 0; i < 40; i++) {
      clock.at(() => pressure.note(2));
      clock.advance(30);
    }
    resetWalLimitReached(pressure.buffer);
    const pacer = new IoPacer(pressure.buffer, { maxBytesPerSec: 0, maxPacedWalBytes: 100 * MiB, now: clock.now, sleep: clock.sleep });
    const unlimited = new IoPacer(pressure.buffer, { maxBytesPerSec: 0, now: clock.now, sleep: clock.sleep });
    const capped = new IoPacer(pressure.buffer, { maxBytesPerSec: 10 * MiB, maxPacedWalBytes: 100 * MiB, now: clock.now, sleep: clock.sleep });
    const interval = (walBytes: number) => {
      clock.at(() => {
        pressure.note(40);
        pressure.noteWal(walBytes);
      });
      clock.advance(101);
      for (const p of [pacer, unlimited, capped]) p.account(64 * 1024);
    };
    // clients write and the WAL is under the limit: it gives way
    interval(50 * MiB);
    interval(90 * MiB);
    expect(pacer.currentRate).toBeLessThan(Number.POSITIVE_INFINITY);
    expect(walLimitReached(pressure.buffer)).toBe(0);
    // past it: no more giving way, even if the WAL were to shrink again
    interval(120 * MiB);
    expect(pacer.currentRate).toBe(Number.POSITIVE_INFINITY);
    expect(walLimitReached(pressure.buffer)).toBe(120 * MiB);
    interval(10 * MiB);
    expect(pacer.currentRate).toBe(Number.POSITIVE_INFINITY);
    // without a limit it goes on giving way; a fixed ceiling is kept whatever the WAL
    expect(unlimited.currentRate).toBeLessThan(Number.POSITIVE_INFINITY);
    expect(capped.currentRate).toBe(10 * MiB);
    resetWalLimitReached(pressure.buffer);
    expect(walLimitReached(pressure.buffer)).toBe(0);
  });
});
