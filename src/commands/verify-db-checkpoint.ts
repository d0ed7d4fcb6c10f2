import { defineCommand } from "citty";
import { holdStoreForReading, openCheckpointSource } from "../checkpoint/open.ts";
import { verifyCheckpoints } from "../checkpoint/verify.ts";
import { CairnError } from "../errors.ts";
import { formatBytes } from "../util/format.ts";
import { checkpointDirArg, checkpointIdArg, parseCheckpointId } from "./_args.ts";

export default defineCommand({
  meta: {
    name: "verify-db-checkpoint",
    description: "Re-read and re-check every file and block that checkpoints need; exit 1 naming each damaged one",
  },
  args: { ...checkpointDirArg, ...checkpointIdArg },
  async run({ args }) {
    const reader = await openCheckpointSource(args.dir);
    const existing = await reader.manifestIds();
    const wanted = parseCheckpointId(args["checkpoint-id"]);
    if (wanted !== undefined && !existing.includes(wanted)) {
      throw new CairnError("E_NOT_FOUND", `there is no checkpoint ${wanted} in ${args.dir}; checkpoints there: ${existing.join(", ") || "none"}`);
    }
    const ids = wanted !== undefined ? [wanted] : existing;
    if (ids.length === 0) {
      process.stdout.write(`No checkpoints found in ${args.dir}\n`);
      return;
    }
    const hold = await holdStoreForReading(reader);
    try {
      const verdicts = await verifyCheckpoints(reader, ids, (p) => {
        if (process.stderr.isTTY) process.stderr.write(`\rverifying: pack ${p.packsDone}/${p.packsTotal}, ${formatBytes(p.bytesDone)} read `);
      });
      if (process.stderr.isTTY) process.stderr.write("\r\u001b[K");
      for (const v of verdicts) {
        if (v.ok) process.stdout.write(`Checkpoint ${v.id}: OK (${v.blocks} blocks, ${formatBytes(v.bytes)})\n`);
        else process.stdout.write(`Checkpoint ${v.id}: DAMAGED\n${v.problems.map((p) => `  - ${p}`).join("\n")}\n`);
      }
      const damaged = verdicts.filter((v) => !v.ok).map((v) => v.id);
      if (damaged.length > 0) {
        throw new CairnError("E_DAMAGED", `${damaged.length} of ${verdicts.length} checkpoint(s) damaged: ${damaged.join(", ")}`, {
          hint: "restore from an intact checkpoint, and take a new one",
        });
      }
    } finally {
      hold.release();
    }
  },
});
