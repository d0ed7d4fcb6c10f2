import { defineCommand } from "citty";
import { CHECKPOINT_ROUTES } from "../../../admin/protocol.ts";
import type { CheckpointRun, CheckpointStatus } from "../../../checkpoint/run.ts";
import { formatBytes, formatTime } from "../../../util/display.ts";
import { adminClient } from "../context.ts";

export default defineCommand({
  meta: { name: "status", description: "Show the running checkpoint, the last one, counters and the schedule" },
  args: { json: { type: "boolean", description: "Print the status as JSON" } },
  async run({ args }) {
    const s = await adminClient().request<CheckpointStatus>("GET", CHECKPOINT_ROUTES.status, undefined, { timeoutMs: 30_000 });
    if (args.json) {
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      return;
    }
    const out: string[] = [];
    const r = s.running;
    if (!r) out.push("No checkpoint running.");
    else if (r.state === "waiting") out.push(`Checkpoint waiting to start (requested ${formatTime(r.requested)}) into ${r.dir}`);
    else {
      const pct = r.progress.total_bytes > 0 ? ` (${Math.floor((100 * r.progress.done_bytes) / r.progress.total_bytes)}% of ${formatBytes(r.progress.total_bytes)} read)` : "";
      out.push(`Checkpoint running since ${formatTime(r.started!)} into ${r.dir}${pct}`);
    }
    if (s.last) out.push(`Last: ${describe(s.last)}`);
    if (s.last_success && s.last_success !== s.last && s.last_success.run !== s.last?.run) out.push(`Last success: ${describe(s.last_success)}`);
    out.push(`Since start: ${s.successes} succeeded, ${s.failures} failed, ${s.cancellations} cancelled`);
    out.push(`Store: ${s.store_dir} (${formatBytes(s.store_bytes)})`);
    if (s.remote) {
      const x = s.remote;
      const state = x.state === "pushing" ? "copying now" : x.state === "waiting-retry" ? `last copy FAILED (${x.consecutive_failures} in a row), retrying at ${formatTime(x.next_retry!)}` : "idle";
      out.push(`Remote: ${x.url}: ${state}; newest there: ${x.last_pushed_id ?? "none"}${x.last_success ? ` (last copied ${formatTime(x.last_success)}, ${formatBytes(x.last_uploaded_bytes)} uploaded)` : ""}`);
      if (x.last_error) out.push(`Remote error: ${x.last_error}`);
    }
    const w = s.wal_shipping;
    if (w) {
      out.push(
        `Shipping: ${w.synchronous ? "synchronous" : "asynchronous"}, chain ${w.chain}${w.chain_base ? ` (forked from ${w.chain_base.chain} at transaction ${w.chain_base.txn})` : ""}; ` +
          `shipped up to ${w.shipped_until ? formatTime(w.shipped_until) : "nothing yet"} (transaction ${w.last_shipped_txn} of ${w.last_txn}); ` +
          `${w.pending_txns} waiting, lag ${w.lag_seconds.toFixed(1)} s${w.last_error ? `; FAILING: ${w.last_error}` : ""}`,
      );
      if (w.remote) {
        out.push(`Shipping to ${w.remote.url}: transaction ${w.remote.last_shipped_txn} there, ${w.remote.pending_txns} not yet, lag ${w.remote.lag_seconds.toFixed(1)} s${w.remote.last_error ? `; FAILING: ${w.remote.last_error}` : ""}`);
      }
    }
    out.push(s.periodic ? `Periodic: on, next at ${s.next_periodic ? formatTime(s.next_periodic) : "(after the running one)"}` : "Periodic: off");
    process.stdout.write(`${out.join("\n")}\n`);
  },
});

function describe(run: CheckpointRun): string {
  if (run.outcome === "success" && run.result) {
    const x = run.result;
    return `checkpoint ${x.id} succeeded at ${formatTime(x.created)} in ${(x.durationMs / 1000).toFixed(1)} s (${formatBytes(x.logicalBytes)}, ${formatBytes(x.newBytes)} new) in ${run.dir}`;
  }
  return `${run.outcome} at ${formatTime(run.finished ?? run.requested)}${run.error ? `: ${run.error}` : ""} (${run.dir})`;
}
