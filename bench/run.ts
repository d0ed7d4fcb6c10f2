/**
 * `bun run bench`: cairn's benchmark. Runs each section in order, then writes the results to
 * bench/results.md (overwritten) and prints them on stdout; progress goes to stderr.
 *
 * A section is a titled function returning markdown (lib/section.ts); add new measurements by
 * appending to SECTIONS. Temp dirs (all under /tmp) are removed and nodes are stopped with
 * SIGTERM at the end, on failure, and on SIGINT/SIGTERM. The exit code is non-zero if any
 * section failed, any request failed, or a node did not exit with 0.
 *
 * Environment: CAIRN_BENCH_SCALE=0.1 shrinks every request count (quick smoke runs);
 * CAIRN_BENCH_ONLY=checkpoints runs only the sections whose title contains that text
 * (case-insensitive; comma-separated for several); CAIRN_BENCH_SIZES_GB=1,16 sets the database
 * sizes of the scale section (GiB).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { checkpointsSection } from "./lib/checkpoints.ts";
import { nodePutGetSection } from "./lib/node-put-get.ts";
import { stopAllNodes } from "./lib/node.ts";
import { rawSqliteSection } from "./lib/raw-sqlite.ts";
import { offHostSection } from "./lib/offhost.ts";
import { restoreSection } from "./lib/restore.ts";
import { scaleSection } from "./lib/scale.ts";
import { pitrSection } from "./lib/pitr.ts";
import { encryptionSection } from "./lib/encryption.ts";
import { accessSection } from "./lib/access.ts";
import { machineFacts, renderFacts } from "./lib/report.ts";
import { createContext, type Section } from "./lib/section.ts";
import { installCleanup, TempDirs } from "./lib/tmp.ts";
import { benchScale } from "./lib/workload.ts";

const SECTIONS: Section[] = [nodePutGetSection, rawSqliteSection, checkpointsSection, restoreSection, offHostSection, scaleSection, pitrSection, encryptionSection, accessSection];

/** The sections this run measures: all, or those CAIRN_BENCH_ONLY names. */
function selectedSections(): Section[] {
  const only = process.env.CAIRN_BENCH_ONLY?.trim();
  if (!only) return SECTIONS;
  const wanted = only.toLowerCase().split(",").map((w) => w.trim()).filter(Boolean);
  const picked = SECTIONS.filter((s) => wanted.some((w) => s.title.toLowerCase().includes(w)));
  if (picked.length === 0) throw new Error(`CAIRN_BENCH_ONLY=${JSON.stringify(only)} matches no section (${SECTIONS.map((s) => s.title).join("; ")})`);
  return picked;
}

const RESULTS_FILE = join(import.meta.dir, "results.md");

function log(msg: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

const tmp = new TempDirs();

const cleanUp = installCleanup(tmp, log, stopAllNodes);

async function main(): Promise<number> {
  const ctx = createContext(tmp, log);
  const started = performance.now();
  const facts = machineFacts();
  const scale = benchScale();
  const parts: string[] = ["# cairn benchmark", "", renderFacts(facts)];
  if (scale !== 1) parts.push(`- CAIRN_BENCH_SCALE: ${scale} (request counts scaled; not comparable with full runs)`);
  const sections = selectedSections();
  if (sections.length !== SECTIONS.length) parts.push(`- CAIRN_BENCH_ONLY: ${sections.map((s) => s.title).join("; ")} (other sections not run)`);

  try {
    for (const section of sections) {
      log(`section: ${section.title}`);
      const t0 = performance.now();
      const body = await section.run(ctx);
      log(`section done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      parts.push("", `## ${section.title}`, "", body);
    }
  } finally {
    await cleanUp();
  }

  const total = ((performance.now() - started) / 1000).toFixed(0);
  parts.push("", `_Whole run: ${total} s._`, "");
  const markdown = parts.join("\n");
  writeFileSync(RESULTS_FILE, markdown);
  console.log(markdown);
  log(`wrote ${RESULTS_FILE}`);

  if (ctx.failures.length > 0) {
    for (const f of ctx.failures) log(`FAILED: ${f}`);
    return 1;
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (e) {
  log(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
}
