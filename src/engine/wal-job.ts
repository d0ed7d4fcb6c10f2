/**
 * The WAL fold's job, in a worker thread with a database connection of its own, so that
 * copying WAL frames into the database file (and its fsync) never stalls the HTTP server.
 * wal.ts (the WalCheckpointer) asks for a PASSIVE or TRUNCATE checkpoint, and for CLOSE before
 * the node's own connection closes.
 */
import { Database } from "bun:sqlite";
import { lowerThisThreadPriority } from "../util/thread-priority.ts";
import { applyConnectionPragmas } from "./database.ts";

/** How long a TRUNCATE checkpoint waits for another connection's read to end. */
const TRUNCATE_WAIT_MS = 250;

export type WalCheckpointMode = "PASSIVE" | "TRUNCATE";
export type WalJob = { job: "wal"; op: WalCheckpointMode | "CLOSE"; file: string };
export interface WalFoldResult {
  busy: number;
  log: number;
  checkpointed: number;
  ms: number;
}

let db: Database | undefined;

export function walJob(msg: WalJob): WalFoldResult {
  const started = performance.now();
  if (msg.op === "CLOSE") {
    // close the connection before the thread is terminated: SQLite's locks on the WAL index
    // are per process, and an abandoned connection's would keep the node's final checkpoint busy
    db?.close();
    db = undefined;
    return { busy: 0, log: 0, checkpointed: 0, ms: 0 };
  }
  if (!db) {
    // folding the WAL in is background work: the node's request thread goes first
    lowerThisThreadPriority(5);
    db = new Database(msg.file, { readwrite: true, create: false });
    applyConnectionPragmas(db);
    // a TRUNCATE waits for readers (an operator's sqlite3 .backup, say) while the node's
    // writes wait behind its barrier: give up soon and let the writes go on
    db.exec(`PRAGMA busy_timeout = ${TRUNCATE_WAIT_MS}`);
  }
  const row = db.query<{ busy: number; log: number; checkpointed: number }, []>(`PRAGMA wal_checkpoint(${msg.op})`).get()!;
  return { ...row, ms: performance.now() - started };
}
