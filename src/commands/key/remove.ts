import { defineCommand } from "citty";
import { readKeyFile } from "../../store/crypto.ts";
import { removeKey } from "../../store/keys.ts";
import { checkpointDirArg } from "../_args.ts";
import { printKeyChange } from "./_print.ts";

export default defineCommand({
  meta: { name: "remove", description: "Stop a key file from opening an encrypted store (never the last one)" },
  args: {
    ...checkpointDirArg,
    "key-file": { type: "string", valueHint: "F", required: true, description: "The key file to remove" },
  },
  async run({ args }) {
    printKeyChange(await removeKey(args.dir, readKeyFile(args["key-file"])));
  },
});
