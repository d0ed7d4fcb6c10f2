/**
 * The node's logger, backed by consola: consola's fancy reporter on a terminal, plain
 * uncoloured lines ("<time> <LEVEL> <message>") otherwise, which journald and log files want.
 * The level can be changed while the node runs.
 */
import { type ConsolaInstance, type ConsolaReporter, createConsola, type LogObject } from "consola";
import { formatWithOptions } from "node:util";
import type { LevelledLogger, LogLevel } from "../log.ts";

const CONSOLA_LEVEL: Record<LogLevel, number> = { error: 0, warn: 1, info: 3, debug: 4, trace: 5 };

const plainReporter: ConsolaReporter = {
  log(obj: LogObject) {
    const type = obj.type === "log" || obj.type === "success" || obj.type === "ready" || obj.type === "start" ? "info" : obj.type;
    const msg = formatWithOptions({ colors: false, breakLength: Infinity }, ...(obj.args as unknown[]));
    process.stderr.write(`${obj.date.toISOString()} ${type.toUpperCase().padEnd(5)} ${msg}\n`);
  },
};

export function createLogger(level: LogLevel, opts: { tty?: boolean } = {}): LevelledLogger {
  const tty = opts.tty ?? Boolean(process.stderr.isTTY);
  let current = level;
  const c: ConsolaInstance = createConsola({
    level: CONSOLA_LEVEL[level],
    // `fancy` is read by consola's createConsola but missing from its option type
    ...({ fancy: tty } as object),
    ...(tty ? {} : { reporters: [plainReporter] }),
    stdout: process.stderr,
    stderr: process.stderr,
    formatOptions: { date: true, colors: tty },
  });
  return {
    trace: (m, ...a) => c.trace(m, ...a),
    debug: (m, ...a) => c.debug(m, ...a),
    info: (m, ...a) => c.info(m, ...a),
    warn: (m, ...a) => c.warn(m, ...a),
    error: (m, ...a) => c.error(m, ...a),
    level: () => current,
    setLevel(l) {
      current = l;
      c.level = CONSOLA_LEVEL[l];
    },
  };
}

/** A warning of a one-shot command, on stderr. */
export function warn(message: string): void {
  process.stderr.write(`warning: ${message}\n`);
}
