/** The parent `local-admin` command hands its --socket-path to the subcommand through this. */
import { AdminClient } from "../../admin/client.ts";

let socketPath: string | undefined;

export function setSocketPath(path: string): void {
  socketPath = path;
}

export function adminClient(): AdminClient {
  if (!socketPath) throw new Error("local-admin: --socket-path was not set");
  return new AdminClient(socketPath);
}
