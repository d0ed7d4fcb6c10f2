import { defineCommand } from "citty";
import type { LogLevelReply } from "../../admin/protocol.ts";
import { ADMIN_ROUTES } from "../../admin/protocol.ts";
import { LOG_LEVELS } from "../../log.ts";
import { adminClient } from "./context.ts";

export default defineCommand({
  meta: { name: "log-level", description: "Change the running node's log level at once (no restart)" },
  args: {
    level: { type: "enum", options: [...LOG_LEVELS], required: true, description: "The new level" },
  },
  async run({ args }) {
    const reply = await adminClient().request<LogLevelReply>("PUT", ADMIN_ROUTES.logLevel, { level: args.level }, { timeoutMs: 10_000 });
    process.stdout.write(`Log level set to ${reply.level}${reply.previous ? ` (was ${reply.previous})` : ""}\n`);
  },
});
