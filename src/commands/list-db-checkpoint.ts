import { defineCommand } from "citty";
import { listCheckpoints } from "../store/list.ts";
import { openStore } from "../store/open.ts";
import { formatBytes, formatTime } from "../util/display.ts";
import { checkpointDirArg, keyFileArg, keyFilesOf } from "./_args.ts";

export default defineCommand({
  meta: { name: "list-db-checkpoint", description: "List the checkpoints in a checkpoint directory, archive or s3:// store (read-only; works while the node runs)" },
  args: {
    ...checkpointDirArg,
    ...keyFileArg,
    json: { type: "boolean", description: "Print a JSON array (id, size_bytes, files, created, node_id, ...)" },
  },
  async run({ args }) {
    const listing = await listCheckpoints(await openStore(args.dir, keyFilesOf(args)));
    for (const u of listing.unreadable) process.stderr.write(`warning: checkpoint ${u.id} cannot be read: ${u.error}\n`);
    if (args.json) {
      process.stdout.write(`${JSON.stringify(listing.checkpoints, null, 2)}\n`);
      return;
    }
    if (listing.checkpoints.length === 0) {
      process.stdout.write(`No checkpoints found in ${args.dir}\n`);
      return;
    }
    const lines = listing.checkpoints.map(
      (c) => `  Backup ID: ${c.id}, Size: ${formatBytes(c.size_bytes)}, Files: ${c.files}, Created: ${formatTime(c.created)}`,
    );
    const pit = listing.pointInTime;
    if (pit) lines.push(`Point-in-time restore: from ${pit.from} to ${pit.to}`);
    process.stdout.write(`Available checkpoints in ${args.dir}:\n${lines.join("\n")}\n`);
  },
});
