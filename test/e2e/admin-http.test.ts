/**
 * The admin API over HTTP(S) (admin_api): the admin socket's routes for requests with a bearer
 * token, driven from outside with curl and with `cairn local-admin --url`, as a cron job on
 * another host would.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { BINARY, freePort, type NodeHandle, runCairn, startNode, writeConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { listJson } from "../helpers/checkpoint.ts";
import { curl, makeCert, writeTokenFile } from "../helpers/tls.ts";

cleanTmpDirsAfterEach();

const TOKEN_A = "tok-A-7f3c9e1b2d4a6f8e0c1b3d5f7a9e2c4b";
const TOKEN_B = "tok-B-0a2c4e6f8b1d3f5a7c9e0b2d4f6a8c1e";

function tokenFile(dir: string, tokens: string[], mode = 0o600): string {
  return writeTokenFile(join(dir, "admin.tokens"), tokens, mode);
}

async function adminUrl(url: string, args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawn([BINARY, "local-admin", "--url", url, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

describe("admin API over HTTPS with bearer tokens", () => {
  test("no token, a wrong one: 401 with nothing more; a valid one runs every socket route; local-admin --url checkpoints; SIGHUP drops a removed token; no token in any log", async () => {
    const dir = tmpDir();
    const { cert, key } = makeCert(dir);
    const tokens = tokenFile(dir, [TOKEN_A]);
    const port = freePort();
    const node = await startNode(dir, {
      extraYaml: `admin_api:\n  address: 127.0.0.1:${port}\n  token_file: ${tokens}\n  tls:\n    cert_file: ${cert}\n    key_file: ${key}\n`,
    });
    const url = `https://127.0.0.1:${port}`;
    try {
      await fetch(`${node.url}/v1/blobs/a`, { method: "PUT", body: "hello" });
      // no token, a wrong token, a malformed header: 401, WWW-Authenticate, no detail
      for (const extra of [[], ["-H", `Authorization: Bearer ${TOKEN_B}`], ["-H", `Authorization: Basic ${btoa(`x:${TOKEN_A}`)}`], ["-H", `Authorization: Bearer ${TOKEN_A}x`]]) {
        const r = await curl(["--cacert", cert, ...extra, `${url}/v1/health`]);
        expect(r.status).toBe(401);
        expect(r.headers.toLowerCase()).toContain("www-authenticate: bearer");
        expect(JSON.parse(r.body)).toEqual({ error: { code: "E_UNAUTHORIZED", message: "unauthorized" } });
      }
      // a refused request is logged with the peer's address
      await waitFor(() => /admin API: refused a request from 127\.0\.0\.1/.test(node.logs()), { what: "the refusal in the log" });
      // the valid token: the socket's routes
      const health = await curl(["--cacert", cert, "-H", `Authorization: Bearer ${TOKEN_A}`, `${url}/v1/health`]);
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body).ok).toBe(true);
      const st = await curl(["--cacert", cert, "-H", `Authorization: Bearer ${TOKEN_A}`, `${url}/v1/checkpoints/status`]);
      expect(st.status).toBe(200);
      expect(JSON.parse(st.body).running).toBeNull();
      // plain http to the TLS port gets nowhere
      expect((await curl([`http://127.0.0.1:${port}/v1/health`])).status).not.toBe(200);

      // a cron job on another host: local-admin --url --token-file --ca-file
      const clientTokens = join(dir, "client.token");
      writeFileSync(clientTokens, `${TOKEN_A}\n`, { mode: 0o600 });
      const created = await adminUrl(url, ["--token-file", clientTokens, "--ca-file", cert, "checkpoint", "create"]);
      expect(created.stderr).toBe("");
      expect(created.stdout).toMatch(/^Checkpoint 1 created in /);
      expect(created.code).toBe(0);
      expect(listJson(join(dir, "checkpoints")).map((c) => c.id)).toEqual([1]);
      const status = await adminUrl(url, ["--token-file", clientTokens, "--ca-file", cert, "checkpoint", "status"]);
      expect(status.code).toBe(0);
      expect(status.stdout).toContain("checkpoint 1");
      const level = await adminUrl(url, ["--token-file", clientTokens, "--ca-file", cert, "log-level", "--level", "debug"], {});
      expect(level.code).toBe(0);
      // CAIRN_ADMIN_TOKEN_FILE does what --token-file does
      expect((await adminUrl(url, ["--ca-file", cert, "checkpoint", "status"], { CAIRN_ADMIN_TOKEN_FILE: clientTokens })).code).toBe(0);
      // a certificate the client does not trust: a clear refusal, exit 1
      const untrusted = await adminUrl(url, ["--token-file", clientTokens, "checkpoint", "status"]);
      expect(untrusted.code).toBe(1);
      expect(untrusted.stderr).toContain("not trusted");
      expect(untrusted.stderr).toContain("--ca-file");

      // the token file edited (A out, B in) and SIGHUP: A is refused, B works, without a restart
      tokenFile(dir, [TOKEN_B]);
      node.proc.kill("SIGHUP");
      await waitFor(() => node.logs().includes("admin_api tokens re-read (1)"), { what: "the tokens to be re-read" });
      expect((await curl(["--cacert", cert, "-H", `Authorization: Bearer ${TOKEN_A}`, `${url}/v1/health`])).status).toBe(401);
      expect((await curl(["--cacert", cert, "-H", `Authorization: Bearer ${TOKEN_B}`, `${url}/v1/health`])).status).toBe(200);
      const refused = await adminUrl(url, ["--token-file", clientTokens, "--ca-file", cert, "checkpoint", "status"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("refused the token");
      expect(refused.stderr).not.toContain(TOKEN_A);
      // a token file made unsafe is not taken on SIGHUP: the previous tokens stay
      chmodSync(tokens, 0o644);
      node.proc.kill("SIGHUP");
      await waitFor(() => node.logs().includes("the admin API keeps its previous tokens"), { what: "the unsafe file to be refused" });
      expect((await curl(["--cacert", cert, "-H", `Authorization: Bearer ${TOKEN_B}`, `${url}/v1/health`])).status).toBe(200);

      // the admin socket needs no token, as before
      const sock = runCairn(["local-admin", "--socket-path", node.socket, "checkpoint", "status"]);
      expect(sock.code).toBe(0);
      expect(node.logs()).not.toContain(TOKEN_A);
      expect(node.logs()).not.toContain(TOKEN_B);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    expect(node.logs()).not.toContain(TOKEN_A);
    expect(node.logs()).not.toContain(TOKEN_B);
  }, 60_000);

  test("abuse with auth on: stalled, garbage and oversized requests; the node serves throughout", async () => {
    const dir = tmpDir();
    const tokens = tokenFile(dir, [TOKEN_A]);
    const port = freePort();
    const node: NodeHandle = await startNode(dir, { extraYaml: `admin_api:\n  address: 127.0.0.1:${port}\n  token_file: ${tokens}\n` });
    const url = `http://127.0.0.1:${port}`;
    const sockets: ReturnType<typeof connect>[] = [];
    try {
      // stalled: half a request line each, left open
      for (let i = 0; i < 20; i++) {
        const s = connect({ host: "127.0.0.1", port });
        s.on("error", () => {});
        s.write("GET /v1/hea");
        sockets.push(s);
      }
      // garbage
      for (let i = 0; i < 20; i++) {
        const s = connect({ host: "127.0.0.1", port });
        s.on("error", () => {});
        s.write("\x00\xff garbage \r\n\r\n");
        sockets.push(s);
      }
      // oversized, with and without a token: refused before the body is used (Bun's own cap
      // may answer first, with a 413, before the token is looked at)
      const big = "x".repeat(4 * 1024 * 1024);
      expect([401, 413]).toContain((await fetch(`${url}/v1/log-level`, { method: "PUT", body: big })).status);
      const over = await fetch(`${url}/v1/log-level`, { method: "PUT", body: big, headers: { authorization: `Bearer ${TOKEN_A}` } });
      expect([413, 400]).toContain(over.status);
      // an unknown route with a token: 404, without one: 401 (nothing said about which routes exist)
      expect((await fetch(`${url}/nope`, { headers: { authorization: `Bearer ${TOKEN_A}` } })).status).toBe(404);
      expect((await fetch(`${url}/nope`)).status).toBe(401);
      // the node serves throughout: REST, the socket, the HTTP admin API
      expect((await fetch(`${node.url}/v1/status`)).status).toBe(200);
      const ok = await fetch(`${url}/v1/health`, { headers: { authorization: `Bearer ${TOKEN_A}` } });
      expect(ok.status).toBe(200);
      expect(runCairn(["local-admin", "--socket-path", node.socket, "checkpoint", "status"]).code).toBe(0);
    } finally {
      for (const s of sockets) s.destroy();
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);

  test("refused at start, exit 2: a non-loopback address without TLS, a token file others can read, a missing one", () => {
    const cases: [string, (dir: string) => string, RegExp][] = [
      ["0.0.0.0 without tls", (d) => `admin_api:\n  address: 0.0.0.0:${freePort()}\n  token_file: ${tokenFile(d, [TOKEN_A])}\n`, /admin_api\.address: 0\.0\.0\.0 is not a loopback address, and admin_api\.tls is not set/],
      ["mode 0644", (d) => `admin_api:\n  address: 127.0.0.1:${freePort()}\n  token_file: ${tokenFile(d, [TOKEN_A], 0o644)}\n`, /admin_api\.token_file: .* has mode 0644; a token file must be owner-only/],
      ["missing", (d) => `admin_api:\n  address: 127.0.0.1:${freePort()}\n  token_file: ${join(d, "nope")}\n`, /admin_api\.token_file: cannot read .*nope: no such file/],
      ["a short token", (d) => `admin_api:\n  address: 127.0.0.1:${freePort()}\n  token_file: ${tokenFile(d, ["short"])}\n`, /line 2: the token is shorter than 16 characters/],
    ];
    for (const [what, yaml, message] of cases) {
      const dir = tmpDir();
      const config = writeConfig(dir, freePort(), yaml(dir));
      const r = runCairn(["run", "--config", config], { timeoutMs: 20_000 });
      expect({ what, code: r.code }).toEqual({ what, code: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toContain(TOKEN_A);
    }
  }, 60_000);
});
