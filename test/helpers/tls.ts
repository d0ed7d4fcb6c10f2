/** Certificates and token files for the tests of the HTTP APIs' access control. */
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A self-signed certificate for 127.0.0.1, made with the stock openssl; `name` tells several apart. */
export function makeCert(dir: string, name = "tls"): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const r = Bun.spawnSync(
    ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`, "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    { stdout: "pipe", stderr: "pipe" },
  );
  if (r.exitCode !== 0) throw new Error(`openssl failed: ${r.stderr.toString()}`);
  chmodSync(key, 0o600);
  return { cert, key };
}

/** A token file (mode 0600 unless told) holding `lines`. */
export function writeTokenFile(file: string, lines: string[], mode = 0o600): string {
  writeFileSync(file, `# tokens\n${lines.join("\n")}\n`);
  chmodSync(file, mode);
  return file;
}

/** curl, asynchronously (the node may be in this process's tests' event loop): status, headers, body. */
export async function curl(args: string[]): Promise<{ code: number; status: number; headers: string; body: string }> {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "20", "-D", "-", "-o", "-", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, , code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const split = out.indexOf("\r\n\r\n");
  const headers = split >= 0 ? out.slice(0, split) : out;
  return { code, status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(headers)?.[1] ?? 0), headers, body: split >= 0 ? out.slice(split + 4) : "" };
}
