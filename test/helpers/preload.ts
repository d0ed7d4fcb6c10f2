/**
 * bun test preload: the end-to-end tests drive the compiled binary, so make sure dist/cairn
 * exists and is newer than every source file; build it if not.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const binary = join(root, "dist", "cairn");

function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

const sourcesChanged = Math.max(
  newest(join(root, "src")),
  statSync(join(root, "package.json")).mtimeMs,
  statSync(join(root, "bun.lock")).mtimeMs,
);
if (!existsSync(binary) || statSync(binary).mtimeMs < sourcesChanged) {
  const r = Bun.spawnSync(["bun", "run", "build"], { cwd: root, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("bun run build failed; the end-to-end tests need dist/cairn");
}
