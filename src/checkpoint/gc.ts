/**
 * Garbage collection of a local checkpoint store, run by the node after retention removed old
 * manifests, while it holds the store's writer lock and the readers lock exclusively (so no
 * restore or verify is reading). Crash-safe by ordering:
 *
 *  - a pack no manifest names is deleted, index first (a pack without index is garbage too);
 *  - a pack mostly holding blocks no checkpoint needs is rewritten: the live blocks are copied
 *    to a new pack (fsynced, renamed into place), then each manifest naming the old pack is
 *    rewritten atomically to name the new one, and only then is the old pack deleted. A crash
 *    anywhere leaves every manifest pointing at packs that exist.
 *
 * If any manifest cannot be read, nothing is collected: a damaged manifest might name packs
 * that only look unreferenced.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { CairnError } from "../errors.ts";
import { crashPoint, pausePoint } from "../util/crash-point.ts";
import { CREATE_EXCLUSIVE, DIR_MODE, FILE_MODE, fileSizeOrZero, fsyncDir, writeFileAtomic, writeFully } from "../util/fsx.ts";
import {
  encodeIndex,
  encodeManifest,
  INDEX_ENTRY_BYTES,
  indexPath,
  type Manifest,
  manifestPath,
  newPackId,
  PACK_MAGIC,
  packFileOf,
  packPath,
  readIndexEntry,
  SEGMENT_ENTRY_BYTES,
  writeIndexEntry,
} from "./format.ts";
import { DigestTable } from "./digest-table.ts";
import { fromHex } from "./hash.ts";
import { DirSource } from "./objects.ts";
import { StoreReader } from "./reader.ts";

export interface GcResult {
  removedPacks: number;
  rewrittenPacks: number;
  freedBytes: number;
}

export interface GcOptions {
  /** Rewrite a pack once less than this fraction of its bytes is live. */
  minLiveFraction: number;
  sync: boolean;
  /**
   * Whether checkpoints were removed since the last collection. Blocks only die when a
   * checkpoint goes, so without removals only unreferenced leftovers are looked for.
   */
  checkpointsRemoved: boolean;
}

function unlinkIfThere(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

export async function collectGarbage(dir: string, opts: GcOptions): Promise<GcResult> {
  const reader = new StoreReader(new DirSource(dir));
  const ids = await reader.manifestIds();
  let manifests: Manifest[];
  try {
    manifests = await Promise.all(ids.map((id) => reader.manifest(id)));
  } catch (e) {
    throw new CairnError("E_GC_SKIPPED", `garbage collection skipped: ${(e as Error).message}`, { cause: e });
  }
  await pausePoint("gc:collecting");
  const result: GcResult = { removedPacks: 0, rewrittenPacks: 0, freedBytes: 0 };
  const live = new Set(manifests.flatMap((m) => m.packs));
  // only files named as packs are looked at: anything else under packs/ is left alone
  const files = (await reader.source.list("packs/")).filter((f) => packFileOf(f) !== undefined);
  const indexed = new Set(files.flatMap((f) => (packFileOf(f)!.ext === "idx" ? [packFileOf(f)!.packId] : [])));

  // packs nobody needs, and pack files whose index never made it
  for (const f of files) {
    const { packId: id, ext } = packFileOf(f)!;
    if (live.has(id) && indexed.has(id)) continue;
    if (ext === "idx" || !indexed.has(id)) {
      if (ext === "idx") {
        result.freedBytes += fileSizeOrZero(join(dir, f)) + fileSizeOrZero(join(dir, packPath(id)));
        unlinkIfThere(join(dir, f));
        unlinkIfThere(join(dir, packPath(id)));
        result.removedPacks++;
        crashPoint("gc:removed-pack");
      } else {
        result.freedBytes += fileSizeOrZero(join(dir, f));
        unlinkIfThere(join(dir, f));
      }
    }
  }

  if (!opts.checkpointsRemoved) return result;

  // what every remaining checkpoint needs: a binary table of digests (no strings per block)
  let needed = DigestTable.create(manifests.reduce((n, m) => n + m.block_count + m.segments.length, 0));
  for (const m of manifests) {
    for (const s of m.segments) needed = needed.set(fromHex(s), 0);
    const list = await reader.blockList(m);
    for (let b = 0; b < m.block_count; b++) needed = needed.set(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32), 0);
  }

  for (const packId of [...live].sort()) {
    const idx = await reader.index(packId);
    let liveBytes = 0;
    let totalBytes = 0;
    const keep: number[] = [];
    for (let i = 0; i < idx.count; i++) {
      const e = readIndexEntry(idx, i);
      totalBytes += e.storedLength;
      if (needed.getAt(idx.entries, i * INDEX_ENTRY_BYTES) >= 0) {
        liveBytes += e.storedLength;
        keep.push(i);
      }
    }
    if (totalBytes === 0 || liveBytes >= opts.minLiveFraction * totalBytes) continue;
    const newId = await rewritePack(dir, reader, packId, keep, opts.sync);
    crashPoint("gc:pack-rewritten");
    for (const m of manifests) {
      if (!m.packs.includes(packId)) continue;
      m.packs = [...new Set(m.packs.map((p) => (p === packId ? newId : p)))].sort();
      const { checksum: _, ...rest } = m;
      writeFileAtomic(join(dir, manifestPath(m.id)), encodeManifest(rest));
      crashPoint("gc:manifest-rewritten");
    }
    result.freedBytes += fileSizeOrZero(join(dir, packPath(packId))) - fileSizeOrZero(join(dir, packPath(newId)));
    unlinkIfThere(join(dir, indexPath(packId)));
    unlinkIfThere(join(dir, packPath(packId)));
    result.rewrittenPacks++;
  }
  fsyncDir(join(dir, "packs"));
  return result;
}

/** Copy the entries `keep` of pack `packId` into a new pack; returns the new pack's id. */
async function rewritePack(dir: string, reader: StoreReader, packId: string, keep: number[], sync: boolean): Promise<string> {
  const idx = await reader.index(packId);
  const newId = newPackId();
  const tmpPack = join(dir, "tmp", `${newId}.pack`);
  const tmpIdx = join(dir, "tmp", `${newId}.idx`);
  const entries = new Uint8Array(keep.length * INDEX_ENTRY_BYTES);
  const fd = openSync(tmpPack, CREATE_EXCLUSIVE, FILE_MODE);
  let offset = 0;
  try {
    const magic = new TextEncoder().encode(PACK_MAGIC);
    writeFully(fd, magic);
    offset = magic.length;
    for (let k = 0; k < keep.length; k++) {
      const e = readIndexEntry(idx, keep[k]!);
      const stored = await reader.source.getRange(packPath(packId), e.offset, e.storedLength);
      if (stored.length !== e.storedLength) throw new CairnError("E_STORE_DAMAGED", `${packPath(packId)} is truncated`);
      writeFully(fd, stored);
      writeIndexEntry(entries, k, { ...e, offset });
      offset += stored.length;
    }
    if (sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const ifd = openSync(tmpIdx, CREATE_EXCLUSIVE, FILE_MODE);
  try {
    const data = encodeIndex(offset, entries, keep.length);
    writeFully(ifd, data);
    if (sync) fsyncSync(ifd);
  } finally {
    closeSync(ifd);
  }
  const sub = join(dir, "packs", newId.slice(0, 2));
  mkdirSync(sub, { recursive: true, mode: DIR_MODE });
  renameSync(tmpPack, join(dir, packPath(newId)));
  renameSync(tmpIdx, join(dir, indexPath(newId)));
  fsyncDir(sub);
  return newId;
}
