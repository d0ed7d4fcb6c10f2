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
 * Named pause points, for tests that must act while a process is at a given step: when
 * CAIRN_TEST_PAUSE_POINT names this point, the process says so on stderr
 * ("cairn: test pause point NAME reached") and waits there: until the file named by
 * CAIRN_TEST_PAUSE_RELEASE_FILE exists (at most a minute), or else CAIRN_TEST_PAUSE_MS
 * (default 3000). Workers may pause too. Several points may be named, comma-separated; each
 * then waits for a release file of its own, the named file's path with "-" and the point's
 * name (":" as "-") appended.
 */
export const PAUSE_POINT_ENV = "CAIRN_TEST_PAUSE_POINT";
export const PAUSE_RELEASE_ENV = "CAIRN_TEST_PAUSE_RELEASE_FILE";

/** The release file of pause point `name` when several are named (see pausePoint). */
export function pauseReleaseFile(releaseFile: string, name: string): string {
  return `${releaseFile}-${name.replaceAll(":", "-")}`;
}

export async function pausePoint(name: string): Promise<void> {
  const named = process.env[PAUSE_POINT_ENV];
  if (!named) return;
  const names = named.split(",");
  if (!names.includes(name)) return;
  process.stderr.write(`cairn: test pause point ${name} reached\n`);
  const release = process.env[PAUSE_RELEASE_ENV];
  if (release) {
    const file = names.length > 1 ? pauseReleaseFile(release, name) : release;
    const deadline = Date.now() + 60_000;
    while (!(await Bun.file(file).exists()) && Date.now() < deadline) await Bun.sleep(20);
    return;
  }
  await Bun.sleep(Number(process.env.CAIRN_TEST_PAUSE_MS ?? 3000));
}

/** A checkpoint's pack size, in bytes, for tests that need packs filled and closed within a small checkpoint (see create.ts). */
export const PACK_TARGET_ENV = "CAIRN_TEST_PACK_TARGET_BYTES";

/** Restore's progress flush interval, in bytes, for tests of small restores (see rebuild.ts). */
export const FLUSH_EVERY_ENV = "CAIRN_TEST_FLUSH_EVERY_BYTES";

/**
 * A fault for the tests of the check behind the change tracking: the tracker hands each
 * checkpoint no changed page at all, as a tracking that missed every change would (see
 * engine/change-tracker.ts; create.ts's sample must catch it).
 */
export const TRACKER_FORGETS_ENV = "CAIRN_TEST_TRACKER_FORGETS";
