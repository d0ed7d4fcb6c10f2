/**
 * `bun run build`: one self-contained executable, dist/cairn, with every worker entry point
 * embedded (workers must be extra entry points of a compiled binary).
 */
import { WORKER_ENTRY_POINTS } from "../src/util/worker-url.ts";

const entrypoints = ["./src/main.ts", ...WORKER_ENTRY_POINTS.map((w) => `./src/${w}.ts`)];
const result = await Bun.build({
  entrypoints,
  compile: { outfile: "./dist/cairn" },
  minify: { syntax: true, whitespace: true },
  sourcemap: "none",
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built dist/cairn (${entrypoints.length} entry points)`);
