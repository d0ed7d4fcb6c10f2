/**
 * What a store's own work looks like in a worker thread (the node never does it on its main
 * thread): loading every pack index of a local store into a digest table, loading a
 * checkpoint's block list, and garbage collection.
 */
import { DirBackend } from "./dir/backend.ts";
import { DigestTable } from "./digest-table.ts";
import { collectGarbage, type GcOptions } from "./gc.ts";
import { INDEX_ENTRY_BYTES } from "./pack.ts";
import { StoreReader } from "./reader.ts";

export type StoreJob =
  | { job: "store"; op: "loadTable"; storeDir: string; packIds: string[] }
  | { job: "store"; op: "loadBlockList"; storeDir: string; manifestId: number }
  | ({ job: "store"; op: "gc"; storeDir: string } & GcOptions);

export async function storeJob(msg: StoreJob): Promise<unknown> {
  switch (msg.op) {
    case "loadTable":
      return loadTable(msg.storeDir, msg.packIds);
    case "loadBlockList":
      return loadBlockList(msg.storeDir, msg.manifestId);
    case "gc":
      return collectGarbage(msg.storeDir, msg);
  }
}

/** Every index of `packIds` in a new digest table (numbered in that order), with room to grow. */
async function loadTable(storeDir: string, packIds: string[]): Promise<SharedArrayBuffer> {
  const { indexes, entries } = await new StoreReader(new DirBackend(storeDir)).indexesOf(packIds);
  // room to grow: the next checkpoints add their blocks to this table (the node keeps it)
  const t = DigestTable.create(Math.ceil(entries * 1.5));
  indexes.forEach((idx, packIndex) => {
    for (let i = 0; i < idx.count; i++) t.insertAt(idx.entries, i * INDEX_ENTRY_BYTES, packIndex);
  });
  return t.buffer;
}

/** Checkpoint `manifestId`'s block list, in a buffer the caller's threads can share. */
async function loadBlockList(storeDir: string, manifestId: number): Promise<{ entries: SharedArrayBuffer; count: number }> {
  const reader = new StoreReader(new DirBackend(storeDir));
  const m = await reader.manifest(manifestId);
  const list = await reader.blockList(m);
  const sab = new SharedArrayBuffer(list.length);
  new Uint8Array(sab).set(list);
  return { entries: sab, count: m.block_count };
}
