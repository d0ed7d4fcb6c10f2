/**
 * "Node: PUT and GET": the compiled binary on a fresh storage dir, driven over HTTP on 127.0.0.1
 * by the fetch-based load loop (load.ts). Per blob size and concurrency: PUT `count` new blobs
 * of random bytes, then GET each of them back. Every response is checked (PUT 201/204, GET 200
 * with the right length); anything else counts as failed and fails the run.
 */
import { type LoadResult, putBlob, runLoad } from "./load.ts";
import { ensureBinary, type RunningNode, withNode } from "./node.ts";
import { findRawCell, rawSqliteResults } from "./raw-sqlite.ts";
import { num, ratio, table } from "./report.ts";
import type { Section } from "./section.ts";
import { percentile, throughput } from "./stats.ts";
import { BLOB_SIZES, CELL_TIME_CAP_MS, CONCURRENCIES, type BlobSize, MiB, randomBodies, scaledCount } from "./workload.ts";

type Op = "PUT" | "GET";

interface NodeCell {
  op: Op;
  size: BlobSize;
  concurrency: number;
  load: LoadResult;
  /** PUT only: group commits the node made during the cell, from /metrics. */
  commits?: number;
}

async function getBlob(url: string, id: string, expectedBytes: number): Promise<void> {
  const res = await fetch(`${url}/v1/blobs/${id}`);
  if (res.status !== 200) throw new Error(`GET ${id}: HTTP ${res.status} ${(await res.text()).slice(0, 200).trim()}`);
  const got = (await res.arrayBuffer()).byteLength;
  if (got !== expectedBytes) throw new Error(`GET ${id}: ${got} bytes, expected ${expectedBytes}`);
}

/** A counter without labels from the node's /metrics. */
async function counter(node: RunningNode, name: string): Promise<number> {
  const res = await fetch(`${node.url}/metrics`);
  const text = await res.text();
  if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status}`);
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!m) throw new Error(`/metrics has no ${name}`);
  return Number(m[1]);
}

/** Open connections and let both processes' JITs settle before anything is timed. */
async function warmUp(node: RunningNode): Promise<void> {
  const bodies = randomBodies(64, 4096);
  for (const op of ["PUT", "GET"] as const) {
    const r = await runLoad({
      count: bodies.length,
      concurrency: 16,
      timeCapMs: CELL_TIME_CAP_MS,
      request: (i) => (op === "PUT" ? putBlob(node.url, `warmup-${i}`, bodies[i]!) : getBlob(node.url, `warmup-${i}`, 4096)),
    });
    if (r.failed > 0) throw new Error(`warm-up ${op} failed: ${r.firstFailure}`);
  }
}

async function measure(node: RunningNode, log: (msg: string) => void): Promise<NodeCell[]> {
  const cells: NodeCell[] = [];
  for (const size of BLOB_SIZES) {
    for (const concurrency of CONCURRENCIES) {
      const count = scaledCount(size);
      const bodies = randomBodies(count, size.bytes);
      const id = (i: number) => `c${concurrency}-${size.bytes}-${i}`;
      log(`node: PUT ${count} × ${size.label} at concurrency ${concurrency}`);
      const commitsBefore = await counter(node, "cairn_write_commits_total");
      const put = await runLoad({
        count,
        concurrency,
        timeCapMs: CELL_TIME_CAP_MS,
        request: (i) => putBlob(node.url, id(i), bodies[i]!),
      });
      const commits = (await counter(node, "cairn_write_commits_total")) - commitsBefore;
      cells.push({ op: "PUT", size, concurrency, load: put, commits });
      const stored = put.okIndices;
      log(`node: GET ${stored.length} × ${size.label} at concurrency ${concurrency}`);
      const get = await runLoad({
        count: stored.length,
        concurrency,
        timeCapMs: CELL_TIME_CAP_MS,
        request: (j) => getBlob(node.url, id(stored[j]!), size.bytes),
      });
      cells.push({ op: "GET", size, concurrency, load: get });
    }
  }
  return cells;
}

interface StatusAfter {
  blob_count: number;
  blob_bytes: number;
  db_size_bytes: number;
  wal_checkpoints: { runs: number; truncations: number; wal_high_water_bytes: number };
}

async function statusOf(node: RunningNode): Promise<StatusAfter> {
  const res = await fetch(`${node.url}/v1/status`);
  if (!res.ok) throw new Error(`GET /v1/status: HTTP ${res.status}`);
  return (await res.json()) as StatusAfter;
}

export const nodePutGetSection: Section = {
  title: "Node: PUT and GET",
  async run(ctx) {
    await ensureBinary(ctx.log);
    // the ceiling first, while no node competes for the disk
    const raw = await rawSqliteResults(ctx);

    const dir = ctx.tmp.make("cairn-bench-node-");
    let cells: NodeCell[];
    let status: StatusAfter;
    try {
      ctx.log("node: starting dist/cairn");
      ({ cells, status } = await withNode(dir, async (node) => {
        await warmUp(node);
        const cells = await measure(node, ctx.log);
        return { cells, status: await statusOf(node) };
      }));
      ctx.log("node: stopped cleanly (exit code 0)");
    } finally {
      ctx.tmp.remove(dir);
    }

    const order = (c: NodeCell) => [BLOB_SIZES.indexOf(c.size), c.op === "PUT" ? 0 : 1, c.concurrency] as const;
    cells.sort((a, b) => {
      const [x, y] = [order(a), order(b)];
      return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
    });

    const notes: string[] = [];
    const rows = cells.map((c) => {
      const l = c.load;
      const t = throughput(l.okIndices.length, c.size.bytes, l.elapsedMs);
      let vsRaw = "";
      let perCommit = "";
      if (c.op === "PUT") {
        const r = findRawCell(raw, c.size, c.concurrency);
        vsRaw = r ? ratio(t.perSec / r.rowsPerSec) : "–";
        perCommit = c.commits ? num(l.okIndices.length / c.commits) : "–";
      }
      const what = `${c.op} ${c.size.label} at concurrency ${c.concurrency}`;
      if (l.failed > 0) {
        ctx.fail(`${what}: ${l.failed} failed request(s)`);
        notes.push(`- ${what}: ${l.failed} failed; first: ${l.firstFailure}`);
      }
      if (l.capped) notes.push(`- ${what}: stopped by the ${CELL_TIME_CAP_MS / 1000} s time cap after ${l.attempted} requests`);
      return [
        c.op,
        c.size.label,
        String(c.concurrency),
        String(l.attempted),
        String(l.failed),
        num(t.perSec),
        num(t.mibPerSec),
        num(percentile(l.latenciesMs, 50)),
        num(percentile(l.latenciesMs, 99)),
        perCommit,
        vsRaw,
      ];
    });

    const wal = status.wal_checkpoints;
    return [
      "`dist/cairn run` on a fresh storage dir in /tmp, REST API on 127.0.0.1; the load comes from",
      "`fetch` in the bench process with *concurrency* requests in flight. PUTs write new ids with",
      "random bodies (acknowledged only once fsynced); GETs then read the same blobs back, each",
      "checked for status and length. Latency is per request, body included. The bench process and",
      "the node share the machine's cores.",
      "*PUTs / commit* is how many PUTs the node's group commit put in one transaction (its /metrics).",
      "*node / raw* compares PUT requests/s with the raw bun:sqlite loop below at the same size and",
      "rows per transaction = concurrency.",
      "",
      table(
        [
          { header: "op" },
          { header: "blob size" },
          { header: "concurrency", align: "right" },
          { header: "requests", align: "right" },
          { header: "failed", align: "right" },
          { header: "req/s", align: "right" },
          { header: "MiB/s", align: "right" },
          { header: "p50 ms", align: "right" },
          { header: "p99 ms", align: "right" },
          { header: "PUTs / commit", align: "right" },
          { header: "node / raw", align: "right" },
        ],
        rows,
      ),
      "",
      `Node after the run: ${status.blob_count} blobs, ${num(status.blob_bytes / MiB)} MiB of blobs, ` +
        `database file ${num(status.db_size_bytes / MiB)} MiB; WAL checkpoints: ${wal.runs} ` +
        `(${wal.truncations} truncating), WAL high water ${num(wal.wal_high_water_bytes / MiB)} MiB. ` +
        "Stopped with SIGTERM, exit code 0.",
      ...(notes.length > 0 ? ["", ...notes] : []),
    ].join("\n");
  },
};
