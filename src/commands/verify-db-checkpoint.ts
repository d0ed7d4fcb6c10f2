import { defineCommand } from "citty";
import { openStore } from "../store/open.ts";
import { verifyCheckpoints, verifyLog } from "../store/verify.ts";
import { CairnError } from "../errors.ts";
import { formatBytes } from "../util/display.ts";
import { checkpointDirArg, checkpointIdArg, keyFileArg, keyFilesOf, parseCheckpointId } from "./_args.ts";
import { warn } from "./_logger.ts";

export default defineCommand({
  meta: {
    name: "verify-db-checkpoint",
    description: "Re-read and re-check every file and block that checkpoints need; exit 1 naming each damaged one",
  },
  args: { ...checkpointDirArg, ...checkpointIdArg, ...keyFileArg },
  async run({ args }) {
    const reader = await openStore(args.dir, keyFilesOf(args));
    const wanted = parseCheckpointId(args["checkpoint-id"]);
    // registered before anything is read: the owner's retention deletes nothing meanwhile
    const hold = await reader.hold(warn);
    try {
      const existing = await reader.checkpointIds(wanted);
      const ids = wanted !== undefined ? [wanted] : existing;
      if (ids.length === 0) {
        process.stdout.write(`No checkpoints found in ${args.dir}\n`);
        return;
      }
      const verdicts = await verifyCheckpoints(reader, ids, (p) => {
        if (process.stderr.isTTY) process.stderr.write(`\rverifying: pack ${p.packsDone}/${p.packsTotal}, ${formatBytes(p.bytesDone)} read `);
      });
      if (process.stderr.isTTY) process.stderr.write("\r\u001b[K");
      for (const v of verdicts) {
        if (v.ok) process.stdout.write(`Checkpoint ${v.id}: OK (${v.blocks} blocks, ${formatBytes(v.bytes)})\n`);
        else process.stdout.write(`Checkpoint ${v.id}: DAMAGED\n${v.problems.map((p) => `  - ${p}`).join("\n")}\n`);
      }
      const damaged = verdicts.filter((v) => !v.ok).map((v) => v.id);
      const log = wanted === undefined ? await verifyLog(reader) : undefined;
      if (log?.ok) process.stdout.write(`Log: OK (${log.segments} segments, ${log.txns} transactions, ${formatBytes(log.bytes)})\n`);
      else if (log) process.stdout.write(`Log: DAMAGED\n${log.problems.map((p) => `  - ${p}`).join("\n")}\n`);
      if (log && !log.ok && damaged.length === 0) {
        throw new CairnError("E_STORE_DAMAGED", `the shipped log is damaged (${log.problems.length} problem(s)); the checkpoints are intact`, {
          hint: "restores to instants before the damage still work; take a new checkpoint",
        });
      }
      if (damaged.length > 0) {
        throw new CairnError("E_STORE_DAMAGED", `${damaged.length} of ${verdicts.length} checkpoint(s) damaged: ${damaged.join(", ")}`, {
          hint: "restore from an intact checkpoint, and take a new one",
        });
      }
    } finally {
      await hold.release();
    }
  },
});
