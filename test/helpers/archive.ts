/**
 * Helpers for the archive end-to-end tests: GNU tar on the archives cairn writes (listing and
 * reading one entry, for every compression), a small reader of plain tar headers (where an
 * entry's data lies in the file, so that a test can damage exactly one block), cut copies of
 * a file, and running the binary with extra environment variables while seeing the signal
 * that ended it.
 */
import { closeSync, openSync, statSync, writeFileSync } from "node:fs";
import { preadFully } from "../../src/util/fsx.ts";
import { BINARY } from "./node.ts";

export type ArchiveExt = "tar" | "tar.gz" | "tar.zst";

/** GNU tar's flag for the compression of an archive named `*.ext`. */
export function tarCompressionFlags(ext: ArchiveExt): string[] {
  return ext === "tar" ? [] : ext === "tar.gz" ? ["-z"] : ["--zstd"];
}

function gnuTar(args: string[]): Uint8Array {
  const r = Bun.spawnSync(["tar", ...args], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  if (r.exitCode !== 0) throw new Error(`tar ${args.join(" ")} failed (exit ${r.exitCode}): ${r.stderr.toString()}`);
  return r.stdout;
}

/** `tar -tf FILE` (with -z / --zstd as the name says): the entry names, in archive order. */
export function gnuTarList(file: string, ext: ArchiveExt): string[] {
  return new TextDecoder().decode(gnuTar([...tarCompressionFlags(ext), "-tf", file])).split("\n").filter(Boolean);
}

/** `tar -tvf FILE`: one line per entry (type and mode first). */
export function gnuTarListVerbose(file: string, ext: ArchiveExt): string[] {
  return new TextDecoder().decode(gnuTar([...tarCompressionFlags(ext), "-tvf", file])).split("\n").filter(Boolean);
}

/** `tar -xOf FILE NAME`: the bytes of one entry, read by GNU tar. */
export function gnuTarCat(file: string, ext: ArchiveExt, name: string): Uint8Array {
  return gnuTar([...tarCompressionFlags(ext), "-xOf", file, name]);
}

/** `tar -xf FILE -C DIR`. */
export function gnuTarExtract(file: string, ext: ArchiveExt, dir: string): void {
  gnuTar([...tarCompressionFlags(ext), "-xf", file, "-C", dir]);
}

export interface TarEntry {
  name: string;
  /** Type flag: "0" (or "\0") for a regular file, "5" for a directory, ... */
  type: string;
  size: number;
  /** Offset of the entry's 512-byte header in the file, and of its data. */
  headerOffset: number;
  dataOffset: number;
}

function readAt(fd: number, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  return buf.subarray(0, preadFully(fd, buf, 0, length, offset));
}

const cString = (b: Uint8Array) => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

/**
 * The entries of an uncompressed tar file, read from its ustar headers (checksums checked),
 * up to the end-of-archive block. Only what cairn writes is handled (no long-name extensions).
 */
export function readTarEntries(file: string): TarEntry[] {
  const size = statSync(file).size;
  const fd = openSync(file, "r");
  const out: TarEntry[] = [];
  try {
    let at = 0;
    while (at + 512 <= size) {
      const h = readAt(fd, at, 512);
      if (h.every((b) => b === 0)) break;
      let sum = 0;
      for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
      const stored = Number.parseInt(cString(h.subarray(148, 156)).trim(), 8);
      if (stored !== sum) throw new Error(`${file}: bad tar header checksum at offset ${at}`);
      const type = String.fromCharCode(h[156]!);
      if (type === "x" || type === "g" || type === "L") throw new Error(`${file}: tar extension header (${type}) at ${at} not handled`);
      const name = cString(h.subarray(0, 100));
      const prefix = cString(h.subarray(345, 500));
      const entrySize = Number.parseInt(cString(h.subarray(124, 136)).trim() || "0", 8);
      out.push({ name: prefix ? `${prefix}/${name}` : name, type, size: entrySize, headerOffset: at, dataOffset: at + 512 });
      at += 512 + Math.ceil(entrySize / 512) * 512;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** The data of one entry of an uncompressed tar file. */
export function readTarEntryData(file: string, entry: TarEntry): Uint8Array {
  const fd = openSync(file, "r");
  try {
    return readAt(fd, entry.dataOffset, entry.size);
  } finally {
    closeSync(fd);
  }
}

/** Write the first `bytes` bytes of `src` to `dst`. */
export function writePrefix(src: string, dst: string, bytes: number): void {
  const fd = openSync(src, "r");
  try {
    writeFileSync(dst, readAt(fd, 0, bytes));
  } finally {
    closeSync(fd);
  }
}

export interface RunResult {
  code: number | null;
  /** The signal that ended the process ("SIGKILL"), or null if it exited. */
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** The binary with `args`, to completion, with extra environment variables (e.g. a crash point). */
export function runCairnEnv(args: string[], env: Record<string, string>, timeoutMs = 60_000): RunResult {
  const r = Bun.spawnSync([BINARY, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: timeoutMs });
  const signal = r.signalCode ? String(r.signalCode) : null;
  return { code: signal ? null : r.exitCode, signal, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

export interface BoundedRun extends RunResult {
  /** True if it was still running after the time limit (and was then killed with SIGKILL). */
  timedOut: boolean;
}

/**
 * The binary with `args`, killed with SIGKILL if it has not exited after `timeoutMs` (a hung
 * process may ignore SIGTERM). `onStart` may signal it meanwhile (e.g. SIGINT after a while).
 */
export async function runCairnBounded(args: string[], timeoutMs: number, onStart?: (proc: { kill(sig: NodeJS.Signals): void }) => void): Promise<BoundedRun> {
  const proc = Bun.spawn([BINARY, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, timeoutMs);
  onStart?.({ kill: (sig) => proc.kill(sig) });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const signal = proc.signalCode ? String(proc.signalCode) : null;
  return { code: signal ? null : proc.exitCode, signal, stdout, stderr, timedOut };
}
