import { defineCommand } from "citty";

export default defineCommand({
  meta: { name: "checkpoint", description: "Create, watch or cancel a checkpoint inside the running node" },
  subCommands: {
    create: () => import("./create.ts").then((m) => m.default),
    status: () => import("./status.ts").then((m) => m.default),
    cancel: () => import("./cancel.ts").then((m) => m.default),
  },
});
