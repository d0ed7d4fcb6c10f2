/**
 * Retention by count and age (src/store/retention.ts), restic's `forget` meaning: a fake clock
 * walked over a year and more of hourly checkpoints with gaps, every decision compared with the
 * rules computed independently here.
 */
import { describe, expect, test } from "bun:test";
import { decideRetention, periodOf, type RetentionPolicy } from "../../src/store/retention.ts";

const HOUR = 3_600_000;

/** A different way to name periods: ISO weeks counted from the Monday of the week holding 4 January. */
function referencePeriod(rule: string, ms: number): string {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth() + 1;
  const day = d.getUTCDate();
  const two = (n: number) => String(n).padStart(2, "0");
  if (rule === "hourly") return `${y}-${two(m)}-${two(day)}T${two(d.getUTCHours())}`;
  if (rule === "daily") return `${y}-${two(m)}-${two(day)}`;
  if (rule === "monthly") return `${y}-${two(m)}`;
  const mondayOfWeek1 = (year: number) => {
    const jan4 = Date.UTC(year, 0, 4);
    const dow = new Date(jan4).getUTCDay() || 7;
    return jan4 - (dow - 1) * 86_400_000;
  };
  const midnight = Date.UTC(y, d.getUTCMonth(), day);
  for (const year of [y + 1, y, y - 1]) {
    const start = mondayOfWeek1(year);
    if (midnight >= start) return `${year}-W${two(1 + Math.floor((midnight - start) / (7 * 86_400_000)))}`;
  }
  throw new Error("unreachable");
}

/** The rules applied independently: group by period, the newest N periods, the newest of each. */
function referenceKept(entries: { id: number; ms: number }[], p: RetentionPolicy): Set<number> {
  const kept = new Set<number>();
  const byTime = [...entries].sort((a, b) => b.ms - a.ms || b.id - a.id);
  if (p.last <= 0 && p.hourly + p.daily + p.weekly + p.monthly === 0) return new Set(entries.map((e) => e.id));
  for (const e of byTime.slice(0, p.last)) kept.add(e.id);
  for (const rule of ["hourly", "daily", "weekly", "monthly"] as const) {
    const groups = new Map<string, { id: number; ms: number }[]>();
    for (const e of entries) {
      const k = referencePeriod(rule, e.ms);
      groups.set(k, [...(groups.get(k) ?? []), e]);
    }
    const newestOf = [...groups.values()].map((g) => g.sort((a, b) => b.ms - a.ms || b.id - a.id)[0]!).sort((a, b) => b.ms - a.ms);
    for (const e of newestOf.slice(0, p[rule])) kept.add(e.id);
  }
  return kept;
}

/** Hourly checkpoints from `start` for `hours`, with pseudo-random gaps (a node down for a while). */
function hourlyWithGaps(start: number, hours: number, seed: number): { id: number; ms: number }[] {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) & 0x7fffffff), x / 0x7fffffff);
  const out: { id: number; ms: number }[] = [];
  let id = 0;
  for (let h = 0; h < hours; h++) {
    if (rnd() < 0.15) continue; // missed
    if (rnd() < 0.002) h += Math.floor(rnd() * 400); // down for days
    out.push({ id: ++id, ms: start + h * HOUR + Math.floor(rnd() * 50) * 60_000 });
  }
  return out;
}

describe("decideRetention", () => {
  test("a year and more of hourly checkpoints: every policy keeps exactly what the rules, computed independently, keep", () => {
    const start = Date.UTC(2025, 10, 20, 5);
    const entries = hourlyWithGaps(start, 420 * 24, 7);
    const policies: RetentionPolicy[] = [
      { last: 3, hourly: 0, daily: 7, weekly: 4, monthly: 0 },
      { last: 0, hourly: 24, daily: 7, weekly: 4, monthly: 12 },
      { last: 1, hourly: 0, daily: 0, weekly: 0, monthly: 100 },
      { last: 0, hourly: 0, daily: 30, weekly: 0, monthly: 0 },
      { last: 5, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
      { last: 0, hourly: 0, daily: 0, weekly: 60, monthly: 0 },
      { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0 },
    ];
    // the clock walked forward: the policy applied after each of the last 200 checkpoints
    for (const p of policies) {
      for (let upTo = entries.length - 200; upTo <= entries.length; upTo += 40) {
        const seen = entries.slice(0, upTo);
        const decisions = decideRetention(seen.map((e) => ({ id: e.id, created: new Date(e.ms).toISOString() })), p);
        const kept = new Set(decisions.filter((d) => d.keep).map((d) => d.id));
        expect({ p, upTo, kept: [...kept].sort((a, b) => a - b) }).toEqual({ p, upTo, kept: [...referenceKept(seen, p)].sort((a, b) => a - b) });
        for (const d of decisions) expect(d.keep).toBe(d.reasons.length > 0);
      }
    }
  });

  test("restic's example: keep_daily 2 keeps the newest of each of the last two days that have checkpoints", () => {
    const at = (iso: string, id: number) => ({ id, created: iso });
    const d = decideRetention([at("2026-11-28T10:00:00Z", 1), at("2026-11-30T08:00:00Z", 2), at("2026-11-30T20:00:00Z", 3), at("2026-12-01T01:00:00Z", 4), at("2026-12-01T02:00:00Z", 5)], { last: 1, hourly: 0, daily: 2, weekly: 0, monthly: 0 });
    expect(d.map((x) => [x.id, x.keep, x.reasons])).toEqual([
      [1, false, []],
      [2, false, []],
      [3, true, ["daily 2026-11-30"]],
      [4, false, []],
      [5, true, ["last 1/1", "daily 2026-12-01"]],
    ]);
  });

  test("a checkpoint whose manifest cannot be read is kept by rules that need its time", () => {
    const d = decideRetention([{ id: 1 }, { id: 2, created: "2026-12-01T00:00:00Z" }], { last: 0, hourly: 0, daily: 1, weekly: 0, monthly: 0 });
    expect(d.map((x) => [x.id, x.keep, x.reasons])).toEqual([
      [1, true, ["unreadable"]],
      [2, true, ["daily 2026-12-01"]],
    ]);
  });

  test("ISO weeks across year ends", () => {
    const w = (iso: string) => periodOf("weekly", Date.parse(iso));
    expect(w("2026-12-31T12:00:00Z")).toBe("2026-W53");
    expect(w("2027-01-03T23:00:00Z")).toBe("2026-W53");
    expect(w("2027-01-04T00:00:00Z")).toBe("2027-W01");
    expect(w("2024-12-30T00:00:00Z")).toBe("2025-W01");
    expect(w("2021-01-03T00:00:00Z")).toBe("2020-W53");
    for (let t = Date.UTC(2019, 0, 1); t < Date.UTC(2031, 0, 1); t += 86_400_000 / 3) expect(w(new Date(t).toISOString())).toBe(referencePeriod("weekly", t));
  });
});
