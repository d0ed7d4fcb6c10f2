import { defineCommand } from "citty";
import { loadConfigFile } from "../config/load.ts";
import { CairnError } from "../errors.ts";
import { PERIOD_RULES, pruneLocalStore, type RetentionPolicy } from "../store/retention.ts";
import { formatBytes } from "../util/display.ts";
import { keyFileArg, keyFilesOf } from "./_args.ts";
import { createLogger } from "./_logger.ts";

const RULES = ["last", ...PERIOD_RULES] as const;

export default defineCommand({
  meta: { name: "prune-db-checkpoint", description: "Show (--dry-run) or apply a retention policy to a checkpoint directory no node is running on" },
  args: {
    dir: { type: "positional", valueHint: "DIR", required: true, description: "Checkpoint directory (db_checkpoint_dir)" },
    "dry-run": { type: "boolean", description: "Only show what the policy keeps (and why) and what it would remove" },
    config: { type: "string", valueHint: "FILE", description: "Take the policy from this node config (checkpoint_config.retention / max_db_checkpoints)" },
    ...Object.fromEntries(RULES.map((r) => [`keep-${r}`, { type: "string", valueHint: "N", description: `restic's --keep-${r}` }])) as Record<`keep-${(typeof RULES)[number]}`, { type: "string"; valueHint: string; description: string }>,
    ...keyFileArg,
    json: { type: "boolean", description: "Print the decisions as JSON" },
  },
  async run({ args }) {
    const policy = policyOf(args);
    const logger = createLogger("warn");
    const r = await pruneLocalStore(args.dir, policy, { dryRun: Boolean(args["dry-run"]), logger, keyFile: keyFilesOf(args)[0] });
    if (args.json) {
      process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      return;
    }
    const lines = [`Policy: ${r.policy}`];
    for (const d of [...r.checkpoints].reverse()) {
      lines.push(`  Checkpoint ${d.id}, Created: ${d.created ?? "unknown"}: ${d.keep ? `keep (${d.reasons.join(", ")})` : r.dry_run ? "would remove" : "removed"}`);
    }
    if (r.checkpoints.length === 0) lines.push("  (no checkpoints)");
    if (r.dry_run) lines.push(r.removed.length > 0 ? `Would remove ${r.removed.length} checkpoint(s): ${r.removed.join(", ")} (dry run: nothing was changed)` : "Nothing to remove (dry run)");
    else lines.push(r.removed.length > 0 ? `Removed ${r.removed.length} checkpoint(s): ${r.removed.join(", ")}; freed ${formatBytes(r.freed_bytes ?? 0)}` : "Nothing to remove");
    process.stdout.write(`${lines.join("\n")}\n`);
  },
});

function policyOf(args: Record<string, unknown>): RetentionPolicy {
  const given = RULES.filter((r) => args[`keep-${r}`] !== undefined);
  if (given.length > 0 && args.config) throw new CairnError("E_USAGE", "give the policy with --keep-* or --config, not both");
  if (given.length > 0) {
    const p: RetentionPolicy = { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0 };
    for (const r of given) {
      const v = String(args[`keep-${r}`]);
      if (!/^\d+$/.test(v)) throw new CairnError("E_USAGE", `--keep-${r}: expected a whole number >= 0, got ${JSON.stringify(v)}`);
      p[r] = Number(v);
    }
    return p;
  }
  if (typeof args.config === "string") return loadConfigFile(args.config).checkpoint.retention;
  throw new CairnError("E_USAGE", "give the policy: --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly N, or --config FILE");
}
