/**
 * What the bench writes: the blob sizes, how many of each per cell, the concurrencies, and
 * random bodies. Shared by the node section and the raw SQLite section so that both measure
 * the same work.
 *
 * CAIRN_BENCH_SCALE (default 1) multiplies every count, e.g. 0.1 for a quick smoke run.
 */

export interface BlobSize {
  label: string;
  bytes: number;
  /** Requests (or rows) per cell at scale 1. */
  count: number;
}

export const BLOB_SIZES: readonly BlobSize[] = [
  { label: "4 KiB", bytes: 4 * 1024, count: 10000 },
  { label: "1 MiB", bytes: 1024 * 1024, count: 600 },
];

/** In-flight requests against the node; for raw SQLite, the rows per transaction. */
export const CONCURRENCIES: readonly number[] = [1, 16];

/** Whatever the count, a cell stops starting new requests after this long. */
export const CELL_TIME_CAP_MS = 12_000;

export const MiB = 1024 * 1024;

export function benchScale(): number {
  const raw = process.env.CAIRN_BENCH_SCALE;
  if (raw === undefined || raw === "") return 1;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 100) throw new Error(`CAIRN_BENCH_SCALE must be a number in (0, 100], got ${JSON.stringify(raw)}`);
  return n;
}

export function scaledCount(size: BlobSize): number {
  return Math.max(16, Math.round(size.count * benchScale()));
}

/** getRandomValues fills at most 65536 bytes per call. */
const RANDOM_CHUNK = 65536;

export function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let off = 0; off < size; off += RANDOM_CHUNK) {
    crypto.getRandomValues(out.subarray(off, Math.min(off + RANDOM_CHUNK, size)));
  }
  return out;
}

/** `count` distinct random bodies of `size` bytes, made before the clock starts. */
export function randomBodies(count: number, size: number): Uint8Array[] {
  return Array.from({ length: count }, () => randomBytes(size));
}
