import { defineCommand } from "citty";
import { CHECKPOINT_ROUTES, type CheckpointCreateRequest } from "../../../admin/protocol.ts";
import type { CheckpointRun, CheckpointStatus } from "../../../checkpoint/run.ts";
import { CairnError } from "../../../errors.ts";
import { locationOf } from "../../../store/open.ts";
import { formatBytes } from "../../../util/display.ts";
import { adminClient } from "../context.ts";

export default defineCommand({
  meta: {
    name: "create",
    description: "Ask the node for a checkpoint and wait until it is complete (it runs inside the node and goes on if this command is interrupted)",
  },
  args: {
    path: { type: "string", valueHint: "DIR", description: "Checkpoint directory, s3://BUCKET/PREFIX, or an archive (.tar, .tar.gz, .tar.zst) (default: the node's db_checkpoint_dir)" },
    "delay-secs": { type: "string", valueHint: "N", description: "Start after N seconds" },
    detach: { type: "boolean", description: "Return as soon as the node has started it" },
  },
  async run({ args }) {
    const client = adminClient();
    const body: CheckpointCreateRequest = {};
    if (args.path) body.path = locationOf(args.path);
    if (args["delay-secs"] !== undefined) {
      const n = Number(args["delay-secs"]);
      if (!(n >= 0) || !Number.isFinite(n)) throw new CairnError("E_USAGE", `--delay-secs must be a number >= 0, got ${JSON.stringify(args["delay-secs"])}`, {});
      body.delay_secs = n;
    }
    const run = await client.request<CheckpointRun>("POST", CHECKPOINT_ROUTES.create, body, { timeoutMs: 30_000 });
    if (args.detach) {
      const when = body.delay_secs ? ` in ${body.delay_secs} s` : "";
      process.stdout.write(`Checkpoint started${when} into ${run.dir}; it runs inside the node (follow it with: checkpoint status)\n`);
      return;
    }
    process.on("SIGINT", () => {
      process.stderr.write("\nStopped waiting; the checkpoint goes on inside the node (follow it with: checkpoint status, stop it with: checkpoint cancel)\n");
      process.exit(130);
    });
    for (;;) {
      const s = await client.request<CheckpointStatus>("GET", CHECKPOINT_ROUTES.status, undefined, { timeoutMs: 30_000 });
      const done = s.running?.run === run.run ? undefined : s.last?.run === run.run ? s.last : undefined;
      if (done) return report(done);
      if (s.running?.run !== run.run) throw new CairnError("E_ADMIN", "the node no longer knows this checkpoint (was it restarted?)");
      await Bun.sleep(200);
    }
  },
});

function report(run: CheckpointRun): void {
  if (run.outcome === "success" && run.result) {
    const r = run.result;
    process.stdout.write(`Checkpoint ${r.id} created in ${(r.durationMs / 1000).toFixed(1)} s (${formatBytes(r.logicalBytes)}, ${formatBytes(r.newBytes)} new)\n`);
    if (run.export) {
      const x = run.export;
      process.stdout.write(`Exported to ${x.output}: ${formatBytes(x.archive_bytes)}, ${x.compression === "none" ? "uncompressed" : x.compression}\n`);
    }
    if (run.push) {
      const p = run.push;
      process.stdout.write(`Copied to ${run.dir}: ${p.uploaded_files} file(s), ${formatBytes(p.uploaded_bytes)} uploaded, ${p.skipped_files} already there\n`);
    }
    return;
  }
  if (run.outcome === "cancelled") throw new CairnError("E_CANCELLED", "the checkpoint was cancelled; nothing of it was kept");
  throw new CairnError("E_CHECKPOINT", `the checkpoint failed: ${run.error ?? "unknown error"}`, { hint: "see the node's log" });
}
