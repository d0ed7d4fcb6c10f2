/** Latency percentiles and throughput figures. */
import { MiB } from "./workload.ts";

/** Nearest-rank percentile (p in 0..100) of unsorted samples; NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = Float64Array.from(samples).sort();
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export interface Throughput {
  perSec: number;
  mibPerSec: number;
}

export function throughput(ops: number, bytesPerOp: number, elapsedMs: number): Throughput {
  const secs = elapsedMs / 1000;
  if (secs <= 0) return { perSec: Number.NaN, mibPerSec: Number.NaN };
  return { perSec: ops / secs, mibPerSec: (ops * bytesPerOp) / MiB / secs };
}

/** The median of unsorted samples (the mean of the middle two for an even count); NaN when there are none. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
