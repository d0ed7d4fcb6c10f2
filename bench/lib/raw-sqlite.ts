/**
 * "Raw bun:sqlite insert loop": the ceiling for the node's write path. A plain database with the
 * node's durability settings (WAL, synchronous=FULL, no automatic checkpoints in the commit path,
 * as the node runs them in a worker) and a table blobs(id TEXT UNIQUE, data BLOB); rows are
 * inserted in a tight loop, `rowsPerTxn` per transaction (1, and 16: what the node's group
 * commit can reach with 16 PUTs in flight).
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import type { BenchContext, Section } from "./section.ts";
import { num, table } from "./report.ts";
import { percentile, throughput } from "./stats.ts";
import { BLOB_SIZES, CELL_TIME_CAP_MS, CONCURRENCIES, type BlobSize, randomBodies, scaledCount } from "./workload.ts";

export interface RawCell {
  size: BlobSize;
  rowsPerTxn: number;
  rows: number;
  elapsedMs: number;
  rowsPerSec: number;
  mibPerSec: number;
  txnP50Ms: number;
  txnP99Ms: number;
  capped: boolean;
}

function measureCell(dir: string, size: BlobSize, rowsPerTxn: number): RawCell {
  const count = scaledCount(size);
  const bodies = randomBodies(count, size.bytes);
  const db = new Database(join(dir, "raw.db"), { create: true, strict: true });
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA wal_autocheckpoint = 0");
    db.exec("CREATE TABLE blobs (id TEXT UNIQUE, data BLOB)");
    const insert = db.query<unknown, [string, Uint8Array]>("INSERT INTO blobs (id, data) VALUES (?, ?)");
    const insertMany = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) insert.run(`raw-${i}`, bodies[i]!);
    });
    const txnMs: number[] = [];
    let rows = 0;
    let capped = false;
    const start = performance.now();
    const deadline = start + CELL_TIME_CAP_MS;
    while (rows < count) {
      if (performance.now() > deadline) {
        capped = true;
        break;
      }
      const to = Math.min(count, rows + rowsPerTxn);
      const t0 = performance.now();
      insertMany(rows, to);
      txnMs.push(performance.now() - t0);
      rows = to;
    }
    const elapsedMs = performance.now() - start;
    const t = throughput(rows, size.bytes, elapsedMs);
    return {
      size,
      rowsPerTxn,
      rows,
      elapsedMs,
      rowsPerSec: t.perSec,
      mibPerSec: t.mibPerSec,
      txnP50Ms: percentile(txnMs, 50),
      txnP99Ms: percentile(txnMs, 99),
      capped,
    };
  } finally {
    db.close();
  }
}

/** Every raw cell, measured once per run (the node section asks for them before starting the node). */
export function rawSqliteResults(ctx: BenchContext): Promise<RawCell[]> {
  return ctx.once("raw-sqlite", async () => {
    const cells: RawCell[] = [];
    for (const size of BLOB_SIZES) {
      for (const rowsPerTxn of CONCURRENCIES) {
        const dir = ctx.tmp.make("cairn-bench-raw-");
        try {
          ctx.log(`raw bun:sqlite: ${size.label} rows, ${rowsPerTxn} per transaction`);
          cells.push(measureCell(dir, size, rowsPerTxn));
        } finally {
          ctx.tmp.remove(dir);
        }
      }
    }
    return cells;
  });
}

export function findRawCell(cells: readonly RawCell[], size: BlobSize, rowsPerTxn: number): RawCell | undefined {
  return cells.find((c) => c.size === size && c.rowsPerTxn === rowsPerTxn);
}

export const rawSqliteSection: Section = {
  title: "Raw bun:sqlite insert loop",
  async run(ctx) {
    const cells = await rawSqliteResults(ctx);
    const rows = cells.map((c) => [
      c.size.label,
      String(c.rowsPerTxn),
      `${c.rows}${c.capped ? " (time cap)" : ""}`,
      num(c.rowsPerSec),
      num(c.mibPerSec),
      num(c.txnP50Ms),
      num(c.txnP99Ms),
    ]);
    return [
      "The ceiling for the node's PUT path: `INSERT INTO blobs(id, data)` in a loop in this process on a",
      "fresh database (`journal_mode=WAL`, `synchronous=FULL`, `wal_autocheckpoint=0` like the node's",
      "connection), table `blobs(id TEXT UNIQUE, data BLOB)`, no HTTP, no digests, no totals.",
      "16 rows per transaction is what the node's group commit can reach with 16 PUTs in flight.",
      "",
      table(
        [
          { header: "row size" },
          { header: "rows / txn", align: "right" },
          { header: "rows", align: "right" },
          { header: "rows/s", align: "right" },
          { header: "MiB/s", align: "right" },
          { header: "txn p50 ms", align: "right" },
          { header: "txn p99 ms", align: "right" },
        ],
        rows,
      ),
    ].join("\n");
  },
};
