import { defineCommand } from "citty";
import { embeddedConfig, loadConfigFile } from "../config/load.ts";
import { CairnNode } from "../node/node.ts";
import { configArg } from "./_args.ts";
import { createLogger } from "./_logger.ts";

export default defineCommand({
  meta: {
    name: "run",
    description: "Run the storage node (REST API, admin socket, WAL and checkpoint scheduling) until SIGTERM/SIGINT; SIGHUP re-reads the config",
  },
  args: { ...configArg },
  async run({ args }) {
    const config = args.config ? loadConfigFile(args.config) : embeddedConfig();
    const logger = createLogger(config.logLevel);
    if (!args.config) logger.info(`no --config given: running on the embedded default under ${config.storagePath.replace(/\/db$/, "")}`);
    const node = await CairnNode.start(config, logger);
    await new Promise<void>((resolve) => {
      let signalled = false;
      const onSignal = (sig: NodeJS.Signals) => {
        if (signalled) {
          logger.warn(`${sig} again: shutdown is already in progress (send SIGKILL to force)`);
          return;
        }
        signalled = true;
        logger.info(`${sig} received: shutting down`);
        node.stop().then(resolve, (e) => {
          logger.error(`shutdown failed: ${e instanceof Error ? e.message : String(e)}`);
          process.exitCode = 1;
          resolve();
        });
      };
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
      // a terminal, tmux pane or ssh session going away must not take the node with it:
      // SIGHUP re-reads what can change without a restart
      process.on("SIGHUP", () => {
        if (signalled) return;
        if (!args.config) {
          logger.info("SIGHUP received: running on the embedded default, nothing to re-read");
          return;
        }
        try {
          node.reload(loadConfigFile(args.config));
        } catch (e) {
          logger.error(`SIGHUP received: ${args.config} was not applied: ${e instanceof Error ? e.message : String(e)}`);
        }
      });
    });
    // everything is stopped and durable; a request to a remote that never answered may still
    // hold a socket (Bun's S3 client takes no AbortSignal and closes it only after its own idle
    // timeout, minutes later): it must not keep the process from exiting
    setTimeout(() => process.exit(), 200).unref();
  },
});
