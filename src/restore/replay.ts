/**
 * Bringing a restored checkpoint image forward to an instant: the shipped transactions after
 * the checkpoint (store/log.ts), applied in order onto the staged image, each page written where
 * it belongs and the file cut to each commit's size. Every segment is checked against its digest
 * and its place in the chain before anything of it is applied; a transaction committed after the
 * instant ends the replay. Applying again onto an image that already holds a transaction changes
 * nothing (page images), so an interrupted restore simply runs it again.
 */
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync } from "node:fs";
import { CairnError } from "../errors.ts";
import { decodeSegment, type LogPosition, MAX_SEGMENT_BYTES, type ReplayStep } from "../store/log.ts";
import type { Store } from "../store/store.ts";
import { writeFully } from "../util/fsx.ts";

export interface ReplayResult {
  /** Transactions applied. */
  txns: number;
  /** Where the image stands now. */
  position: LogPosition;
}

export async function replayLog(o: { store: Store; steps: ReplayStep[]; imageFile: string; pageSize: number; untilMs: number; start: LogPosition; signal?: AbortSignal }): Promise<ReplayResult> {
  const reader = o.store.randomReader("a point-in-time restore");
  const fd = openSync(o.imageFile, "r+");
  let applied = 0;
  let position: LogPosition = { ...o.start, ms: o.untilMs };
  let pages = Math.floor(fstatSync(fd).size / o.pageSize);
  let prev: { chain: string; digest: string } | undefined;
  try {
    steps: for (const step of o.steps) {
      if (o.signal?.aborted) throw new CairnError("E_INTERRUPTED", "restore interrupted");
      const data = await reader.source.get(step.segment.path, MAX_SEGMENT_BYTES);
      const { header, txns } = decodeSegment(data, step.segment, o.store.location);
      if (prev && prev.chain === header.chain && header.prev !== prev.digest) {
        throw new CairnError("E_STORE_DAMAGED", `log segment ${o.store.location}/${step.segment.path} does not follow the segment before it in chain ${header.chain} (the log has a gap or a foreign file)`);
      }
      if (header.page_size !== o.pageSize) throw new CairnError("E_STORE_DAMAGED", `log segment ${o.store.location}/${step.segment.path} has pages of ${header.page_size} bytes, the database ${o.pageSize}`);
      prev = { chain: header.chain, digest: step.segment.digest };
      for (const t of txns) {
        if (t.txn < step.from || t.txn > step.to) continue;
        if (t.commitMs > o.untilMs) break steps;
        for (const p of t.pages) writeFully(fd, p.data, (p.pgno - 1) * o.pageSize);
        if (t.dbPages < pages) ftruncateSync(fd, t.dbPages * o.pageSize);
        pages = t.dbPages;
        applied++;
        position = { chain: header.chain, txn: t.txn, ms: o.untilMs };
      }
    }
    ftruncateSync(fd, pages * o.pageSize);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return { txns: applied, position };
}
