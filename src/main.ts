#!/usr/bin/env bun
/** cairn's root command: wiring only. Each command lives in src/commands/, loaded lazily. */
import "./util/no-color.ts";
import "./util/private-umask.ts";
import { defineCommand } from "citty";
import { runCli } from "./commands/_runner.ts";
import { VERSION } from "./version.ts";

const main = defineCommand({
  meta: {
    name: "cairn",
    version: VERSION,
    description: "A blob storage node on SQLite with online, deduplicated, verifiable checkpoints",
  },
  subCommands: {
    run: () => import("./commands/run.ts").then((m) => m.default),
    "local-admin": () => import("./commands/local-admin/index.ts").then((m) => m.default),
    "list-db-checkpoint": () => import("./commands/list-db-checkpoint.ts").then((m) => m.default),
    "verify-db-checkpoint": () => import("./commands/verify-db-checkpoint.ts").then((m) => m.default),
    "export-db-checkpoint": () => import("./commands/export-db-checkpoint.ts").then((m) => m.default),
    "prune-db-checkpoint": () => import("./commands/prune-db-checkpoint.ts").then((m) => m.default),
    restore: () => import("./commands/restore.ts").then((m) => m.default),
    key: () => import("./commands/key/index.ts").then((m) => m.default),
  },
});

process.exitCode = await runCli(main, process.argv.slice(2));
