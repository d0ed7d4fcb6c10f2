import { defineCommand } from "citty";
import { readFileSync } from "node:fs";
import { CairnError, errorMessage } from "../../errors.ts";
import { firstToken } from "../../api/auth.ts";
import { setAdminTarget } from "./context.ts";

export default defineCommand({
  meta: { name: "local-admin", description: "Administer a running node through its admin socket, or its admin API over HTTP(S)" },
  args: {
    "socket-path": { type: "string", valueHint: "S", description: "The node's admin socket (admin_socket_path in its config)" },
    url: { type: "string", valueHint: "URL", description: "The node's admin API instead (admin_api.address), e.g. https://host:7421" },
    "token-file": { type: "string", valueHint: "F", description: "With --url: a file holding the token (mode 0600); or CAIRN_ADMIN_TOKEN_FILE" },
    "ca-file": { type: "string", valueHint: "F", description: "With --url: the PEM certificate (or its authority) to trust, for a self-signed one" },
  },
  setup({ args }) {
    const url = args.url;
    if (!url === !args["socket-path"]) throw new CairnError("E_USAGE", "give --socket-path S, or --url URL with --token-file F (one of the two)");
    if (!url) {
      setAdminTarget({ socketPath: args["socket-path"] });
      return;
    }
    if (!/^https?:\/\/[^/]+\/?$/.test(url)) throw new CairnError("E_USAGE", `--url: expected http(s)://HOST:PORT, got ${JSON.stringify(url)}`);
    const tokenFile = args["token-file"] ?? process.env.CAIRN_ADMIN_TOKEN_FILE;
    if (!tokenFile) throw new CairnError("E_USAGE", "--url needs --token-file F (or CAIRN_ADMIN_TOKEN_FILE)");
    // the same rules as the node's: an owner-only file; the first token in it is sent
    const token = firstToken(tokenFile, "--token-file");
    let ca: string | undefined;
    if (args["ca-file"]) {
      try {
        ca = readFileSync(args["ca-file"], "utf8");
      } catch (e) {
        throw new CairnError("E_USAGE", `--ca-file: cannot read ${args["ca-file"]}: ${errorMessage(e)}`);
      }
    }
    setAdminTarget({ http: { url, token, ca } });
  },
  subCommands: {
    checkpoint: () => import("./checkpoint/index.ts").then((m) => m.default),
    "log-level": () => import("./log-level.ts").then((m) => m.default),
  },
});
