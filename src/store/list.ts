/** Listing the checkpoints of a store: read-only, never locks or changes anything. */
import { CairnError, errorMessage } from "../errors.ts";
import type { Manifest } from "./format.ts";
import { currentChain, indexLog, LOG_DIR, reachableFrom, windowOf } from "./log.ts";
import type { Store } from "./store.ts";

export interface CheckpointListing {
  id: number;
  /** Size of the database the checkpoint restores to. */
  size_bytes: number;
  /** Stored files it needs: its packs, their indexes, and its manifest. */
  files: number;
  created: string;
  node_id: string;
  cairn_version: string;
  page_size: number;
  blob_count: number;
  /** Bytes this checkpoint added to the store when it was taken. */
  new_bytes: number;
  duration_ms: number;
  /** With WAL shipping: the latest instant a restore can reach from this checkpoint (RFC 3339), else null. */
  restorable_until?: string | null;
  /** With WAL shipping: the timeline (log chain) the checkpoint's image stands on, else null. */
  timeline?: string | null;
  /** The files carried with it (checkpoint_config.include_files), when it carries any. */
  included_files?: { path: string; size: number; mode: string }[];
}

export interface Listing {
  location: string;
  checkpoints: CheckpointListing[];
  /** Manifests that could not be read (damaged): listed here, not above. */
  unreadable: { id: number; error: string }[];
  /** The window a point-in-time restore reaches on the current timeline, when the store holds a shipped log. */
  pointInTime?: { from: string; to: string; timeline: string; timelines: string[] };
}

export async function listCheckpoints(reader: Store): Promise<Listing> {
  const ids = await reader.manifestIds();
  if (reader.reader && !(await reader.exists())) {
    const others = (await reader.reader.source.list("")).filter((p) => !p.startsWith("tmp/") && !p.endsWith(".lock") && !p.endsWith(".readers"));
    if (others.length > 0 || ids.length > 0) {
      throw new CairnError("E_NOT_A_STORE", `${reader.location} is not a cairn checkpoint store (no cairn-store.json)`);
    }
    return { location: reader.location, checkpoints: [], unreadable: [] };
  }
  await reader.info();
  const checkpoints: CheckpointListing[] = [];
  const unreadable: Listing["unreadable"] = [];
  // only each manifest's log position is kept for the window: a whole manifest is as large as
  // its database's block list, and keeping every one made list's memory grow with the store
  const positions: Pick<Manifest, "log">[] = [];
  const logPaths = reader.reader ? await reader.reader.source.list(`${LOG_DIR}/`) : [];
  const index = logPaths.length > 0 ? await indexLog(logPaths, reader.reader!.source, reader.location) : undefined;
  for (const id of ids) {
    try {
      const m = await reader.manifest(id);
      positions.push({ log: m.log });
      // a manifest is as large as its database's block list, and reading one leaves several
      // copies of it behind as garbage (bytes, text, parsed, re-encoded for its checksum):
      // collected now, list's memory is that of one manifest, not of all of them
      if (m.segments.length > 1024) Bun.gc(true);
      let until: number | undefined;
      if (index && m.log) for (const chain of index.chains.keys()) until = Math.max(until ?? -Infinity, reachableFrom(index, m, chain) ?? -Infinity);
      checkpoints.push({
        id: m.id,
        size_bytes: m.db_size_bytes,
        files: m.packs.length * 2 + 1,
        created: m.created,
        node_id: m.node_id,
        cairn_version: m.cairn_version,
        page_size: m.page_size,
        blob_count: m.db_totals.blob_count,
        new_bytes: m.stats.new_bytes,
        duration_ms: m.stats.duration_ms,
        ...(m.files?.length ? { included_files: m.files.map((f) => ({ path: f.path, size: f.size, mode: f.mode.toString(8).padStart(4, "0") })) } : {}),
        ...(index ? { restorable_until: until !== undefined && until > -Infinity ? new Date(until).toISOString() : null, timeline: m.log?.chain ?? null } : {}),
      });
    } catch (e) {
      // a manifest removed by retention between listing and reading is simply gone
      if ((e as CairnError).code === "E_STORE_MISSING") continue;
      unreadable.push({ id, error: errorMessage(e) });
    }
  }
  let pointInTime: Listing["pointInTime"];
  const current = index && currentChain(index);
  if (index && current) {
    const w = windowOf(index, positions, current);
    if (w) pointInTime = { from: new Date(w.from).toISOString(), to: new Date(w.to).toISOString(), timeline: current, timelines: [...index.chains.keys()] };
  }
  return { location: reader.location, checkpoints, unreadable, ...(pointInTime ? { pointInTime } : {}) };
}
