/**
 * `cairn key generate`, the compiled binary end to end: a new key file, owner only, never
 * written over an existing file, and the key itself never printed.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { runCairn } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

describe("cairn key generate", () => {
  test("writes a mode 0600 key file and names its id, not the key; refuses to overwrite it or to write without --output", () => {
    const dir = tmpDir();
    const out = join(dir, "checkpoint.key");
    const r = runCairn(["key", "generate", "--output", out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Wrote a new key to \S+checkpoint\.key \(key id [0-9a-f]{16}\)\. Keep a copy off this host/);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const text = readFileSync(out, "utf8");
    const key = /^cairn-key-v1:(\S+)$/m.exec(text)![1]!;
    expect(r.stdout + r.stderr).not.toContain(key);

    const again = runCairn(["key", "generate", "--output", out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toBe(`error: ${out} already exists; a key file is never overwritten. Try: give another --output, or remove the old file yourself\n`);
    expect(readFileSync(out, "utf8")).toBe(text);
    expect(readdirSync(dir)).toEqual(["checkpoint.key"]);

    const second = join(dir, "second.key");
    expect(runCairn(["key", "generate", "--output", second]).code).toBe(0);
    expect(readFileSync(second, "utf8")).not.toBe(text);

    const usage = runCairn(["key", "generate"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--output");
  });
});
