import { defineCommand } from "citty";
import { CHECKPOINT_ROUTES } from "../../../admin/protocol.ts";
import type { CheckpointRun } from "../../../checkpoint/manager.ts";
import { adminClient } from "../context.ts";

export default defineCommand({
  meta: { name: "cancel", description: "Stop the running checkpoint; nothing of it stays listed" },
  async run() {
    const r = await adminClient().request<{ cancelled: CheckpointRun | null }>("POST", CHECKPOINT_ROUTES.cancel, undefined, { timeoutMs: 60_000 });
    process.stdout.write(r.cancelled ? `Checkpoint into ${r.cancelled.dir} cancelled; nothing of it was kept\n` : "No checkpoint is running\n");
  },
});
