import { defineCommand } from "citty";

export default defineCommand({
  meta: { name: "key", description: "Key files of encrypted checkpoint stores" },
  subCommands: {
    generate: () => import("./generate.ts").then((m) => m.default),
    add: () => import("./add.ts").then((m) => m.default),
    remove: () => import("./remove.ts").then((m) => m.default),
    rotate: () => import("./rotate.ts").then((m) => m.default),
  },
});
