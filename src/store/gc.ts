/**
 * Garbage collection of a store. Crash-safe by ordering:
 *
 *  - a pack no manifest names is deleted, index first (a pack without index is garbage too);
 *    this is all a remote store gets (removeUnreferencedPacks, after its retention);
 *  - in a local store, a pack mostly holding blocks no checkpoint needs is rewritten: the live
 *    blocks are copied to a new pack (fsynced, renamed into place), then each manifest naming
 *    the old pack is rewritten atomically to name the new one, and only then is the old pack
 *    deleted. A crash anywhere leaves every manifest pointing at packs that exist.
 *
 * Which blocks are live is asked of a Bloom filter of every digest the remaining checkpoints
 * need (bloom.ts), filled from their segments, each distinct segment read once: memory is a
 * few bits a stored block and a table of the segments, never a list of every block. A false
 * "live" only keeps a dead block in a rewritten pack. Rewrites copy through one read buffer
 * and are collected after each pack, so memory does not grow with how many packs are rewritten.
 *
 * The node runs it (in a worker) after retention removed old manifests, while it holds the
 * store's writer lock and the readers lock exclusively, so no restore or verify is reading.
 * If any manifest cannot be read, nothing is collected: a damaged manifest might name packs
 * that only look unreferenced.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { CairnError, errorMessage } from "../errors.ts";
import { crashPoint, pausePoint } from "../util/crash-point.ts";
import { DIR_MODE, fileSizeOrZero, fsyncDir } from "../util/fsx.ts";
import type { Backend, Writes } from "./backend.ts";
import { DirBackend } from "./dir/backend.ts";
import { type KeyringSpec, StoreKeys } from "./crypto.ts";
import { publishPackFiles, writeManifestFile } from "./dir/writer.ts";
import { DigestBloom } from "./bloom.ts";
import { DigestTable } from "./digest-table.ts";
import { includedNameOf, indexPath, type Manifest, packFileOf, packPath, remapSegmentPacks, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { fromHex } from "./hash.ts";
import { INDEX_ENTRY_BYTES, readIndexEntry } from "./pack.ts";
import { PackFile } from "./pack-writer.ts";
import { StoreReader } from "./reader.ts";

export interface GcResult {
  removedPacks: number;
  rewrittenPacks: number;
  freedBytes: number;
  /** Packs rewritten: [old id, new id]. */
  renamed?: [string, string][];
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
  /** An encrypted store's keys (manifests and indexes are sealed; blocks are copied as they are). */
  keys?: KeyringSpec;
}

/** Every manifest of the store, or E_STORE_DAMAGED if one cannot be read (then nothing may be collected). */
async function allManifests(reader: StoreReader): Promise<Manifest[]> {
  try {
    return await Promise.all((await reader.manifestIds()).map((id) => reader.manifest(id)));
  } catch (e) {
    throw new CairnError("E_STORE_DAMAGED", `garbage collection skipped: ${errorMessage(e)}`, { cause: e });
  }
}

/**
 * Delete the packs no manifest in `manifests` names, and pack files whose index never made it
 * (index first). Only files named as packs are looked at: anything else under packs/ is left
 * alone. Returns what was removed and freed.
 */
export async function removeUnreferencedPacks(
  backend: Backend & { writes: Writes },
  reader: StoreReader,
  manifests: Manifest[],
): Promise<{ removedPacks: number; freedBytes: number }> {
  const live = new Set(manifests.flatMap((m) => m.packs));
  const files = await reader.source.listSizes("packs/");
  const indexed = new Set<string>();
  for (const f of files.keys()) {
    const pf = packFileOf(f);
    if (pf?.ext === "idx") indexed.add(pf.packId);
  }
  let removedPacks = 0;
  let freedBytes = 0;
  for (const [f, size] of files) {
    const pf = packFileOf(f);
    if (!pf || (live.has(pf.packId) && indexed.has(pf.packId))) continue;
    if (pf.ext === "idx") {
      freedBytes += size + (files.get(packPath(pf.packId)) ?? 0);
      await backend.writes.delete(f);
      await backend.writes.delete(packPath(pf.packId));
      removedPacks++;
      crashPoint("gc:removed-pack");
    } else if (!indexed.has(pf.packId)) {
      freedBytes += size;
      await backend.writes.delete(f);
    }
  }
  // carried files no manifest names (those of removed checkpoints, or of one that crashed before its manifest)
  const named = new Set(manifests.flatMap((m) => (m.files ?? []).map((x) => x.name)));
  for (const [f, size] of await reader.source.listSizes("files/")) {
    const name = includedNameOf(f);
    if (name === undefined || named.has(name)) continue;
    freedBytes += size;
    await backend.writes.delete(f);
  }
  return { removedPacks, freedBytes };
}

/** Garbage collection of the local store in `dir` (see above). */
export async function collectGarbage(dir: string, opts: GcOptions): Promise<GcResult> {
  const backend = new DirBackend(dir);
  try {
    return await collectIn(dir, backend, opts);
  } finally {
    backend.close();
  }
}

async function collectIn(dir: string, backend: DirBackend, opts: GcOptions): Promise<GcResult> {
  const keys = opts.keys ? new StoreKeys(opts.keys) : undefined;
  const reader = new StoreReader(backend, keys);
  const manifests = await allManifests(reader);
  await pausePoint("gc:collecting");
  const { removedPacks, freedBytes } = await removeUnreferencedPacks(backend, reader, manifests);
  const result: GcResult = { removedPacks, rewrittenPacks: 0, freedBytes };
  if (!opts.checkpointsRemoved) return result;

  const packs = [...new Set(manifests.flatMap((m) => m.packs))].sort();
  const needed = await neededDigests(reader, manifests, packs);

  // rewrite the packs that are mostly dead; a pack with nothing live is only dropped
  const renamed = new Map<string, string>();
  const dropped = new Set<string>();
  const scratch = { buf: new Uint8Array(REWRITE_READ_BYTES) };
  let packsLooked = 0;
  for (const packId of packs) {
    const idx = await reader.index(packId);
    let liveBytes = 0;
    let totalBytes = 0;
    const keep: number[] = [];
    for (let i = 0; i < idx.count; i++) {
      const e = readIndexEntry(idx, i);
      totalBytes += e.storedLength;
      if (needed.hasAt(idx.entries, i * INDEX_ENTRY_BYTES)) {
        liveBytes += e.storedLength;
        keep.push(i);
      }
    }
    if (++packsLooked % 4 === 0) Bun.gc(true);
    if (totalBytes === 0 || liveBytes >= opts.minLiveFraction * totalBytes) continue;
    if (keep.length === 0) dropped.add(packId);
    else {
      renamed.set(packId, await rewritePack(dir, reader, packId, keep, opts.sync, scratch));
      crashPoint("gc:pack-rewritten");
      // the rewrite's pack writer and index are garbage now: collected before the next pack
      Bun.gc(true);
    }
  }
  if (renamed.size === 0 && dropped.size === 0) return result;
  // the new packs exist (synced): every manifest names them instead, each rewritten once
  for (const m of manifests) {
    if (!m.packs.some((p) => renamed.has(p) || dropped.has(p))) continue;
    const packs = [...new Set(m.packs.filter((p) => !dropped.has(p)).map((p) => renamed.get(p) ?? p))].sort();
    const segmentPacks = remapSegmentPacks(m, packs, renamed);
    m.packs = packs;
    if (segmentPacks) m.segment_packs = segmentPacks;
    const { checksum: _, ...rest } = m;
    writeManifestFile(dir, rest, keys);
    crashPoint("gc:manifest-rewritten");
  }
  // only now may the old packs go
  for (const packId of [...renamed.keys(), ...dropped]) {
    const newId = renamed.get(packId);
    result.freedBytes += fileSizeOrZero(join(dir, packPath(packId))) + fileSizeOrZero(join(dir, indexPath(packId)));
    if (newId) result.freedBytes -= fileSizeOrZero(join(dir, packPath(newId))) + fileSizeOrZero(join(dir, indexPath(newId)));
    await backend.writes.delete(indexPath(packId));
    await backend.writes.delete(packPath(packId));
    if (newId) result.rewrittenPacks++;
    else result.removedPacks++;
  }
  result.renamed = [...renamed];
  fsyncDir(join(dir, "packs"));
  return result;
}

/**
 * Every digest the checkpoints `manifests` need (their segments and the blocks listed in
 * them), in a Bloom filter sized for the blocks stored in `packs`. E_STORE_DAMAGED if a segment
 * is missing: then nothing may be collected.
 */
async function neededDigests(reader: StoreReader, manifests: Manifest[], packs: string[]): Promise<DigestBloom> {
  const { entries } = await reader.entryCounts(packs);
  const needed = new DigestBloom(entries);
  // the distinct segments: checkpoints share most of theirs
  let seen = DigestTable.create(1024);
  const segments: string[] = [];
  for (const m of manifests) {
    for (const d of m.segments) {
      const key = fromHex(d);
      if (seen.getAt(key, 0) >= 0) continue;
      seen = seen.set(key, segments.length);
      segments.push(d);
      needed.addAt(key, 0);
    }
  }
  const where = await reader.locateSome(packs, segments);
  let listsRead = 0;
  for (const d of segments) {
    const loc = where.get(d);
    if (!loc) throw new CairnError("E_STORE_DAMAGED", `garbage collection skipped: segment ${d.slice(0, 16)}… is in none of the packs`);
    const list = await reader.block(loc);
    for (let at = 0; at + SEGMENT_ENTRY_BYTES <= list.length; at += SEGMENT_ENTRY_BYTES) needed.addAt(list, at);
    // each list is garbage once added: collected as it goes, so memory stays that of the filter
    if (++listsRead % 64 === 0) Bun.gc(true);
  }
  return needed;
}

/** What one read of a pack being rewritten takes at most: runs of kept blocks are read together. */
const REWRITE_READ_BYTES = 4 * 1024 * 1024;

/**
 * Copy the entries `keep` of pack `packId` into a new pack; returns the new pack's id. The
 * kept blocks are read in runs into `scratch`, one buffer for the whole collection: a buffer
 * a block would leave a pack's worth of garbage behind each rewrite.
 */
async function rewritePack(dir: string, reader: StoreReader, packId: string, keep: number[], sync: boolean, scratch: { buf: Uint8Array }): Promise<string> {
  const idx = await reader.index(packId);
  const tmp = join(dir, "tmp");
  mkdirSync(tmp, { recursive: true, mode: DIR_MODE });
  const pack = new PackFile(tmp, { sync, keys: reader.keys });
  const digest = new Uint32Array(8);
  const digestBytes = new Uint8Array(digest.buffer);
  const path = packPath(packId);
  try {
    for (let k = 0; k < keep.length; ) {
      // a run: the kept entries that follow one another in the pack, as far as one read goes
      const first = readIndexEntry(idx, keep[k]!);
      const run = [first];
      let end = first.offset + first.storedLength;
      for (let next = k + 1; next < keep.length; next++) {
        const e = readIndexEntry(idx, keep[next]!);
        if (e.offset !== end || e.offset + e.storedLength - first.offset > REWRITE_READ_BYTES) break;
        run.push(e);
        end = e.offset + e.storedLength;
      }
      const bytes = end - first.offset;
      if (scratch.buf.length < bytes) scratch.buf = new Uint8Array(bytes);
      const got = await reader.source.readInto(path, scratch.buf, 0, bytes, first.offset);
      if (got !== bytes) throw new CairnError("E_STORE_DAMAGED", `${path} is truncated`);
      for (const e of run) {
        const at = e.offset - first.offset;
        digestBytes.set(e.digest);
        pack.appendRun(digest, 0, scratch.buf, at, at + e.storedLength, e.rawLength, e.flags);
      }
      // written from the scratch buffer itself, before the next run reads into it
      pack.flushRun();
      k += run.length;
    }
  } catch (e) {
    pack.abandon();
    throw e;
  }
  pack.close();
  publishPackFiles(dir, pack.packId);
  fsyncDir(join(dir, "packs", pack.packId.slice(0, 2)));
  return pack.packId;
}
