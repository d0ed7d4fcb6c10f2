import { defineCommand } from "citty";
import { exportCheckpoint } from "../store/archive/export.ts";
import { openStore } from "../store/open.ts";
import { CairnError } from "../errors.ts";
import { formatBytes } from "../util/display.ts";
import { createProgress } from "../util/progress.ts";
import { checkpointDirArg, keyFileArg, keyFilesOf, parseCheckpointId } from "./_args.ts";
import { warn } from "./_logger.ts";

export default defineCommand({
  meta: {
    name: "export-db-checkpoint",
    description: "Write one checkpoint as a self-contained archive (.tar, .tar.gz or .tar.zst) that list, verify and restore accept",
  },
  args: {
    ...checkpointDirArg,
    ...keyFileArg,
    "checkpoint-id": { type: "string", valueHint: "N", required: true, description: "The checkpoint to export" },
    output: { type: "string", valueHint: "FILE", required: true, description: "Archive to write: .tar, .tar.gz or .tar.zst (replaced atomically)" },
    json: { type: "boolean", description: "Print the result as JSON on stdout" },
  },
  async run({ args }) {
    const id = parseCheckpointId(args["checkpoint-id"])!;
    const store = await openStore(args.dir, keyFilesOf(args));
    const reader = store.randomReader("export");
    // registered before anything is read: the owner's retention deletes nothing meanwhile
    const hold = await store.hold(warn);
    const controller = new AbortController();
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, () => controller.abort());
    const progress = createProgress("export");
    try {
      await store.checkpointIds(id);
      const r = await exportCheckpoint({
        reader,
        checkpointId: id,
        output: args.output,
        signal: controller.signal,
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.end();
      if (args.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      else {
        process.stdout.write(
          `Exported checkpoint ${r.checkpoint_id} (${formatBytes(r.size_bytes)}) to ${r.output}: ${formatBytes(r.archive_bytes)}, ${r.compression === "none" ? "uncompressed" : r.compression}, in ${(r.duration_ms / 1000).toFixed(1)} s\n`,
        );
      }
    } catch (e) {
      progress.end();
      throw e;
    } finally {
      await hold.release();
    }
  },
});
