/**
 * Helpers for the restore end-to-end tests: running `cairn restore` (to completion, or in the
 * background so that a test can signal it at a chosen moment), the paths restore uses beside
 * --db-path, before/after snapshots of folders (files and folders with their mtimes), serving
 * every blob of a restored database through a node, and finding where a block of a checkpoint
 * is stored so that a test can damage exactly that block.
 */
import { expect } from "bun:test";
import { cpSync, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Subprocess } from "bun";
import { SEGMENT_ENTRY_BYTES } from "../../src/store/format.ts";
import { toHex } from "../../src/store/hash.ts";
import { DirBackend } from "../../src/store/dir/backend.ts";
import { type BlockLocation, StoreReader } from "../../src/store/reader.ts";
import { RESTORE_RANGE_BLOCKS } from "../../src/restore/rebuild.ts";
import { treeSnapshot } from "./checkpoint.ts";
import { BINARY, runCairn, sha256 } from "./node.ts";

export interface RestoreRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The argument list of `cairn restore` (without the binary). */
export function restoreArgs(store: string, dbPath: string, extra: string[] = []): string[] {
  return ["restore", "--db-checkpoint-path", store, "--db-path", dbPath, ...extra];
}

/** Run `cairn restore` to completion. */
export function restore(store: string, dbPath: string, extra: string[] = [], timeoutMs = 60_000): RestoreRun {
  return runCairn(restoreArgs(store, dbPath, extra), { timeoutMs });
}

/** restore's staging folder for a target: `<parent>/.<name>.cairn-restore`. */
export function stagingDirOf(dbPath: string): string {
  return join(dirname(dbPath), `.${basename(dbPath)}.cairn-restore`);
}

/** Sibling folders `<name>.replaced-*` of a target (where --force moves old files). */
export function replacedDirsOf(dbPath: string): string[] {
  const parent = dirname(dbPath);
  if (!existsSync(parent)) return [];
  return readdirSync(parent)
    .filter((n) => n.startsWith(`${basename(dbPath)}.replaced-`))
    .map((n) => join(parent, n))
    .sort();
}

/**
 * Every file and folder under `dir`, with sizes, mtimes and contents (sha256), plus `dir`'s own
 * mtime (so that a file created and removed again inside it still shows). {} if `dir` is missing.
 */
export function dirState(dir: string): Record<string, string> {
  if (!existsSync(dir)) return {};
  const out: Record<string, string> = { ".": `dir ${statSync(dir).mtimeMs}` };
  for (const [k, v] of Object.entries(treeSnapshot(dir))) {
    out[k] = v === "dir" ? `dir ${statSync(join(dir, k)).mtimeMs}` : v;
  }
  return out;
}

/** The database files in a folder (cairn.db, -wal, -shm) → "size mtimeMs sha256". */
export function dbFilesState(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of ["cairn.db", "cairn.db-wal", "cairn.db-shm"]) {
    const p = join(dir, f);
    if (!existsSync(p)) continue;
    const st = statSync(p);
    out[f] = `${st.size} ${st.mtimeMs} ${sha256(readFileSync(p))}`;
  }
  return out;
}

/** Every file in a folder (not recursive) → sha256 of its content, without mtimes. */
export function contentState(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    out[e.isDirectory() ? `${e.name}/` : e.name] = e.isDirectory() ? "dir" : sha256(readFileSync(join(dir, e.name)));
  }
  return out;
}

/** GET every blob of `expected` (id → sha256) through the node's REST API; returns the mismatches. */
export async function serveMismatches(url: string, expected: Map<string, string>, absent: string[] = []): Promise<string[]> {
  const wrong: string[] = [];
  const ids = [...expected.keys()];
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < ids.length) {
        const id = ids[next++]!;
        const r = await fetch(`${url}/v1/blobs/${id}`);
        if (r.status !== 200) {
          wrong.push(`${id}: HTTP ${r.status}`);
          continue;
        }
        const got = sha256(await r.arrayBuffer());
        if (got !== expected.get(id)) wrong.push(`${id}: content ${got.slice(0, 12)}, expected ${expected.get(id)!.slice(0, 12)}`);
      }
    }),
  );
  for (const id of absent) {
    const r = await fetch(`${url}/v1/blobs/${id}`);
    await r.arrayBuffer();
    if (r.status !== 404) wrong.push(`${id}: HTTP ${r.status}, expected 404`);
  }
  return wrong.sort();
}

/** A restore running in the background; its output is collected as it comes. */
export interface BackgroundRestore {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stdout(): string;
  stderr(): string;
  /** Wait for the exit; the code (null if killed by a signal), signal and full output. */
  done(): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>;
}

export function spawnRestore(store: string, dbPath: string, extra: string[] = [], env?: Record<string, string>): BackgroundRestore {
  const proc = Bun.spawn([BINARY, ...restoreArgs(store, dbPath, extra)], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: env ? { ...process.env, ...env } : undefined,
  });
  let out = "";
  let err = "";
  const pumps = [
    (async () => {
      const d = new TextDecoder();
      for await (const c of proc.stdout) out += d.decode(c, { stream: true });
    })(),
    (async () => {
      const d = new TextDecoder();
      for await (const c of proc.stderr) err += d.decode(c, { stream: true });
    })(),
  ];
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    async done() {
      await proc.exited;
      await Promise.all(pumps);
      const signal = proc.signalCode === null ? null : String(proc.signalCode);
      return { code: signal ? null : proc.exitCode, signal, stdout: out, stderr: err };
    },
  };
}

/**
 * Poll `cond` (every millisecond or so) while the restore runs; the moment it holds, send
 * `signal`. Returns true if the signal was sent while the process was still running, false if
 * it exited first (or `timeoutMs` passed, after which it is killed).
 */
export async function signalWhen(r: BackgroundRestore, cond: () => boolean, signal: NodeJS.Signals, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (r.proc.exitCode === null && r.proc.signalCode === null) {
    let hit = false;
    try {
      hit = cond();
    } catch {
      hit = false; // a file half-way through being replaced: look again
    }
    if (hit) {
      if (r.proc.exitCode !== null || r.proc.signalCode !== null) return false;
      r.proc.kill(signal);
      return true;
    }
    if (Date.now() > deadline) {
      r.proc.kill("SIGKILL");
      throw new Error(`the condition never held within ${timeoutMs} ms; stderr so far:\n${r.stderr()}`);
    }
    await Bun.sleep(1);
  }
  return false;
}

/** Bytes of `file` actually written to disk so far (it is created sparse at its full size). */
export function allocatedBytes(file: string): number {
  try {
    return statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

/** The staging folder's progress.json ({ranges, done}), or undefined if there is none yet. */
export function readProgress(dbPath: string): { ranges: number; done: number[] } | undefined {
  const file = join(stagingDirOf(dbPath), "progress.json");
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, "utf8")) as { ranges: number; done: number[] };
}

export interface StoredBlock {
  /** Block number in the checkpoint's image. */
  block: number;
  packId: string;
  /** Offset of the stored block in its pack file, and its stored length. */
  offset: number;
  storedLength: number;
  /** Where the store's index says it is (for StoreReader.block). */
  loc: BlockLocation;
}

/**
 * A data block of checkpoint `id` that lies in one of `ranges` (restore ranges of
 * RESTORE_RANGE_BLOCKS blocks) and whose content appears nowhere else in the image, so that
 * damaging it affects that range alone.
 */
export async function uniqueBlockIn(store: string, id: number, ranges: number[]): Promise<StoredBlock> {
  const reader = new StoreReader(new DirBackend(store));
  const m = await reader.manifest(id);
  const list = await reader.blockList(m);
  const digestOf = (b: number) => toHex(list.subarray(b * SEGMENT_ENTRY_BYTES, b * SEGMENT_ENTRY_BYTES + 32));
  const uses = new Map<string, number>();
  for (let b = 0; b < m.block_count; b++) uses.set(digestOf(b), (uses.get(digestOf(b)) ?? 0) + 1);
  const segments = new Set(m.segments);
  const where = await reader.locateSome(m.packs, [...uses.keys()]);
  for (const r of ranges) {
    // from the middle of the range outwards: the first blocks of an image are SQLite's header pages
    const first = r * RESTORE_RANGE_BLOCKS;
    const last = Math.min(m.block_count, first + RESTORE_RANGE_BLOCKS) - 1;
    for (let b = Math.floor((first + last) / 2); b <= last; b++) {
      const d = digestOf(b);
      if (uses.get(d) !== 1 || segments.has(d)) continue;
      const loc = where.get(d);
      if (!loc) continue;
      return { block: b, packId: loc.packId, offset: loc.offset, storedLength: loc.storedLength, loc };
    }
  }
  throw new Error(`checkpoint ${id} has no block of its own in ranges ${ranges.join(", ")}`);
}

/**
 * A copy of a node's storage folder `templateDb` as a restore target (the live files: good
 * enough to be recognised as that node's), and a function checking that restore left it
 * exactly as it was.
 */
export function restoreTarget(templateDb: string, into: string): { dbPath: string; untouched: () => void } {
  const dbPath = join(into, "db");
  cpSync(templateDb, dbPath, { recursive: true, filter: (src) => !src.endsWith("cairn.lock") && !src.endsWith(".socket") });
  // the folder's own mtime is left out: restore takes the target's lock (cairn.lock, created
  // and removed again when it was not there) before it reads the packs
  const files = () => Object.fromEntries(Object.entries(dirState(dbPath)).filter(([k]) => k !== "."));
  const before = files();
  return {
    dbPath,
    untouched: () => {
      expect(files()).toEqual(before);
      expect(replacedDirsOf(dbPath)).toEqual([]);
      expect(dirState(stagingDirOf(dbPath))).toEqual({});
    },
  };
}
