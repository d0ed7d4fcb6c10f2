/**
 * The logger the domain modules take. The command layer backs it with consola; tests back it
 * with a silent or recording logger. Domain code never imports consola itself.
 */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  trace(msg: string, ...args: unknown[]): void;
  debug(msg: string, ...args: unknown[]): void;
  info(msg: string, ...args: unknown[]): void;
  warn(msg: string, ...args: unknown[]): void;
  error(msg: string, ...args: unknown[]): void;
}

/** A logger whose level can be changed while the node runs (admin `log-level`). */
export interface LevelledLogger extends Logger {
  level(): LogLevel;
  setLevel(level: LogLevel): void;
}

export function isLogLevel(s: unknown): s is LogLevel {
  return typeof s === "string" && (LOG_LEVELS as readonly string[]).includes(s);
}

export const silentLogger: LevelledLogger = {
  trace() {},
  debug() {},
  info() {},
  warn() {},
  error() {},
  level: () => "error",
  setLevel() {},
};
