import { defineCommand } from "citty";
import { socketPathArg } from "../_args.ts";
import { setSocketPath } from "./context.ts";

export default defineCommand({
  meta: { name: "local-admin", description: "Administer a running node through its admin socket" },
  args: { ...socketPathArg },
  setup({ args }) {
    setSocketPath(args["socket-path"]);
  },
  subCommands: {
    checkpoint: () => import("./checkpoint/index.ts").then((m) => m.default),
    "log-level": () => import("./log-level.ts").then((m) => m.default),
  },
});
