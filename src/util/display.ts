/** How sizes and durations are shown to operators. */

/** Decimal units with one decimal, as the listing format wants: "85.9 GB". */
export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(s % 3600 === 0 ? 0 : 1)} h`;
}

/** RFC 3339 UTC to the second: 2025-07-02T00:25:48Z. */
export function formatTime(iso: string): string {
  return `${new Date(iso).toISOString().slice(0, 19)}Z`;
}
