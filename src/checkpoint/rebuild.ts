/**
 * Rebuilding a checkpoint's database image: every block read from its pack, checked against
 * its digest, and written at its place. The simple, sequential form; restore builds on it.
 */
import { closeSync, fsyncSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { CairnError } from "../errors.ts";
import { SEGMENT_ENTRY_BYTES, type Manifest } from "./format.ts";
import { toHex } from "./hash.ts";
import type { StoreReader } from "./reader.ts";

export async function rebuildImage(reader: StoreReader, m: Manifest, outFile: string, opts: { sync?: boolean } = {}): Promise<void> {
  const where = await reader.locate(m.packs);
  const list = await reader.blockList(m, where);
  const fd = openSync(outFile, "w", 0o644);
  try {
    for (let b = 0; b < m.block_count; b++) {
      const hex = toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32));
      const loc = where.get(hex);
      if (!loc) throw new CairnError("E_STORE_DAMAGED", `checkpoint ${m.id}: block ${b} (${hex.slice(0, 16)}…) is in none of its packs`);
      const data = await reader.block(loc);
      let off = 0;
      while (off < data.length) off += writeSync(fd, data, off, data.length - off, b * m.block_size + off);
    }
    ftruncateSync(fd, m.db_size_bytes);
    if (opts.sync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
