import { defineCommand } from "citty";

export default defineCommand({
  meta: { name: "key", description: "Key files of encrypted checkpoint stores" },
  subCommands: {
    generate: () => import("./generate.ts").then((m) => m.default),
  },
});
