/** Bearer tokens (src/api/auth.ts): token files, matching, and the rate-limited refusal log. */
import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FailedAuthLog, TokenSet } from "../../src/api/auth.ts";
import { isLoopback } from "../../src/util/net.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";

cleanTmpDirsAfterEach();

const A = "a".repeat(20);
const B = "b".repeat(32);

function file(text: string, mode = 0o600): string {
  const f = join(tmpDir(), "tokens");
  writeFileSync(f, text);
  chmodSync(f, mode);
  return f;
}

describe("TokenSet", () => {
  test("matches exactly the listed tokens, with any case of 'Bearer', and nothing else", () => {
    const t = TokenSet.read(file(`# comment\n\n  ${A}  \n${B}\n`), { key: "k" });
    expect(t.size).toBe(2);
    expect(t.match(`Bearer ${A}`)).toBeDefined();
    expect(t.match(`bearer ${B}`)).toBeDefined();
    for (const bad of [null, "", "Bearer", `Bearer ${A}x`, `Bearer ${A.slice(1)}`, `Basic ${A}`, A, `Bearer ${A} ${B}`, "Bearer # comment"]) {
      expect(t.match(bad)).toBeUndefined();
    }
  });

  test("scoped lines: each token's own scopes; unknown scopes and malformed lines are refused by line number, never echoing a token", () => {
    const t = TokenSet.read(file(`${A} read\n${B} read,write,delete\n`), { key: "k", scopes: ["read", "write", "delete", "metrics"] });
    expect([...t.match(`Bearer ${A}`)!]).toEqual(["read"]);
    expect([...t.match(`Bearer ${B}`)!].sort()).toEqual(["delete", "read", "write"]);
    const refusals: [string, RegExp][] = [
      [`${A} read\n${B} admin\n`, /line 2: unknown scope "admin"/],
      [`${A}\n`, /line 1: expected "TOKEN SCOPE\[,SCOPE\]"/],
    ];
    for (const [text, re] of refusals) {
      let msg = "";
      try {
        TokenSet.read(file(text), { key: "k", scopes: ["read", "write", "delete", "metrics"] });
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(msg).toMatch(re);
      expect(msg).not.toContain(A);
      expect(msg).not.toContain(B);
    }
  });

  test("refused: a file others can read, an empty one, short tokens, odd characters, two tokens on a line", () => {
    const cases: [string, number, RegExp][] = [
      [`${A}\n`, 0o640, /has mode 0640; a token file must be owner-only/],
      [`${A}\n`, 0o604, /has mode 0604/],
      ["# nothing\n\n", 0o600, /holds no token/],
      ["short\n", 0o600, /line 1: the token is shorter than 16 characters/],
      [`${A}"<>\n`, 0o600, /line 1: the token has characters a bearer token cannot have/],
      [`${A} ${B}\n`, 0o600, /line 1: expected one token on the line and nothing else/],
    ];
    for (const [text, mode, re] of cases) {
      let err: { code?: string; message: string } = { message: "" };
      try {
        TokenSet.read(file(text, mode), { key: "admin_api.token_file" });
      } catch (e) {
        err = e as typeof err;
      }
      expect(err.code).toBe("E_CONFIG");
      expect(err.message).toMatch(re);
      expect(err.message).not.toContain(A);
    }
  });
});

describe("FailedAuthLog", () => {
  test("one line per interval, with the number of refusals left out since the last one", () => {
    let now = 0;
    const lines: string[] = [];
    const log = new FailedAuthLog((m) => lines.push(m), "admin API", 10_000, () => now);
    log.note("10.0.0.1", "no token");
    for (let i = 0; i < 50; i++) {
      now += 100;
      log.note("10.0.0.2", "unknown token");
    }
    now += 10_000;
    log.note("10.0.0.3", "unknown token");
    expect(log.total).toBe(52);
    expect(lines).toEqual([
      "admin API: refused a request from 10.0.0.1: no token",
      "admin API: refused a request from 10.0.0.3: unknown token (and 50 more refused since the last such line)",
    ]);
  });
});

test("isLoopback", () => {
  for (const h of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) expect(isLoopback(h)).toBe(true);
  for (const h of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com", "128.0.0.1", "[::]"]) expect(isLoopback(h)).toBe(false);
});
