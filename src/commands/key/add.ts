import { defineCommand } from "citty";
import { readKeyFile } from "../../store/crypto.ts";
import { addKey } from "../../store/keys.ts";
import { checkpointDirArg } from "../_args.ts";
import { printKeyChange } from "./_print.ts";

export default defineCommand({
  meta: { name: "add", description: "Let another key file open an encrypted store too (its data is not rewritten)" },
  args: {
    ...checkpointDirArg,
    "key-file": { type: "string", valueHint: "OLD", required: true, description: "A key file that opens the store now" },
    "new-key-file": { type: "string", valueHint: "NEW", required: true, description: "The key file to add (cairn key generate)" },
  },
  async run({ args }) {
    printKeyChange(await addKey(args.dir, readKeyFile(args["key-file"]), readKeyFile(args["new-key-file"])));
  },
});
