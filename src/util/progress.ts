/**
 * The one progress reporter: a bar with bytes done, rate and time left, redrawn in place on a
 * terminal; a plain line every few seconds otherwise (logs, journald, a pipe). Used by the
 * command layer; domain code only calls an onProgress(done, total) callback.
 */
import { formatBytes } from "./display.ts";

export interface ProgressReporter {
  update(done: number, total: number): void;
  /** Finish the line (terminal) and print nothing more. */
  end(): void;
}

export function createProgress(label: string, opts: { stream?: NodeJS.WriteStream; tty?: boolean; everyMs?: number } = {}): ProgressReporter {
  const stream = opts.stream ?? process.stderr;
  const tty = opts.tty ?? Boolean(stream.isTTY);
  const everyMs = opts.everyMs ?? (tty ? 100 : 5000);
  const started = performance.now();
  let last = 0;
  let drawn = false;
  let startDone: number | undefined;
  const render = (done: number, total: number) => {
    const secs = (performance.now() - started) / 1000;
    const rate = secs > 0 ? (done - (startDone ?? done)) / secs : 0;
    const left = rate > 0 ? (total - done) / rate : Number.NaN;
    const pct = total > 0 ? Math.min(100, (100 * done) / total) : 100;
    const eta = Number.isFinite(left) ? `${formatSeconds(left)} left` : "";
    const text = `${formatBytes(done)} / ${formatBytes(total)} ${pct.toFixed(0)}% ${formatBytes(rate)}/s ${eta}`.trim();
    if (tty) {
      const width = 24;
      const filled = Math.round((pct / 100) * width);
      stream.write(`\r\u001b[K${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${text}`);
      drawn = true;
    } else stream.write(`${label}: ${text}\n`);
  };
  return {
    update(done, total) {
      // the rate counts from the first report (a resumed restore starts part-way)
      startDone ??= done;
      const now = performance.now();
      if (now - last < everyMs && done < total) return;
      last = now;
      render(done, total);
    },
    end() {
      if (tty && drawn) stream.write("\n");
    },
  };
}

function formatSeconds(s: number): string {
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}
