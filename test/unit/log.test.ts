/**
 * The shipped log's format and planning (store/log.ts): segments round-trip and refuse damage,
 * and a restore to an instant picks the newest checkpoint at or before it on the timeline, the
 * segments after it, and nothing after the instant; forks follow their base; retention keeps
 * the log from the oldest retained checkpoint on.
 */
import { describe, expect, test } from "bun:test";
import type { Manifest } from "../../src/store/format.ts";
import {
  type ChainInfo,
  chainPath,
  decodeSegment,
  encodeSegment,
  indexLog,
  lineage,
  type LogIndex,
  neededLogFiles,
  planInstant,
  segmentOf,
  windowOf,
} from "../../src/store/log.ts";

const A = "aaaaaaaaaaaaaaaa";
const B = "bbbbbbbbbbbbbbbb";

function seg(chain: string, first: number, last: number, firstMs: number, untilMs: number): string {
  return `log/${chain}/${String(first).padStart(12, "0")}-${String(last).padStart(12, "0")}-${String(firstMs).padStart(13, "0")}-${String(untilMs).padStart(13, "0")}-${"0".repeat(64)}.seg`;
}

async function index(paths: string[], infos: ChainInfo[]): Promise<LogIndex> {
  return indexLog([...paths, ...infos.map((i) => chainPath(i.chain))], undefined, "test", new Map(infos.map((i) => [i.chain, i])));
}

const info = (chain: string, base: ChainInfo["base"] = null, created = "2026-12-01T00:00:00.000Z"): ChainInfo => ({ format: 1, chain, node_id: "n", created, base });
const manifest = (id: number, log: Manifest["log"]): Manifest => ({ id, log }) as Manifest;

describe("log segments", () => {
  test("round trip; a flipped byte and a wrong name are refused", () => {
    const page = (n: number) => new Uint8Array(4096).fill(n);
    const { path, data } = encodeSegment(
      { chain: A, node_id: "n", first_txn: 1, last_txn: 2, first_ms: 1000, until_ms: 1500, prev: null, page_size: 4096, wal: { salt1: 1, salt2: 2, frame: 3 } },
      "zstd",
      [
        { commitMs: 1000, dbPages: 3, pages: [{ pgno: 1, data: page(1) }, { pgno: 3, data: page(3) }] },
        { commitMs: 1200, dbPages: 2, pages: [{ pgno: 2, data: page(2) }] },
      ],
    );
    const ref = segmentOf(path)!;
    expect(ref).toMatchObject({ chain: A, firstTxn: 1, lastTxn: 2, firstMs: 1000, untilMs: 1500 });
    const { txns } = decodeSegment(data, ref, "test");
    expect(txns.map((t) => [t.txn, t.commitMs, t.dbPages, t.pages.map((p) => p.pgno)])).toEqual([
      [1, 1000, 3, [1, 3]],
      [2, 1200, 2, [2]],
    ]);
    expect(txns[0]!.pages[1]!.data[100]).toBe(3);
    const bad = data.slice();
    bad[bad.length - 5]! ^= 1;
    expect(() => decodeSegment(bad, ref, "test")).toThrow(/does not match its digest/);
    expect(() => decodeSegment(data, { ...ref, untilMs: 1600 }, "test")).toThrow(/does not match its name/);
    expect(segmentOf("log/xyz/1.seg")).toBeUndefined();
  });
});

describe("planning a restore to an instant", () => {
  test("the newest checkpoint at or before the instant, the segments after it, nothing past the instant", async () => {
    const ix = await index([seg(A, 1, 10, 100, 200), seg(A, 11, 20, 210, 300), seg(A, 21, 30, 310, 400)], [info(A)]);
    const ms = [manifest(1, { chain: A, txn: 0, ms: 50 }), manifest(2, { chain: A, txn: 15, ms: 250 })];
    const p1 = planInstant(ix, ms, A, 220)!;
    expect(p1.manifest.id).toBe(1);
    expect(p1.steps.map((s) => [s.segment.firstTxn, s.from, s.to])).toEqual([
      [1, 1, 10],
      [11, 11, 20],
    ]);
    const p2 = planInstant(ix, ms, A, 350)!;
    expect(p2.manifest.id).toBe(2);
    expect(p2.steps.map((s) => [s.segment.firstTxn, s.from, s.to])).toEqual([
      [11, 16, 20],
      [21, 21, 30],
    ]);
    expect(windowOf(ix, ms, A)).toEqual({ from: 50, to: 400 });
    expect(planInstant(ix, ms, A, 401)).toBeUndefined();
    expect(planInstant(ix, ms, A, 49)).toBeUndefined();
  });

  test("a gap ends what a chain can reach", async () => {
    const ix = await index([seg(A, 1, 10, 100, 200), seg(A, 21, 30, 310, 400)], [info(A)]);
    expect(ix.chains.get(A)!.gapAt).toBe(11);
    expect(windowOf(ix, [manifest(1, { chain: A, txn: 0, ms: 50 })], A)).toEqual({ from: 50, to: 200 });
  });

  test("a fork follows its base: the old chain up to the fork point, then its own", async () => {
    const ix = await index(
      [seg(A, 1, 10, 100, 200), seg(A, 11, 20, 210, 300), seg(B, 1, 5, 500, 600)],
      [info(A), info(B, { chain: A, txn: 12, ms: 220 }, "2026-12-01T01:00:00.000Z")],
    );
    expect(lineage(ix, B)).toEqual([
      { chain: A, from: 1, to: 12 },
      { chain: B, from: 1, to: Infinity },
    ]);
    const ms = [manifest(1, { chain: A, txn: 0, ms: 50 })];
    const p = planInstant(ix, ms, B, 550)!;
    expect(p.steps.map((s) => [s.segment.chain, s.from, s.to])).toEqual([
      [A, 1, 10],
      [A, 11, 12],
      [B, 1, 5],
    ]);
    // on the old timeline the same instant is its own last state
    expect(planInstant(ix, ms, A, 550)).toBeUndefined();
    expect(planInstant(ix, ms, A, 290)!.steps.at(-1)!.to).toBe(20);
  });

  test("retention keeps from the oldest retained checkpoint on, the forks from it, and the chain being written", async () => {
    const paths = [seg(A, 1, 10, 100, 200), seg(A, 11, 20, 210, 300), seg(B, 1, 5, 500, 600), seg("cccccccccccccccc", 1, 2, 700, 800)];
    const ix = await index(paths, [info(A), info(B, { chain: A, txn: 12, ms: 220 }), info("cccccccccccccccc")]);
    const need = neededLogFiles(ix, [manifest(2, { chain: A, txn: 10, ms: 205 })], "cccccccccccccccc");
    expect(need.has(paths[0]!)).toBe(false);
    expect(need.has(paths[1]!)).toBe(true);
    expect(need.has(paths[2]!)).toBe(true);
    expect(need.has(paths[3]!)).toBe(true);
    const later = neededLogFiles(ix, [manifest(3, { chain: A, txn: 20, ms: 305 })], undefined);
    expect(later.has(paths[1]!)).toBe(false);
    // the fork at 12 started before the retained checkpoint's image: no longer reachable from it
    expect(later.has(paths[2]!)).toBe(false);
  });
});
