/**
 * "Data API access control": what `rest_api` (bearer tokens with scopes) costs a PUT, against
 * the same build without it, measured in one run. Two nodes on 127.0.0.1 (plain HTTP, so that
 * only the token check differs), one with a token file of 100 tokens; ROUNDS rounds, each
 * PUTting COUNT new 4 KiB blobs at 16 in flight into one node and then the other (the order
 * alternating): on / off of the median throughputs (target: within 5%, ≥ 0.95).
 */
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { putBlob, runLoad } from "./load.ts";
import { ensureBinary, type RunningNode, withNode } from "./node.ts";
import { met, num, ratio, table } from "./report.ts";
import type { Section } from "./section.ts";
import { median } from "./stats.ts";
import { benchScale, CELL_TIME_CAP_MS, randomBodies } from "./workload.ts";

const ROUNDS = 9;
const TOKENS = 100;
const TARGET = 0.95;

async function round(node: RunningNode, tag: string, bodies: Uint8Array[], token?: string): Promise<number> {
  const r = await runLoad({ count: bodies.length, concurrency: 16, timeCapMs: CELL_TIME_CAP_MS * 2, request: (i) => putBlob(node.url, `${tag}-${i}`, bodies[i]!, token) });
  if (r.failed > 0) throw new Error(`${tag}: ${r.failed} PUTs failed: ${r.firstFailure}`);
  return r.okIndices.length / (r.elapsedMs / 1000);
}

export const accessSection: Section = {
  title: "Data API access control",
  async run(ctx) {
    await ensureBinary(ctx.log);
    const count = Math.max(500, Math.round(3000 * benchScale()));
    const dirOff = ctx.tmp.make("cairn-bench-auth-off-");
    const dirOn = ctx.tmp.make("cairn-bench-auth-on-");
    const tokens = Array.from({ length: TOKENS }, (_, i) => `bench-token-${String(i).padStart(4, "0")}-${crypto.randomUUID()}`);
    const file = join(dirOn, "api.tokens");
    writeFileSync(file, tokens.map((t, i) => `${t} ${i === TOKENS - 1 ? "read,write" : "read"}`).join("\n"));
    chmodSync(file, 0o600);
    // the token that may write is the last one in the file
    const token = tokens[TOKENS - 1]!;
    const off: number[] = [];
    const on: number[] = [];
    await withNode(dirOff, async (a) =>
      withNode(
        dirOn,
        async (b) => {
        ctx.log(`access: warm-up`);
        await round(a, "warm", randomBodies(200, 4096));
        await round(b, "warm", randomBodies(200, 4096), token);
        for (let r = 0; r < ROUNDS; r++) {
          const bodies = randomBodies(count, 4096);
          const order = r % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const);
          for (const side of order) {
            const rate = side === "off" ? await round(a, `r${r}`, bodies) : await round(b, `r${r}`, bodies, token);
            (side === "off" ? off : on).push(rate);
            ctx.log(`access: round ${r + 1}/${ROUNDS} auth ${side}: ${num(rate)} PUT/s`);
          }
        }
        },
        `rest_api:\n  tokens_file: ${file}\n`,
      ),
    );
    const x = median(on) / median(off);
    return [
      `Two nodes of the same build on 127.0.0.1 (plain HTTP), one with \`rest_api.tokens_file\` of ${TOKENS} tokens (the request's token is the last one in the file); ${ROUNDS} rounds of ${count} new 4 KiB PUTs at 16 in flight into each, alternating which goes first.`,
      "",
      table(
        [{ header: "figure" }, { header: "auth off", align: "right" }, { header: "auth on", align: "right" }, { header: "on / off", align: "right" }, { header: "target", align: "right" }, { header: "met", align: "right" }],
        [["PUT 4 KiB × 16, median of rounds", `${num(median(off))}/s`, `${num(median(on))}/s`, ratio(x), `≥ ${TARGET}`, met(x >= TARGET)]],
      ),
      "",
      `Rounds (PUT/s): off ${off.map(num).join(", ")}; on ${on.map(num).join(", ")}.`,
    ].join("\n");
  },
};
