/**
 * The compiled node, driven as an operator would: build dist/cairn if it is missing or stale,
 * write a config in a temp dir, start `dist/cairn run --config FILE` on a free 127.0.0.1 port,
 * wait for /v1/status, and stop it with SIGTERM (its exit code must be 0).
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { BINARY, binaryStaleness, freePort, REPO_ROOT } from "../../scripts/binary.ts";

export { BINARY, freePort, REPO_ROOT };

/**
 * Build dist/cairn with `bun run build` unless it is newer than everything it is built from.
 * Returns whether it built.
 */
export async function ensureBinary(log: (msg: string) => void): Promise<boolean> {
  const reason = binaryStaleness();
  if (!reason) return false;
  log(`dist/cairn is ${reason}: running bun run build`);
  const proc = Bun.spawn([process.execPath, "run", "build"], { cwd: REPO_ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0 || !existsSync(BINARY)) throw new Error(`bun run build failed (exit ${code}):\n${out}${err}`);
  log(out.trim());
  return true;
}

const START_TIMEOUT_MS = 15_000;
/** Shutdown drains requests and runs a final TRUNCATE checkpoint of the WAL: allow for that. */
const STOP_TIMEOUT_MS = 60_000;
const START_ATTEMPTS = 3;

export interface RunningNode {
  /** http://127.0.0.1:PORT */
  url: string;
  dir: string;
  pid: number;
  /** What the node has written to stderr so far. */
  logs(): string;
  /** SIGTERM, then wait for exit (SIGKILL after a timeout); returns the exit code. Never throws. */
  stop(): Promise<number>;
}

/** Nodes started and not yet stopped, so an interrupted bench can stop them. */
const live = new Set<RunningNode>();
let closed = false;

/** Stop every node still running (SIGTERM) and refuse to start any more: the bench is ending. */
export async function stopAllNodes(): Promise<void> {
  closed = true;
  await Promise.all([...live].map((n) => n.stop()));
}

export function writeNodeConfig(dir: string, port: number, extraYaml = ""): string {
  const file = join(dir, "cairn.yaml");
  writeFileSync(
    file,
    `storage_path: ./db\nadmin_socket_path: ./admin.socket\nrest_api_address: 127.0.0.1:${port}\nlog_level: ${process.env.CAIRN_BENCH_LOG_LEVEL ?? "warn"}\n${extraYaml}`,
  );
  return file;
}

/** Start a node whose config and storage live in `dir`. Retries on another port if the port was taken. */
export async function startNode(dir: string, extraYaml = "", env?: Record<string, string>): Promise<RunningNode> {
  for (let attempt = 1; ; attempt++) {
    const port = freePort();
    const configFile = writeNodeConfig(dir, port, extraYaml);
    try {
      return await spawnNode(dir, configFile, `http://127.0.0.1:${port}`, env);
    } catch (e) {
      const portTaken = e instanceof Error && /E_LISTEN|cannot listen|EADDRINUSE/i.test(e.message);
      if (!portTaken || attempt >= START_ATTEMPTS) throw e;
    }
  }
}

async function spawnNode(dir: string, configFile: string, url: string, env?: Record<string, string>): Promise<RunningNode> {
  if (closed) throw new Error("the bench is shutting down; not starting a node");
  const proc: Subprocess<"ignore", "pipe", "pipe"> = Bun.spawn([BINARY, "run", "--config", configFile], {
    cwd: dir,
    env: env ? { ...process.env, ...env } : undefined,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let stderr = "";
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  void (async () => {
    for await (const _ of proc.stdout);
  })();

  let stopping: Promise<number> | undefined;
  const node: RunningNode = {
    url,
    dir,
    pid: proc.pid,
    logs: () => stderr,
    stop() {
      stopping ??= (async () => {
        if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
        const code = await proc.exited;
        clearTimeout(timer);
        live.delete(node);
        return code;
      })();
      return stopping;
    },
  };
  live.add(node);

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await node.stop();
      throw new Error(`the node exited with ${proc.exitCode ?? proc.signalCode} while starting:\n${stderr}`);
    }
    try {
      const r = await fetch(`${url}/v1/status`);
      await r.arrayBuffer();
      // (401: access control is on, and the node is up)
      if (r.ok || r.status === 401) return node;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await node.stop();
      throw new Error(`the node did not answer /v1/status within ${START_TIMEOUT_MS} ms:\n${stderr}`);
    }
    await Bun.sleep(25);
  }
}

/**
 * Run `body` against a fresh node in `dir`; the node is stopped with SIGTERM afterwards even if
 * `body` throws, and a non-zero exit code is an error.
 */
export async function withNode<T>(dir: string, body: (node: RunningNode) => Promise<T>, extraYaml = ""): Promise<T> {
  const node = await startNode(dir, extraYaml);
  let code: number | undefined;
  let result: T;
  try {
    result = await body(node);
  } finally {
    code = await node.stop();
  }
  if (code !== 0) throw new Error(`the node exited with code ${code} after SIGTERM (expected 0):\n${node.logs()}`);
  return result;
}
