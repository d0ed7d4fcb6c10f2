/** The node's checkpoint operations on the admin socket. */
import { json } from "../api/http.ts";
import { CHECKPOINT_ROUTES, type CheckpointCreateRequest } from "../admin/protocol.ts";
import type { AdminRoute } from "../admin/server.ts";
import { CairnError } from "../errors.ts";
import type { CheckpointManager } from "../checkpoint/manager.ts";

export function checkpointRoutes(manager: CheckpointManager): Record<string, AdminRoute> {
  return {
    [`POST ${CHECKPOINT_ROUTES.create}`]: (_req, body) => {
      const b = (body ?? {}) as CheckpointCreateRequest;
      if (typeof b !== "object" || Array.isArray(b)) throw new CairnError("E_BAD_REQUEST", "expected a JSON object");
      if (b.path !== undefined && (typeof b.path !== "string" || b.path === "")) {
        throw new CairnError("E_BAD_REQUEST", "path must be a non-empty string");
      }
      if (b.delay_secs !== undefined && (typeof b.delay_secs !== "number" || !(b.delay_secs >= 0) || b.delay_secs > 86_400 * 30)) {
        throw new CairnError("E_BAD_REQUEST", "delay_secs must be a number of seconds >= 0");
      }
      const run = manager.request({ path: b.path, delaySecs: b.delay_secs });
      return json(run, 202);
    },
    [`GET ${CHECKPOINT_ROUTES.status}`]: () => json(manager.status()),
    [`POST ${CHECKPOINT_ROUTES.cancel}`]: async () => json({ cancelled: (await manager.cancel()) ?? null }),
  };
}
