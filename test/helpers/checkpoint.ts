/**
 * Helpers for the checkpoint end-to-end tests: driving `local-admin checkpoint`, reading the
 * listing, materializing a checkpoint back into a database file (through the store reader and
 * the restore's rebuildImage), and looking at a store's files.
 */
import { Database } from "bun:sqlite";
import { closeSync, openSync, readdirSync, readSync, rmSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { indexPath, type Manifest, packPath } from "../../src/store/format.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { StoreReader } from "../../src/store/reader.ts";
import { Store } from "../../src/store/store.ts";
import { rebuildImage } from "../../src/restore/rebuild.ts";
import { BINARY, type NodeHandle, runCairn, sha256, sqlite3 } from "./node.ts";

export interface Listed {
  id: number;
  size_bytes: number;
  files: number;
  created: string;
  node_id: string;
  new_bytes: number;
  blob_count: number;
  duration_ms: number;
}

/** `cairn local-admin --socket-path <node's socket> ARGS...` */
export function admin(node: NodeHandle, args: string[], timeoutMs = 60_000) {
  return runCairn(["local-admin", "--socket-path", node.socket, ...args], { timeoutMs });
}

/** The same, without blocking the event loop (so the test can keep writing meanwhile). */
export async function adminAsync(node: NodeHandle, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([BINARY, "local-admin", "--socket-path", node.socket, ...args], { stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

export const CREATED_RE = /^Checkpoint (\d+) created in \d+\.\d s \(\d+\.\d [KMGT]?B, \d+\.\d [KMGT]?B new\)\n$/;

/** Take a checkpoint and wait for it; fails the test unless it succeeded. Returns its id. */
export function createCheckpoint(node: NodeHandle, extra: string[] = []): number {
  const r = admin(node, ["checkpoint", "create", ...extra]);
  const m = CREATED_RE.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`checkpoint create failed (exit ${r.code}):\n${r.stdout}${r.stderr}\nnode log:\n${node.logs()}`);
  return Number(m[1]);
}

/** The same, asynchronously. */
export async function createCheckpointAsync(node: NodeHandle, extra: string[] = []): Promise<number> {
  const r = await adminAsync(node, ["checkpoint", "create", ...extra]);
  const m = CREATED_RE.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`checkpoint create failed (exit ${r.code}):\n${r.stdout}${r.stderr}\nnode log:\n${node.logs()}`);
  return Number(m[1]);
}

/** GET /v1/checkpoints/status on the admin socket. */
// biome-ignore lint: tests read arbitrary fields
export async function checkpointStatus(node: NodeHandle): Promise<any> {
  const r = await fetch("http://localhost/v1/checkpoints/status", { unix: node.socket } as RequestInit);
  if (!r.ok) throw new Error(`status: HTTP ${r.status}`);
  return r.json();
}

/** `list-db-checkpoint DIR --json`, which must succeed with nothing on stderr. */
export function listJson(dir: string): Listed[] {
  const r = runCairn(["list-db-checkpoint", dir, "--json"]);
  if (r.code !== 0) throw new Error(`list-db-checkpoint failed (exit ${r.code}): ${r.stderr}`);
  if (r.stderr.trim() !== "") throw new Error(`list-db-checkpoint warned: ${r.stderr}`);
  return JSON.parse(r.stdout) as Listed[];
}

export function verify(dir: string, id?: number) {
  return runCairn(["verify-db-checkpoint", dir, ...(id !== undefined ? ["--checkpoint-id", String(id)] : [])], { timeoutMs: 60_000 });
}

/** Rebuild checkpoint `id` of the store in `dir` into `outFile`; returns its manifest. */
export async function materialize(dir: string, id: number, outFile: string): Promise<Manifest> {
  const store = new Store(new DirBackend(dir));
  const m = await store.manifest(id);
  const progressFile = `${outFile}.progress`;
  await rebuildImage({ store, manifest: m, imageFile: outFile, progressFile, workers: 2 });
  rmSync(progressFile, { force: true });
  return m;
}

export interface DbAudit {
  integrity: string;
  count: number;
  bytes: number;
  totals: { blob_count: number; blob_bytes: number };
  /** id → sha256 of the data column */
  blobs: Map<string, string>;
}

/** Check a (materialized) database file with the stock sqlite3, and read every blob. */
export function auditDb(file: string): DbAudit {
  const integrity = sqlite3(file, "PRAGMA integrity_check");
  const [count, bytes] = sqlite3(file, "SELECT count(*), coalesce(sum(size), 0) FROM blobs").split("|").map(Number);
  const [tc, tb] = sqlite3(file, "SELECT blob_count, blob_bytes FROM totals").split("|").map(Number);
  const blobs = new Map<string, string>();
  const db = new Database(file, { readwrite: true, create: false });
  try {
    for (const row of db.query<{ id: string; data: Uint8Array; size: number }, []>("SELECT id, data, size FROM blobs").iterate()) {
      if (row.data.length !== row.size) throw new Error(`${file}: blob ${row.id} has ${row.data.length} bytes, its size column says ${row.size}`);
      blobs.set(row.id, sha256(row.data));
    }
  } finally {
    db.close();
  }
  return { integrity, count: count!, bytes: bytes!, totals: { blob_count: tc!, blob_bytes: tb! }, blobs };
}

/** Every file under `dir` (relative path → "size mtimeMs sha256"), for before/after comparisons. */
export function treeSnapshot(dir: string, opts: { exclude?: (rel: string) => boolean; content?: boolean } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (opts.exclude?.(r)) continue;
      if (e.isDirectory()) {
        out[`${r}/`] = "dir";
        walk(r);
      } else {
        const st = statSync(join(dir, r));
        out[r] = `${st.size} ${st.mtimeMs}${opts.content === false ? "" : ` ${sha256(readAll(join(dir, r)))}`}`;
      }
    }
  };
  walk("");
  return out;
}

function readAll(file: string): Uint8Array {
  const size = statSync(file).size;
  const buf = new Uint8Array(size);
  const fd = openSync(file, "r");
  try {
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n <= 0) break;
      got += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

/** Files under `dir/sub` (relative to dir), sorted; [] if the folder does not exist. */
export function filesUnder(dir: string, sub: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    let entries;
    try {
      entries = readdirSync(join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  walk(sub);
  return out.sort();
}

/** Bytes of every file under `dir`. */
export function duBytes(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) total += statSync(p).size;
    }
  };
  walk(dir);
  return total;
}

/** XOR one byte of a file with 0xff, in place; returns the offset flipped. */
export function flipByte(file: string, offset = Math.floor(statSync(file).size / 2)): number {
  const fd = openSync(file, "r+");
  try {
    const b = new Uint8Array(1);
    readSync(fd, b, 0, 1, offset);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
  return offset;
}

/** PUT each blob, `concurrency` at a time; every one must be acknowledged (201 or 204). */
export async function putAll(url: string, blobs: { id: string; body: Uint8Array }[], concurrency = 8): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < blobs.length) {
        const b = blobs[next++]!;
        const r = await fetch(`${url}/v1/blobs/${b.id}`, { method: "PUT", body: b.body });
        if (r.status !== 201 && r.status !== 204) throw new Error(`PUT ${b.id}: HTTP ${r.status} ${await r.text()}`);
      }
    }),
  );
}

export async function deleteAll(url: string, ids: string[], concurrency = 8): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        const r = await fetch(`${url}/v1/blobs/${id}`, { method: "DELETE" });
        if (r.status !== 204) throw new Error(`DELETE ${id}: HTTP ${r.status}`);
      }
    }),
  );
}

/**
 * What a store holds that no checkpoint needs: files under packs/ that no manifest names, and
 * anything in tmp/. [] for a clean store.
 */
export async function leftovers(store: string): Promise<string[]> {
  const reader = new StoreReader(new DirBackend(store));
  const needed = new Set<string>();
  for (const id of await reader.manifestIds()) {
    for (const p of (await reader.manifest(id)).packs) {
      needed.add(packPath(p));
      needed.add(indexPath(p));
    }
  }
  return [...filesUnder(store, "packs").filter((f) => !needed.has(f)), ...filesUnder(store, "tmp")];
}

/** Decimal units with one decimal, as the contract's listing shows sizes. */
export function decimalSize(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let u = 0;
  while (n >= 1000 ** (u + 1) && u < units.length - 1) u++;
  return `${(n / 1000 ** u).toFixed(1)} ${units[u]}`;
}
