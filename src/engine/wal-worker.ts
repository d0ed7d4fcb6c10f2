/**
 * Worker thread that runs the node's WAL checkpoints on a connection of its own, so that
 * copying WAL frames into the database file (and its fsync) never stalls the HTTP server.
 * Protocol: {id, mode} in, {id, ok, busy, log, checkpointed, ms} or {id, ok:false, error} out.
 */
import { Database } from "bun:sqlite";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import { applyConnectionPragmas } from "./database.ts";

declare const self: Worker;

/** How long a TRUNCATE checkpoint waits for another connection's read to end. */
const TRUNCATE_WAIT_MS = 250;

export type WalCheckpointMode = "PASSIVE" | "TRUNCATE";
export type WalWorkerRequest = { id: number; file: string; mode: WalCheckpointMode | "CLOSE" };
export type WalWorkerReply =
  | { id: number; ok: true; busy: number; log: number; checkpointed: number; ms: number }
  | { id: number; ok: false; error: string };

let db: Database | undefined;
// folding the WAL in is background work: the node's request thread goes first
lowerThisThreadPriority(5);

self.onmessage = (event: MessageEvent<WalWorkerRequest>) => {
  const { id, file, mode } = event.data;
  const started = performance.now();
  if (mode === "CLOSE") {
    // close the connection before the thread is terminated: SQLite's locks on the WAL index
    // are per process, and an abandoned connection's would keep the node's final checkpoint busy
    db?.close();
    db = undefined;
    postMessage({ id, ok: true, busy: 0, log: 0, checkpointed: 0, ms: 0 } satisfies WalWorkerReply);
    return;
  }
  try {
    if (!db) {
      db = new Database(file, { readwrite: true, create: false });
      applyConnectionPragmas(db);
      // a TRUNCATE waits for readers (an operator's sqlite3 .backup, say) while the node's
      // writes wait behind its barrier: give up soon and let the writes go on
      db.exec(`PRAGMA busy_timeout = ${TRUNCATE_WAIT_MS}`);
    }
    const row = db.query<{ busy: number; log: number; checkpointed: number }, []>(
      `PRAGMA wal_checkpoint(${mode === "TRUNCATE" ? "TRUNCATE" : "PASSIVE"})`,
    ).get()!;
    const reply: WalWorkerReply = { id, ok: true, ...row, ms: performance.now() - started };
    postMessage(reply);
  } catch (e) {
    postMessage({ id, ok: false, error: e instanceof Error ? e.message : String(e) } satisfies WalWorkerReply);
  }
};
