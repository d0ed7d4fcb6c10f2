/**
 * Named crash points for the fault tests: when CAIRN_TEST_CRASH_POINT names this point, the
 * process kills itself with SIGKILL right here, as a power cut or kill -9 would. Off unless
 * that variable is set, which only the test suite does; the node logs a warning at start when
 * it is set (see node.ts), so it cannot go unnoticed in production.
 */
export const CRASH_POINT_ENV = "CAIRN_TEST_CRASH_POINT";

export function crashPoint(name: string): void {
  if (process.env[CRASH_POINT_ENV] === name) process.kill(process.pid, "SIGKILL");
}

/**
 * Named pause points, for tests that must signal a process at a given step: when
 * CAIRN_TEST_PAUSE_POINT names this point, wait CAIRN_TEST_PAUSE_MS (default 3000) here.
 */
export const PAUSE_POINT_ENV = "CAIRN_TEST_PAUSE_POINT";

export async function pausePoint(name: string): Promise<void> {
  if (process.env[PAUSE_POINT_ENV] === name) await Bun.sleep(Number(process.env.CAIRN_TEST_PAUSE_MS ?? 3000));
}

/** Restore's progress flush interval, in bytes, for tests of small restores (see rebuild.ts). */
export const FLUSH_EVERY_ENV = "CAIRN_TEST_FLUSH_EVERY_BYTES";
