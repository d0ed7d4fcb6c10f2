/**
 * The segment table a checkpoint builds on the previous one's (checkpoint/segments.ts): the
 * segments not rebuilt are the previous ones, column for column, and the table names only the
 * packs still in use.
 */
import { describe, expect, test } from "bun:test";
import { packsOf, patchedTable, placeAt, type SegmentPlace, segmentTable } from "../../src/checkpoint/segments.ts";

const place = (packId: string, offset: number, blockPacks: string[]): SegmentPlace => ({ packId, offset, stored: 100 + offset, raw: 200 + offset, flags: 1, blockPacks });

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

  test("a segment neither rebuilt nor in the previous table is refused", () => {
    const prev = segmentTable([place("s1", 0, ["a"])]);
    expect(() => patchedTable(prev, [undefined, undefined])).toThrow(/segment 1 is neither rebuilt nor the previous checkpoint's/);
  });
});
