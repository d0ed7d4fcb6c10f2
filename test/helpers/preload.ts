/**
 * bun test preload: the end-to-end tests drive the compiled binary, so make sure dist/cairn
 * exists and is newer than every source file; build it if not. And every test gets 20 s unless
 * it sets its own limit (end-to-end tests start the binary): bun test 1.4.5 does not read a
 * `timeout` from bunfig.toml, so it is set here, for every file.
 */
import { setDefaultTimeout } from "bun:test";
import { binaryStaleness, REPO_ROOT } from "../../scripts/binary.ts";

setDefaultTimeout(20_000);

const stale = binaryStaleness();
if (stale) {
  console.error(`dist/cairn is ${stale}: running bun run build`);
  const r = Bun.spawnSync(["bun", "run", "build"], { cwd: REPO_ROOT, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("bun run build failed; the end-to-end tests need dist/cairn");
}
