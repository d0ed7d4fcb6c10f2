/** Argument fragments shared by several commands, so each flag is described once. */
import type { ArgsDef } from "citty";

export const configArg = {
  config: {
    type: "string",
    valueHint: "FILE",
    description: "YAML config file (default: embedded, everything under ./cairn-data)",
  },
} as const satisfies ArgsDef;

export const socketPathArg = {
  "socket-path": {
    type: "string",
    valueHint: "S",
    required: true,
    description: "The node's admin socket (admin_socket_path in its config)",
  },
} as const satisfies ArgsDef;
