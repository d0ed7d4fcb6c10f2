import { availableParallelism } from "node:os";
import { defineCommand } from "citty";
import { CairnError } from "../errors.ts";
import { type IntegrityCheck, restore } from "../restore/restore.ts";
import { formatBytes, formatTime } from "../util/display.ts";
import { createProgress } from "../util/progress.ts";
import { keyFileArg, keyFilesOf, parseCheckpointId } from "./_args.ts";
import { createLogger } from "./_logger.ts";

export default defineCommand({
  meta: {
    name: "restore",
    description:
      "Rebuild a checkpoint's database into a node's storage_path: verified, atomic, resumable (run it again after an interruption)",
  },
  args: {
    "db-checkpoint-path": { type: "string", valueHint: "DIR", required: true, description: "Checkpoint directory, archive (.tar, .tar.gz, .tar.zst) or s3://BUCKET/PREFIX to restore from" },
    "db-path": { type: "string", valueHint: "DIR", required: true, description: "The node's storage_path to restore into (the node must be stopped)" },
    "checkpoint-id": { type: "string", valueHint: "N", description: "Checkpoint to restore exactly (default: the newest point the store holds, shipped transactions included)" },
    timestamp: { type: "string", valueHint: "RFC3339", description: "Restore the state as of this instant: every transaction committed at or before it, none after (needs WAL shipping)" },
    timeline: { type: "string", valueHint: "CHAIN", description: "Follow this timeline of the shipped log (list-db-checkpoint --json names them; default: the current one)" },
    force: { type: "boolean", description: "Replace an existing database: it is moved aside to a sibling folder, never deleted" },
    "with-files": { type: "boolean", description: "Also put back the files the checkpoint carries (include_files) at their recorded paths; a different file there is moved aside" },
    "files-to": { type: "string", valueHint: "DIR", description: "Put the carried files under DIR instead, at their recorded absolute paths" },
    "new-node-id": { type: "boolean", description: "Give the restored database a new node id (a clone: it checkpoints into a store of its own); printed on success" },
    "integrity-check": { type: "enum", options: ["none", "quick", "full"], default: "quick", description: "SQLite check of the result before it is put in place" },
    "dry-run": { type: "boolean", description: "Print the plan (checkpoint, size, target, what moves aside) and write nothing" },
    json: { type: "boolean", description: "Print the result as JSON on stdout" },
    parallel: { type: "string", valueHint: "N", description: "Worker threads fetching and checking blocks (default: number of cores, at most 4)" },
    ...keyFileArg,
  },
  async run({ args }) {
    const logger = createLogger("info");
    const parallel = args.parallel === undefined ? Math.min(4, availableParallelism()) : Number(args.parallel);
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) {
      throw new CairnError("E_USAGE", `--parallel must be a whole number from 1 to 64, got ${JSON.stringify(args.parallel)}`, {});
    }
    const controller = new AbortController();
    let signalled: string | undefined;
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      process.on(sig, () => {
        if (signalled) return;
        signalled = sig;
        controller.abort();
      });
    }
    const progress = createProgress("restore");
    try {
      const r = await restore({
        source: args["db-checkpoint-path"],
        keyFiles: keyFilesOf(args),
        dbPath: args["db-path"],
        checkpointId: parseCheckpointId(args["checkpoint-id"]),
        timestamp: parseInstant(args.timestamp),
        timeline: args.timeline,
        force: Boolean(args.force),
        newNodeId: Boolean(args["new-node-id"]),
        withFiles: Boolean(args["with-files"]),
        filesTo: args["files-to"],
        integrityCheck: args["integrity-check"] as IntegrityCheck,
        dryRun: Boolean(args["dry-run"]),
        workers: parallel,
        logger,
        signal: controller.signal,
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.end();
      if (args.json) {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      if (args["dry-run"]) {
        const lines = [
          `Would restore checkpoint ${r.checkpoint_id}${r.latest ? " (the newest)" : ""} of node ${r.node_id}, created ${formatTime(r.created)}, ${formatBytes(r.size_bytes)}`,
          `  from ${r.source}`,
          `  into ${r.db_path}/cairn.db (staged in ${r.staging_dir} first)`,
          ...(r.reached ? [`  then the shipped transactions up to ${r.reached} (timeline ${r.timeline})`] : []),
          r.existing ? `  moving the existing ${r.existing.files.join(", ")} aside to ${r.move_aside_to}` : "  the target holds no database",
          ...r.files.map((f) => `  putting the carried file ${f.path} at ${f.written_to} (a different file there moves aside)`),
          "Nothing was written.",
        ];
        process.stdout.write(`${lines.join("\n")}\n`);
        return;
      }
      if (r.move_aside_to && r.existing) process.stdout.write(`The previous database (${r.existing.files.join(", ")}) was moved to ${r.move_aside_to}\n`);
      const upTo = r.reached ? ` up to ${r.reached}` : "";
      process.stdout.write(r.latest ? `Restored from latest (${r.checkpoint_id})${upTo} successfully.\n` : `Restored from ${r.checkpoint_id}${upTo} successfully.\n`);
      for (const f of r.files) {
        const what = f.action === "unchanged" ? "already there, unchanged" : `put back at ${f.written_to}${f.moved_aside_to ? `; the different file there was moved to ${f.moved_aside_to}` : ""}`;
        process.stdout.write(`Carried file ${f.path}: ${what}\n`);
      }
      if (r.new_node_id) process.stdout.write(`New node id: ${r.new_node_id} (a clone of node ${r.node_id})\n`);
    } catch (e) {
      progress.end();
      if (signalled && e instanceof CairnError && e.code === "E_INTERRUPTED") {
        process.stderr.write(`Interrupted (${signalled}). What was restored so far is kept; run the same command again to continue.\n`);
        process.exit(130);
      }
      throw e;
    }
  },
});

/** An RFC 3339 instant (with its offset, or Z), as ms since the epoch. */
function parseInstant(s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i.test(s.trim()) ? Date.parse(s.trim()) : Number.NaN;
  if (!Number.isFinite(ms)) throw new CairnError("E_USAGE", `--timestamp must be an RFC 3339 instant such as 2026-12-01T14:20:07.123Z, got ${JSON.stringify(s)}`);
  return ms;
}
