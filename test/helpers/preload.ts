/**
 * bun test preload: the end-to-end tests drive the compiled binary, so make sure dist/cairn
 * exists and is newer than every source file; build it if not.
 */
import { binaryStaleness, REPO_ROOT } from "../../scripts/binary.ts";

const stale = binaryStaleness();
if (stale) {
  console.error(`dist/cairn is ${stale}: running bun run build`);
  const r = Bun.spawnSync(["bun", "run", "build"], { cwd: REPO_ROOT, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("bun run build failed; the end-to-end tests need dist/cairn");
}
