/**
 * Shared by the tests and the bench: where the compiled binary is, whether it is older than
 * what it is built from, and a free port on 127.0.0.1.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

export const REPO_ROOT = join(import.meta.dir, "..");
export const BINARY = join(REPO_ROOT, "dist", "cairn");

const BUILD_INPUTS = ["src", "scripts/build.ts", "package.json", "bun.lock"];

function newestMtimeMs(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let t = st.mtimeMs;
  for (const e of readdirSync(path)) t = Math.max(t, newestMtimeMs(join(path, e)));
  return t;
}

/** Why dist/cairn needs building ("missing", "older than its sources"), or undefined. */
export function binaryStaleness(): string | undefined {
  if (!existsSync(BINARY)) return "missing";
  const newest = Math.max(...BUILD_INPUTS.map((p) => newestMtimeMs(join(REPO_ROOT, p))));
  return statSync(BINARY).mtimeMs < newest ? "older than its sources" : undefined;
}

/** A port that was free a moment ago: bind port 0 on 127.0.0.1, read it, close. */
export function freePort(): number {
  const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = listener.port;
  listener.stop(true);
  return port;
}
