/**
 * Start and drive the compiled binary (dist/cairn) as an operator would: a config file in a
 * temp dir, a free port on 127.0.0.1, readiness by polling /v1/status.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { BINARY, freePort } from "../../scripts/binary.ts";

export { BINARY, freePort };

export interface NodeHandle {
  dir: string;
  configFile: string;
  url: string;
  socket: string;
  storage: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the node has written to stderr so far. */
  logs(): string;
  /** Send a signal and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
  kill9(): Promise<void>;
}

export interface StartOptions {
  /** Extra YAML appended to the generated config. */
  extraYaml?: string;
  port?: number;
  timeoutMs?: number;
  /** Extra environment variables for the node process (e.g. CAIRN_TEST_CRASH_POINT). */
  env?: Record<string, string>;
}

export function writeConfig(dir: string, port: number, extraYaml = ""): string {
  const file = join(dir, "cairn.yaml");
  writeFileSync(
    file,
    `storage_path: ./db\nadmin_socket_path: ./admin.socket\nrest_api_address: 127.0.0.1:${port}\nlog_level: info\n${extraYaml}`,
  );
  return file;
}

export function runCairn(args: string[], opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}) {
  const r = Bun.spawnSync([BINARY, ...args], {
    cwd: opts.cwd,
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...opts.env },
    timeout: opts.timeoutMs ?? 30_000,
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

export async function startNode(dir: string, opts: StartOptions = {}): Promise<NodeHandle> {
  const port = opts.port ?? freePort();
  const configFile = writeConfig(dir, port, opts.extraYaml);
  return startNodeWithConfig(dir, configFile, `http://127.0.0.1:${port}`, opts.timeoutMs, opts.env);
}

export async function startNodeWithConfig(
  dir: string,
  configFile: string,
  url: string,
  timeoutMs = 10_000,
  env?: Record<string, string>,
): Promise<NodeHandle> {
  const proc = Bun.spawn([BINARY, "run", "--config", configFile], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: env ? { ...process.env, ...env } : undefined,
  });
  let stderr = "";
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of proc.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  (async () => {
    for await (const _ of proc.stdout);
  })();
  const handle: NodeHandle = {
    dir,
    configFile,
    url,
    socket: join(dir, "admin.socket"),
    storage: join(dir, "db"),
    proc,
    logs: () => stderr,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      return await proc.exited;
    },
    async kill9() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`node exited with ${proc.exitCode} during start:\n${stderr}`);
    // ready once the REST API answers (401 too: access control is on), or says it serves TLS
    if (/ serving https:\/\//.test(stderr)) return handle;
    try {
      const r = await fetch(`${url}/v1/status`);
      await r.arrayBuffer();
      if (r.ok || r.status === 401) return handle;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`node did not become ready within ${timeoutMs} ms:\n${stderr}`);
    }
    await Bun.sleep(25);
  }
}

/** Deterministic pseudo-random bytes (xorshift), so a test can regenerate what it wrote. */
export function pseudoRandomBytes(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

export function sha256(data: Uint8Array | ArrayBuffer): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** Run the stock sqlite3 tool on a database file. */
export function sqlite3(file: string, sql: string): string {
  const r = Bun.spawnSync(["sqlite3", file, sql], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`sqlite3 failed: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

/** GET a URL and parse its JSON body (tests read fields freely). */
// biome-ignore lint: tests read arbitrary fields
export async function getJson(url: string): Promise<any> {
  const r = await fetch(url);
  return r.json();
}
