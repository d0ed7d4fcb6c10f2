/**
 * `bun bench/lib/floor-writer.ts WAL_FILE OUT_DIR`: the least a durable incremental checkpoint
 * of N new bytes must do, with none of cairn's code around it but the calls that do it (the
 * block hash, the write-back, the atomic file write), for the Scale section's latency floor.
 * For each line "N T" on stdin: read N bytes of the node's WAL (where an incremental finds the
 * changed pages, in the page cache), BLAKE3 each 8 KiB block, write them to a new pack file,
 * spread evenly over T ms (the time the checkpoint took), each window's write-back started as
 * it is written (sync_file_range, as the pack writer does), and fdatasync it; then write a
 * small manifest (writeFileAtomic: temp name, fsync, rename, fsync the folder). Prints "done"
 * after each. It runs in a process of its own, as a checkpoint's worker runs on a thread of
 * its own.
 */
import { closeSync, fdatasyncSync, mkdirSync, openSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { blockDigest } from "../../src/store/hash.ts";
import { DEFAULT_BLOCK_SIZE } from "../../src/store/format.ts";
import { writeFileAtomic } from "../../src/util/fsx.ts";
import { windowDone } from "../../src/util/writeback.ts";

/** Windows whose write-back may still be under way (as in the pack writer). */
const WINDOWS_IN_FLIGHT = 8;

const [walFile, outDir] = process.argv.slice(2);
if (!walFile || !outDir) {
  console.error("usage: bun bench/lib/floor-writer.ts WAL_FILE OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true, mode: 0o700 });
const wal = openSync(walFile, "r");
// a window of write-back at a time, as the pack writer does
const buf = new Uint8Array(2 * 1024 * 1024);
const manifest = new Uint8Array(4096);
let at = 0;
let packs = 0;
for await (const line of console) {
  if (!line.trim()) continue;
  const [bytes, spreadMs] = line.trim().split(/\s+/).map(Number);
  if (!(bytes! >= 0) || !(spreadMs! >= 0)) throw new Error(`floor-writer: expected a byte count and a time, got ${JSON.stringify(line)}`);
  let left = bytes!;
  const t0 = performance.now();
  let written = 0;
  const packFile = join(outDir, `${packs++ % 4}.pack`);
  rmSync(packFile, { force: true });
  const pack = openSync(packFile, "w", 0o600);
  while (left > 0) {
    const len = Math.min(buf.length, left);
    // the WAL is started over in place, so its size only grows: wrap around inside it
    if (at + len > statSync(walFile).size) at = 0;
    const got = readSync(wal, buf, 0, len, at) || len;
    at += got;
    left -= got;
    for (let o = 0; o < got; o += DEFAULT_BLOCK_SIZE) blockDigest(buf.subarray(o, Math.min(o + DEFAULT_BLOCK_SIZE, got)));
    writeSync(pack, buf, 0, got);
    if (!windowDone(pack, written, written + got, Math.max(0, written - WINDOWS_IN_FLIGHT * buf.length))) fdatasyncSync(pack);
    written += got;
    const due = t0 + (written / Math.max(1, bytes!)) * spreadMs!;
    const ahead = due - performance.now();
    if (ahead > 1) Bun.sleepSync(ahead);
  }
  fdatasyncSync(pack);
  closeSync(pack);
  writeFileAtomic(join(outDir, "manifest"), manifest);
  process.stdout.write("done\n");
}
