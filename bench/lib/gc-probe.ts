/**
 * `bun bench/lib/gc-probe.ts STORE_DIR`: one garbage collection of a local store (as the node
 * runs it after retention, with every manifest's blocks looked at), in a process of its own so
 * that its peak RSS can be read by GNU time. Prints the result as JSON.
 */
import { collectGarbage } from "../../src/store/gc.ts";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: bun bench/lib/gc-probe.ts STORE_DIR");
  process.exit(2);
}
const t0 = performance.now();
const r = await collectGarbage(dir, { minLiveFraction: 0.5, sync: false, checkpointsRemoved: true });
console.log(JSON.stringify({ ...r, renamed: r.renamed?.length ?? 0, ms: performance.now() - t0 }));
