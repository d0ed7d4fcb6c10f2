import { defineCommand } from "citty";
import { writeNewKeyFile } from "../../store/crypto.ts";

export default defineCommand({
  meta: { name: "generate", description: "Write a new random key file (mode 0600; never over an existing file)" },
  args: {
    output: { type: "string", required: true, description: "Where to write the key file" },
  },
  run({ args }) {
    const id = writeNewKeyFile(args.output);
    process.stdout.write(`Wrote a new key to ${args.output} (key id ${id}). Keep a copy off this host: without it, what it encrypts cannot be read.\n`);
  },
});
