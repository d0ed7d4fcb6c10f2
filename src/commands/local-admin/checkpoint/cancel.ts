import { defineCommand } from "citty";
import { CHECKPOINT_ROUTES } from "../../../admin/protocol.ts";
import type { CheckpointRun } from "../../../checkpoint/run.ts";
import { adminClient } from "../context.ts";

export default defineCommand({
  meta: { name: "cancel", description: "Stop the running checkpoint; nothing of it stays listed" },
  async run() {
    const r = await adminClient().request<{ cancelled: CheckpointRun | null }>("POST", CHECKPOINT_ROUTES.cancel, undefined, { timeoutMs: 60_000 });
    const run = r.cancelled;
    if (!run) process.stdout.write("No checkpoint is running\n");
    else if (run.outcome === "cancelled") process.stdout.write(`Checkpoint into ${run.dir} cancelled; nothing of it was kept\n`);
    else if (run.outcome === "success") process.stdout.write(`Checkpoint ${run.result?.id} into ${run.dir} had already completed; nothing was cancelled\n`);
    else process.stdout.write(`The checkpoint into ${run.dir} had already failed (${run.error ?? "unknown error"}); nothing was cancelled\n`);
  },
});
