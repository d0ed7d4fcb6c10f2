import { defineCommand } from "citty";
import { readKeyFile } from "../../store/crypto.ts";
import { rotateKey } from "../../store/keys.ts";
import { checkpointDirArg } from "../_args.ts";
import { printKeyChange } from "./_print.ts";

export default defineCommand({
  meta: { name: "rotate", description: "Move an encrypted store to a new data key: new checkpoints are sealed under it, older ones expire with retention" },
  args: {
    ...checkpointDirArg,
    "key-file": { type: "string", valueHint: "F", required: true, description: "A key file that opens the store (it opens the new key generation)" },
  },
  async run({ args }) {
    printKeyChange(await rotateKey(args.dir, readKeyFile(args["key-file"])));
  },
});
