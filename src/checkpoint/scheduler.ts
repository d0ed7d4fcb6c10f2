/**
 * The periodic checkpoint schedule (`periodic_db_checkpoints`): the first run an interval after
 * the latest checkpoint but not before the start-up delay, then an interval after each
 * checkpoint made, or a back-off after a failure. Timers come from the Clock, so tests drive
 * it with a fake one (and timers of any length work: util/clock.ts).
 */
import type { CheckpointConfig } from "../config/config.ts";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Clock } from "../util/clock.ts";
import { formatDuration } from "../util/display.ts";
import type { CheckpointRun } from "./run.ts";

/** The first periodic run: an interval after the latest checkpoint, but not before the start-up delay. */
export function firstPeriodicRun(latestCreatedMs: number | undefined, nowMs: number, config: Pick<CheckpointConfig, "intervalMs" | "startupDelayMs">): number {
  return Math.max(latestCreatedMs !== undefined ? latestCreatedMs + config.intervalMs : nowMs, nowMs + config.startupDelayMs);
}

/** After a periodic run: an interval after the checkpoint it made, or a back-off after a failure. */
export function nextPeriodicRun(
  done: CheckpointRun | undefined,
  nowMs: number,
  config: Pick<CheckpointConfig, "intervalMs" | "retryBackoffMs">,
): number {
  if (done?.outcome === "success" && done.result) return Math.max(Date.parse(done.result.created) + config.intervalMs, nowMs);
  return nowMs + config.retryBackoffMs;
}

export interface ScheduleDeps {
  config: CheckpointConfig;
  clock: Clock;
  logger: Logger;
  /** Start a periodic checkpoint (throws if one cannot start now, e.g. one runs) and wait for its end. */
  run(): Promise<CheckpointRun | undefined>;
}

export class PeriodicSchedule {
  private nextAt?: number;
  private timer?: unknown;
  private stopped = false;

  constructor(private readonly deps: ScheduleDeps) {}

  /** When the next run is due, or undefined while none is scheduled (one runs, or stopped). */
  get next(): number | undefined {
    return this.nextAt;
  }

  start(latestCreatedMs: number | undefined): number {
    const first = firstPeriodicRun(latestCreatedMs, this.deps.clock.now(), this.deps.config);
    this.schedule(first);
    return first;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.deps.clock.clearTimeout(this.timer);
    this.nextAt = undefined;
  }

  private schedule(at: number): void {
    if (this.stopped) return;
    const { clock } = this.deps;
    if (this.timer !== undefined) clock.clearTimeout(this.timer);
    this.nextAt = at;
    this.timer = clock.setTimeout(() => void this.tick(), Math.max(0, at - clock.now()));
  }

  private async tick(): Promise<void> {
    const { config, clock, logger } = this.deps;
    this.timer = undefined;
    this.nextAt = undefined;
    if (this.stopped) return;
    let done: CheckpointRun | undefined;
    try {
      done = await this.deps.run();
    } catch (e) {
      logger.info(`periodic checkpoint postponed: ${errorMessage(e)}`);
      this.schedule(clock.now() + config.retryBackoffMs);
      return;
    }
    this.schedule(nextPeriodicRun(done, clock.now(), config));
    if (done?.outcome !== "success") logger.warn(`periodic checkpoint did not succeed; retrying in ${formatDuration(config.retryBackoffMs)}`);
  }
}
