/** Argument fragments shared by several commands, so each flag is described once. */
import type { ArgsDef } from "citty";
import { CairnError } from "../errors.ts";
import { type KeyFile, readKeyFile } from "../store/crypto.ts";

export const configArg = {
  config: {
    type: "string",
    valueHint: "FILE",
    description: "YAML config file (default: embedded, everything under ./cairn-data)",
  },
} as const satisfies ArgsDef;

export const checkpointDirArg = {
  dir: {
    type: "positional",
    valueHint: "DIR",
    required: true,
    description: "Checkpoint directory (db_checkpoint_dir), an archive from export-db-checkpoint, or s3://BUCKET/PREFIX",
  },
} as const satisfies ArgsDef;

export const keyFileArg = {
  "key-file": {
    type: "string",
    valueHint: "FILE",
    description: "Key file of an encrypted store (default: $CAIRN_KEY_FILE)",
  },
} as const satisfies ArgsDef;

/** The key file given with --key-file or CAIRN_KEY_FILE (read and checked now), if any. */
export function keyFilesOf(args: { "key-file"?: string }, env: Record<string, string | undefined> = process.env): KeyFile[] {
  const path = args["key-file"] ?? (env.CAIRN_KEY_FILE || undefined);
  return path === undefined ? [] : [readKeyFile(path)];
}

export const checkpointIdArg = {
  "checkpoint-id": { type: "string", valueHint: "N", description: "One checkpoint (default: all)" },
} as const satisfies ArgsDef;

/** --checkpoint-id as a number, or undefined; a bad value is a usage error (exit 2). */
export function parseCheckpointId(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1) {
    throw new CairnError("E_USAGE", `--checkpoint-id must be a whole number >= 1, got ${JSON.stringify(raw)}`, {});
  }
  return Number(raw);
}
