/**
 * Verifying checkpoints: re-read every file and every block they need and check it (manifest
 * and index checksums, pack magic and length, each block's BLAKE3). Each pack is read once,
 * however many checkpoints share it; every damaged checkpoint is named with what is wrong.
 */
import { CairnError, errorMessage } from "../errors.ts";
import { type Manifest, packPath, SEGMENT_ENTRY_BYTES } from "./format.ts";
import { toHex } from "./hash.ts";
import { decodeBlock, PACK_MAGIC, readIndexEntry } from "./pack.ts";
import type { Store } from "./store.ts";
import type { StreamReader } from "./stream-reader.ts";

export interface CheckpointVerdict {
  id: number;
  ok: boolean;
  problems: string[];
  blocks: number;
  bytes: number;
}

export interface VerifyProgress {
  packsDone: number;
  packsTotal: number;
  bytesDone: number;
}

/** At most this many problems are named per checkpoint; the rest are counted. */
const MAX_PROBLEMS = 20;

export async function verifyCheckpoints(
  store: Store,
  ids: number[],
  onProgress?: (p: VerifyProgress) => void,
): Promise<CheckpointVerdict[]> {
  if (store.streamer) return verifyStream(store.streamer, onProgress);
  const reader = store.reader!;
  await reader.info();
  const manifests = new Map<number, Manifest>();
  const verdicts = new Map<number, CheckpointVerdict>();
  for (const id of ids) {
    const v: CheckpointVerdict = { id, ok: true, problems: [], blocks: 0, bytes: 0 };
    verdicts.set(id, v);
    try {
      manifests.set(id, await reader.manifest(id));
    } catch (e) {
      v.problems.push(errorMessage(e));
    }
  }

  // every pack once: its index, its header, and every block in it
  const packProblems = new Map<string, string>();
  const goodBlocks = new Map<string, string[]>(); // digest hex → packs holding it intact
  const badBlocks = new Map<string, string>(); // digest hex → what is wrong
  const packs = [...new Set([...manifests.values()].flatMap((m) => m.packs))].sort();
  let bytesDone = 0;
  for (let i = 0; i < packs.length; i++) {
    const packId = packs[i]!;
    try {
      const idx = await reader.index(packId);
      const path = packPath(packId);
      // one byte more than the index says: a longer file is reported, never read whole
      const data = await reader.source.get(path, idx.packBytes + 1);
      bytesDone += data.length;
      const name = `${reader.location}/${path}`;
      if (new TextDecoder().decode(data.subarray(0, 8)) !== PACK_MAGIC) throw new CairnError("E_STORE_DAMAGED", `${name}: not a pack (bad magic)`);
      if (data.length !== idx.packBytes) {
        throw new CairnError("E_STORE_DAMAGED", `${name}: ${data.length} bytes, its index says ${idx.packBytes} (${data.length < idx.packBytes ? "truncated" : "extended"})`);
      }
      for (let k = 0; k < idx.count; k++) {
        const e = readIndexEntry(idx, k);
        const hex = toHex(e.digest);
        try {
          decodeBlock(data.subarray(e.offset, e.offset + e.storedLength), e, name);
          goodBlocks.set(hex, [...(goodBlocks.get(hex) ?? []), packId]);
        } catch (err) {
          badBlocks.set(hex, errorMessage(err));
        }
      }
    } catch (e) {
      packProblems.set(packId, errorMessage(e));
    }
    onProgress?.({ packsDone: i + 1, packsTotal: packs.length, bytesDone });
  }

  for (const [id, m] of manifests) {
    const v = verdicts.get(id)!;
    const problem = (s: string) => {
      if (v.problems.length < MAX_PROBLEMS) v.problems.push(s);
      else if (v.problems.length === MAX_PROBLEMS) v.problems.push("(more problems not shown)");
    };
    for (const p of m.packs) if (packProblems.has(p)) problem(packProblems.get(p)!);
    const mine = new Set(m.packs);
    const blockOk = (hex: string, what: string): boolean => {
      const bad = badBlocks.get(hex);
      if (bad) {
        problem(`${what}: ${bad}`);
        return false;
      }
      const at = goodBlocks.get(hex);
      if (!at?.some((p) => mine.has(p))) {
        // it may still be in one of this checkpoint's packs that could not be read
        if (!m.packs.some((p) => packProblems.has(p))) problem(`${what} (${hex.slice(0, 16)}…) is in none of its packs`);
        return false;
      }
      return true;
    };
    let listOk = true;
    for (let s = 0; s < m.segments.length; s++) listOk = blockOk(m.segments[s]!, `segment ${s}`) && listOk;
    if (listOk) {
      try {
        const list = await reader.blockList(m);
        for (let b = 0; b < m.block_count; b++) {
          const hex = toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32));
          if (blockOk(hex, `block ${b}`)) v.blocks++;
        }
        v.bytes = m.db_size_bytes;
      } catch (e) {
        problem(errorMessage(e));
      }
    }
  }
  for (const v of verdicts.values()) v.ok = v.problems.length === 0;
  return ids.map((id) => verdicts.get(id)!);
}

/** A stream (an archive) holds one checkpoint: stream it through every check a restore makes. */
async function verifyStream(reader: StreamReader, onProgress?: (p: VerifyProgress) => void): Promise<CheckpointVerdict[]> {
  const [id] = await reader.manifestIds();
  const v: CheckpointVerdict = { id: id!, ok: true, problems: [], blocks: 0, bytes: 0 };
  let lastReport = 0;
  try {
    const m = await reader.streamBlocks((_b, data) => {
      v.blocks++;
      v.bytes += data.length;
      if (onProgress && v.bytes - lastReport >= 64 * 1024 * 1024) {
        lastReport = v.bytes;
        onProgress({ packsDone: 0, packsTotal: 0, bytesDone: v.bytes });
      }
    });
    v.bytes = m.db_size_bytes;
  } catch (e) {
    v.problems.push(errorMessage(e));
  }
  v.ok = v.problems.length === 0;
  return [v];
}
