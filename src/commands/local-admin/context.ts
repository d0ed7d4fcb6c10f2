/** The parent `local-admin` command hands where the node is (socket, or URL and token) to the subcommand through this. */
import { AdminClient, type AdminHttpTarget } from "../../admin/client.ts";

let socketPath: string | undefined;
let http: AdminHttpTarget | undefined;

export function setAdminTarget(target: { socketPath?: string; http?: AdminHttpTarget }): void {
  socketPath = target.socketPath;
  http = target.http;
}

export function adminClient(): AdminClient {
  if (!socketPath && !http) throw new Error("local-admin: neither --socket-path nor --url was set");
  return new AdminClient(socketPath, http);
}
