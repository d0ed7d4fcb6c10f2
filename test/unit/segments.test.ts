/**
 * The segment table a checkpoint builds on the previous one's (checkpoint/segments.ts): the
 * segments not rebuilt are the previous ones, column for column, and the table names only the
 * packs still in use.
 */
import { describe, expect, test } from "bun:test";
import { packsOf, patchedTable, placeAt, type SegmentPlace, segmentTable, UNKNOWN_PACK } from "../../src/checkpoint/segments.ts";
import { SEGMENT_BLOCKS } from "../../src/store/format.ts";
import { blockPacksOf } from "../../src/store/jobs.ts";

/** A place whose blocks are in its packs in turn (block k in blockPacks[k % n]). */
const place = (packId: string, offset: number, blockPacks: string[]): SegmentPlace => ({
  packId,
  offset,
  stored: 100 + offset,
  raw: 200 + offset,
  flags: 1,
  blockPacks,
  blockPackOf: Uint8Array.from({ length: SEGMENT_BLOCKS }, (_, k) => k % blockPacks.length),
});

describe("segment tables", () => {
  test("a table built on the previous one: the rebuilt segments replaced, the others kept, unused packs dropped", () => {
    const prev = segmentTable([place("s1", 0, ["a", "b"]), place("s1", 10, ["b"]), place("s2", 20, ["c", "d"]), place("s2", 30, ["d"])]);
    // segment 2 rebuilt (its blocks now in "d" and "e", itself in "s3"); "c" is then named by nothing
    const t = patchedTable(prev, [undefined, undefined, place("s3", 5, ["d", "e"]), undefined, place("s3", 15, ["e"])]);
    expect([0, 1, 2, 3, 4].map((s) => placeAt(t, s))).toEqual([
      place("s1", 0, ["a", "b"]),
      place("s1", 10, ["b"]),
      place("s3", 5, ["d", "e"]),
      place("s2", 30, ["d"]),
      place("s3", 15, ["e"]),
    ]);
    expect(t.packIds).not.toContain("c");
    expect(packsOf(t)).toEqual(["a", "b", "d", "e", "s1", "s2", "s3"]);
    // the previous table is left as it was
    expect(placeAt(prev, 2)).toEqual(place("s2", 20, ["c", "d"]));
  });

  test("which of its packs each block is in: carried with the segment, unknown where a place does not say", () => {
    const prev = segmentTable([place("s1", 0, ["a", "b"]), { ...place("s1", 10, ["b", "c"]), blockPackOf: undefined }]);
    expect(placeAt(prev, 1).blockPackOf).toEqual(new Uint8Array(SEGMENT_BLOCKS).fill(UNKNOWN_PACK));
    const t = patchedTable(prev, [undefined, place("s2", 0, ["c", "d", "e"])]);
    expect(placeAt(t, 0).blockPackOf).toEqual(place("s1", 0, ["a", "b"]).blockPackOf!);
    expect(placeAt(t, 1).blockPackOf![4]).toBe(1);
  });

  test("a segment's packs from its blocks' packs: sorted, each block's position in them; past 255 packs, unknown", () => {
    const ids = ["p3", "p1", "p3", "p2", "p1"];
    const r = blockPacksOf((b) => ids[b]!, ids.length, SEGMENT_BLOCKS);
    expect(r.blockPacks).toEqual(["p1", "p2", "p3"]);
    expect([...r.blockPackOf.subarray(0, 6)]).toEqual([2, 0, 2, 1, 0, UNKNOWN_PACK]);
    const many = blockPacksOf((b) => `p${String(b).padStart(3, "0")}`, SEGMENT_BLOCKS, SEGMENT_BLOCKS);
    expect(many.blockPacks.length).toBe(SEGMENT_BLOCKS);
    expect(many.blockPackOf.every((x) => x === UNKNOWN_PACK)).toBe(true);
  });

  test("a segment neither rebuilt nor in the previous table is refused", () => {
    const prev = segmentTable([place("s1", 0, ["a"])]);
    expect(() => patchedTable(prev, [undefined, undefined])).toThrow(/segment 1 is neither rebuilt nor the previous checkpoint's/);
  });
});
