/**
 * SQLite's own check of a restored image, in a worker thread so that an interrupt can stop it
 * (on a large database it takes minutes): PRAGMA quick_check or integrity_check, and the node
 * id the image holds. The file is never a live node's (restore holds the target's lock).
 */
import { Database } from "bun:sqlite";

export type CheckJob = { job: "check"; op: "sqlite"; file: string; full: boolean };

export function checkJob(msg: CheckJob): { rows: string[]; nodeId: string | null } {
  const db = new Database(msg.file, { readwrite: true, create: false });
  try {
    const rows = db
      .query<Record<string, string>, []>(`PRAGMA ${msg.full ? "integrity_check" : "quick_check"}`)
      .all()
      .map((r) => String(Object.values(r)[0]));
    const nodeId = db.query<{ value: string }, []>("SELECT value FROM meta WHERE key = 'node_id'").get()?.value ?? null;
    return { rows, nodeId };
  } finally {
    db.close();
  }
}
