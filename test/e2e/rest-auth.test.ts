/**
 * Access control of the data API (rest_api), from outside with curl against a node bound to
 * 0.0.0.0 (reached on 127.0.0.1 only): tokens with scopes, TLS with a certificate the test
 * makes with the stock openssl, SIGHUP re-reading tokens and certificate, anonymous read,
 * refusals at start, and the abuse suite's requests with auth on.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort, runCairn, startNodeWithConfig } from "../helpers/node.ts";
import { cleanTmpDirsAfterEach, tmpDir } from "../helpers/tmp.ts";
import { curl, makeCert, writeTokenFile } from "../helpers/tls.ts";
import { waitFor } from "../helpers/wait.ts";

cleanTmpDirsAfterEach();

const RW = "rw-3d1f6a8c0e2b4d6f8a1c3e5b7d9f0a2c";
const RO = "ro-9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f";
const DEL = "del-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const MET = "met-5a5b5c5d5e5f60616263646566676869";
const auth = (t: string) => ["-H", `Authorization: Bearer ${t}`];

/** A node bound to every address (the tests reach it on 127.0.0.1 only). */
async function nodeOn(dir: string, yaml: string, port = freePort()) {
  const config = join(dir, "cairn.yaml");
  writeFileSync(config, `storage_path: ./db\nadmin_socket_path: ./admin.socket\nrest_api_address: 0.0.0.0:${port}\nlog_level: info\n${yaml}`);
  return { node: await startNodeWithConfig(dir, config, `http://127.0.0.1:${port}`, 10_000), port };
}

describe("data API with tokens, scopes and TLS", () => {
  test("401 without or with an unknown token, 403 without the scope, each scope its routes; SIGHUP drops a removed token and serves a renewed certificate; no token in any log", async () => {
    const dir = tmpDir();
    const a = makeCert(dir, "certA");
    const tokens = writeTokenFile(join(dir, "api.tokens"), [`${RW} read,write`, `${RO} read`, `${DEL} delete`, `${MET} metrics`]);
    const { node, port } = await nodeOn(dir, `rest_api:\n  tokens_file: ${tokens}\n  tls:\n    cert_file: ${a.cert}\n    key_file: ${a.key}\n`);
    const url = `https://127.0.0.1:${port}`;
    const ca = ["--cacert", a.cert];
    try {
      // no token, an unknown one, a malformed header: 401 and WWW-Authenticate
      for (const extra of [[], auth("nope-0000000000000000000000"), ["-H", `Authorization: Basic ${btoa(`u:${RW}`)}`]]) {
        const r = await curl([...ca, ...extra, `${url}/v1/blobs/x`]);
        expect(r.status).toBe(401);
        expect(r.headers.toLowerCase()).toContain('www-authenticate: bearer realm="cairn"');
        expect(JSON.parse(r.body).error.code).toBe("E_UNAUTHORIZED");
      }
      // PUT without a token: refused before its body is read
      expect((await curl([...ca, "-X", "PUT", "--data-binary", "x".repeat(100_000), `${url}/v1/blobs/x`])).status).toBe(401);
      // the read-write token writes and reads; the read-only one reads, and may neither PUT nor DELETE
      expect((await curl([...ca, ...auth(RW), "-X", "PUT", "--data-binary", "hello", `${url}/v1/blobs/a`])).status).toBe(201);
      const got = await curl([...ca, ...auth(RO), `${url}/v1/blobs/a`]);
      expect(got.status).toBe(200);
      expect(got.body).toBe("hello");
      expect((await curl([...ca, ...auth(RO), "-I", `${url}/v1/blobs/a`])).status).toBe(200);
      expect((await curl([...ca, ...auth(RO), `${url}/v1/blobs`])).status).toBe(200);
      expect((await curl([...ca, ...auth(RO), `${url}/v1/status`])).status).toBe(200);
      for (const [method, extra] of [["PUT", ["--data-binary", "evil"]], ["DELETE", []]] as const) {
        const r = await curl([...ca, ...auth(RO), "-X", method, ...extra, `${url}/v1/blobs/a`]);
        expect(r.status).toBe(403);
        expect(JSON.parse(r.body).error.code).toBe("E_FORBIDDEN");
      }
      expect((await curl([...ca, ...auth(RW), "-X", "DELETE", `${url}/v1/blobs/a`])).status).toBe(403);
      expect((await curl([...ca, ...auth(RO), `${url}/metrics`])).status).toBe(403);
      // metrics: its own scope, and the refusals counted there
      const m = await curl([...ca, ...auth(MET), `${url}/metrics`]);
      expect(m.status).toBe(200);
      expect(m.body).toMatch(/^cairn_http_auth_failures_total\{reason="no_token"\} [1-9]/m);
      expect(m.body).toMatch(/^cairn_http_auth_failures_total\{reason="unknown_token"\} [1-9]/m);
      expect(m.body).toMatch(/^cairn_http_auth_failures_total\{reason="scope"\} [1-9]/m);
      expect((await curl([...ca, ...auth(MET), `${url}/v1/blobs/a`])).status).toBe(403);
      // the delete token deletes
      expect((await curl([...ca, ...auth(DEL), "-X", "DELETE", `${url}/v1/blobs/a`])).status).toBe(204);
      expect((await curl([...ca, ...auth(RO), `${url}/v1/blobs/a`])).status).toBe(404);
      // refusals are logged with the peer address
      await waitFor(() => /REST API: refused a request from (::ffff:)?127\.0\.0\.1/.test(node.logs()), { what: "a refusal in the log" });

      // SIGHUP: the read-only token removed, and a renewed certificate
      writeTokenFile(tokens, [`${RW} read,write`, `${MET} metrics`]);
      const b = makeCert(dir, "certB");
      await Bun.write(join(dir, "certA-old.crt"), Bun.file(a.cert));
      await Bun.write(a.cert, Bun.file(b.cert));
      await Bun.write(a.key, Bun.file(b.key));
      node.proc.kill("SIGHUP");
      await waitFor(() => node.logs().includes("rest_api.tls certificate re-read"), { what: "the certificate to be re-read" });
      expect(node.logs()).toContain("rest_api tokens re-read (2)");
      // the new certificate is served (the old one no longer verifies it), and the removed token is refused
      expect((await curl(["--cacert", b.cert, ...auth(RW), `${url}/v1/status`])).status).toBe(200);
      expect((await curl(["--cacert", join(dir, "certA-old.crt"), ...auth(RW), `${url}/v1/status`])).code).not.toBe(0);
      expect((await curl(["--cacert", b.cert, ...auth(RO), `${url}/v1/status`])).status).toBe(401);
      expect((await curl(["--cacert", b.cert, ...auth(RW), "-X", "PUT", "--data-binary", "after", `${url}/v1/blobs/z`])).status).toBe(201);
    } finally {
      expect(await node.stop()).toBe(0);
    }
    for (const t of [RW, RO, DEL, MET]) expect(node.logs()).not.toContain(t);
  }, 60_000);

  test("anonymous: read: reads and metrics without a token, no writes; a token still writes", async () => {
    const dir = tmpDir();
    const tokens = writeTokenFile(join(dir, "api.tokens"), [`${RW} read,write`]);
    const { node, port } = await nodeOn(dir, `rest_api:\n  tokens_file: ${tokens}\n  anonymous: read\n`);
    const url = `http://127.0.0.1:${port}`;
    try {
      // and without TLS beyond loopback: a warning at start
      expect(node.logs()).toContain("without TLS: bearer tokens and blobs cross the network in clear");
      expect((await curl([...auth(RW), "-X", "PUT", "--data-binary", "pub", `${url}/v1/blobs/p`])).status).toBe(201);
      expect((await curl([`${url}/v1/blobs/p`])).body).toBe("pub");
      expect((await curl([`${url}/metrics`])).status).toBe(200);
      expect((await curl([`${url}/v1/status`])).status).toBe(200);
      expect((await curl(["-X", "PUT", "--data-binary", "no", `${url}/v1/blobs/q`])).status).toBe(401);
      expect((await curl(["-X", "DELETE", `${url}/v1/blobs/p`])).status).toBe(401);
      // an unknown token is not anonymous: 401
      expect((await curl([...auth("unknown-token-00000000000000"), `${url}/v1/blobs/p`])).status).toBe(401);
    } finally {
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);

  test("abuse with auth on: stalled, garbage, oversized and header-flooded requests; the node serves throughout", async () => {
    const dir = tmpDir();
    const tokens = writeTokenFile(join(dir, "api.tokens"), [`${RW} read,write`]);
    const { node, port } = await nodeOn(dir, `rest_api:\n  tokens_file: ${tokens}\n`);
    const url = `http://127.0.0.1:${port}`;
    const sockets: ReturnType<typeof connect>[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const s = connect({ host: "127.0.0.1", port });
        s.on("error", () => {});
        s.write(i % 2 ? "PUT /v1/blobs/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc" : "\x16\x03\x01garbage\r\n\r\n");
        sockets.push(s);
      }
      const big = new Uint8Array(8 * 1024 * 1024);
      expect((await fetch(`${url}/v1/blobs/big`, { method: "PUT", body: big })).status).toBe(401);
      expect((await fetch(`${url}/v1/blobs/big`, { method: "PUT", body: big, headers: { authorization: `Bearer ${RW}` } })).status).toBe(201);
      expect((await fetch(`${url}/v1/blobs/big`, { method: "PUT", body: new Uint8Array(70 * 1024 * 1024), headers: { authorization: `Bearer ${RW}` } })).status).toBe(413);
      const flood: Record<string, string> = { authorization: `Bearer ${RW}` };
      for (let i = 0; i < 200; i++) flood[`x-h${i}`] = "y".repeat(100);
      // (Bun's own header limit may answer first: 431)
      expect([200, 431]).toContain((await fetch(`${url}/v1/status`, { headers: flood })).status);
      expect((await fetch(`${url}/v1/status`, { headers: { authorization: `Bearer ${RW}` } })).status).toBe(200);
      expect((await fetch(`${url}/v1/status`)).status).toBe(401);
    } finally {
      for (const s of sockets) s.destroy();
      expect(await node.stop()).toBe(0);
    }
  }, 60_000);

  test("refused at start, exit 2: beyond loopback without tokens; rest_api with neither tokens nor anonymous read; a token file others can read; an unknown scope", () => {
    const cases: [string, string, RegExp][] = [
      ["no rest_api", "", /rest_api\.tokens_file: rest_api_address 0\.0\.0\.0 is not a loopback address, and no tokens are set/],
      ["anonymous none, no tokens", "rest_api:\n  anonymous: none\n", /rest_api\.tokens_file: rest_api_address 0\.0\.0\.0 is not a loopback address/],
      ["mode 0644", "rest_api:\n  tokens_file: TOKENS644\n", /rest_api\.tokens_file: .* has mode 0644; a token file must be owner-only/],
      ["unknown scope", "rest_api:\n  tokens_file: TOKENSBAD\n", /rest_api\.tokens_file: .* line 2: unknown scope "admin"/],
    ];
    for (const [what, yaml, message] of cases) {
      const dir = tmpDir();
      const y = yaml
        .replace("TOKENS644", writeTokenFile(join(dir, "a.tokens"), [`${RW} read`], 0o644))
        .replace("TOKENSBAD", writeTokenFile(join(dir, "b.tokens"), [`${RW} read,admin`]));
      const config = join(dir, "cairn.yaml");
      writeFileSync(config, `storage_path: ./db\nadmin_socket_path: ./admin.socket\nrest_api_address: 0.0.0.0:${freePort()}\n${y}`);
      const r = runCairn(["run", "--config", config], { timeoutMs: 20_000 });
      expect({ what, code: r.code }).toEqual({ what, code: 2 });
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toContain(RW);
    }
    // on loopback without rest_api: exactly as before (no token needed)
  }, 60_000);
});
