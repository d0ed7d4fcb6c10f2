/**
 * Helpers for the fault tests (crash points of restore, full disks, damaged inputs): comparing
 * files byte for byte, checking a database file with the stock sqlite3, small tmpfs mounts
 * (root only), and rewriting store metadata with a valid checksum.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeManifest, encodeStoreInfo, type Manifest, manifestPath, STORE_FILE, type StoreInfo } from "../../src/store/format.ts";
import { sqlite3 } from "./node.ts";

/** `cmp -s a b`: the two files are byte-identical. */
export function sameBytes(a: string, b: string): boolean {
  return Bun.spawnSync(["cmp", "-s", a, b]).exitCode === 0;
}

export interface DbCheck {
  integrity: string;
  count: number;
}

/** integrity_check and blob count of a database file, read with the stock sqlite3 (immutable: creates no -wal/-shm). */
export function checkDb(file: string): DbCheck {
  const uri = `file:${file}?immutable=1`;
  const r = Bun.spawnSync(["sqlite3", uri, "PRAGMA integrity_check; SELECT count(*) FROM blobs;"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) return { integrity: `sqlite3 failed: ${r.stderr.toString().trim()}`, count: -1 };
  const lines = r.stdout.toString().trim().split("\n");
  return { integrity: lines.slice(0, -1).join("; "), count: Number(lines.at(-1)) };
}

export { sqlite3 };

export const isRoot = (): boolean => process.getuid?.() === 0;

/** Mount a tmpfs of `size` (e.g. "30m") at a new folder `dir`; returns an unmount function. */
export function mountTmpfs(dir: string, size: string): () => void {
  mkdirSync(dir, { recursive: true });
  // mode=0700: a folder only this user can write, as cairn requires of a store or a target
  const r = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`mount tmpfs at ${dir}: ${r.stderr.toString()}`);
  let mounted = true;
  return () => {
    if (!mounted) return;
    const u = Bun.spawnSync(["umount", "-l", dir], { stdout: "pipe", stderr: "pipe" });
    if (u.exitCode !== 0) throw new Error(`umount ${dir}: ${u.stderr.toString()}`);
    mounted = false;
  };
}

/** Can this process mount a tmpfs here (root, and mount permitted in this container)? */
export function canMountTmpfs(probeDir: string): { ok: boolean; why: string } {
  if (!isRoot()) return { ok: false, why: "not running as root (mount needs it)" };
  try {
    const umount = mountTmpfs(probeDir, "1m");
    umount();
    rmSync(probeDir, { recursive: true, force: true });
    return { ok: true, why: "" };
  } catch (e) {
    return { ok: false, why: `mount -t tmpfs is not permitted here: ${String(e)}` };
  }
}

/** Rewrite manifest `id` of a store with `patch` applied, and a valid checksum. */
export function rewriteManifest(store: string, id: number, patch: Partial<Manifest>): string {
  const file = join(store, manifestPath(id));
  const m = JSON.parse(readFileSync(file, "utf8")) as Manifest;
  const { checksum: _c, ...rest } = { ...m, ...patch };
  writeFileSync(file, encodeManifest(rest));
  return file;
}

/** Rewrite the store's cairn-store.json with `patch` applied. */
export function rewriteStoreInfo(store: string, patch: Partial<StoreInfo>): string {
  const file = join(store, STORE_FILE);
  const info = JSON.parse(readFileSync(file, "utf8")) as StoreInfo;
  writeFileSync(file, encodeStoreInfo({ ...info, ...patch }));
  return file;
}

/** Files directly in `dir` other than cairn.lock ([] if it does not exist). */
export function targetFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return Bun.spawnSync(["find", dir, "-mindepth", "1", "-not", "-name", "cairn.lock"], { stdout: "pipe" })
    .stdout.toString()
    .split("\n")
    .filter(Boolean)
    .sort();
}
