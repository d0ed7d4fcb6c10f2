/** Markdown for bench/results.md: the machine facts header, tables and number formatting. */
import { Database } from "bun:sqlite";
import { readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { REPO_ROOT } from "./node.ts";
import { MiB } from "./workload.ts";

function command(argv: string[], cwd = REPO_ROOT): string | undefined {
  try {
    const r = Bun.spawnSync(argv, { cwd, stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 ? r.stdout.toString().trim() : undefined;
  } catch {
    return undefined;
  }
}

export function cpuModel(): string {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    // x86 says "model name"; some ARM kernels only give "Hardware" or "CPU part"
    for (const key of ["model name", "Hardware", "Processor", "cpu model"]) {
      const m = new RegExp(`^${key}\\s*:\\s*(.+)$`, "m").exec(info);
      if (m?.[1]) return m[1].trim();
    }
  } catch {
    // not Linux
  }
  return "unknown";
}

/** The SQLite that bun:sqlite links, which is also the one inside the compiled node. */
export function sqliteVersion(): string {
  const db = new Database(":memory:");
  try {
    return db.query<{ v: string }, []>("SELECT sqlite_version() AS v").get()!.v;
  } finally {
    db.close();
  }
}

export interface MachineFacts {
  date: string;
  nproc: string;
  cpu: string;
  memory: string;
  kernel: string;
  bun: string;
  sqlite: string;
  tmpFilesystem: string;
  cairn: string;
}

export function machineFacts(): MachineFacts {
  const pkg = JSON.parse(readFileSync(`${REPO_ROOT}/package.json`, "utf8")) as { version?: string };
  const commit = command(["git", "rev-parse", "--short", "HEAD"]);
  const dirty = command(["git", "status", "--porcelain", "--", "src"]);
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    nproc: command(["nproc"]) ?? String(availableParallelism()),
    cpu: cpuModel(),
    memory: `${(totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    kernel: command(["uname", "-sr"]) ?? process.platform,
    bun: `${Bun.version} (${Bun.revision.slice(0, 9)})`,
    sqlite: sqliteVersion(),
    tmpFilesystem: command(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", "/tmp"])?.replace(/\s+/, " on ") ?? "unknown",
    cairn: `${pkg.version ?? "?"}${commit ? ` at ${commit}${dirty ? " (src/ modified)" : ""}` : ""}`,
  };
}

export function renderFacts(f: MachineFacts): string {
  return [
    `- Date: ${f.date}`,
    `- nproc: ${f.nproc}`,
    `- CPU: ${f.cpu}`,
    `- Memory: ${f.memory}; kernel: ${f.kernel}`,
    `- Bun: ${f.bun}`,
    `- SQLite: ${f.sqlite} (bun:sqlite, the same library the compiled node uses)`,
    `- Storage: temp dirs under /tmp (${f.tmpFilesystem})`,
    `- cairn: ${f.cairn}`,
  ].join("\n");
}

export type Align = "left" | "right";

export interface Column {
  header: string;
  align?: Align;
}

export function table(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`;
  const rule = `|${columns.map((c) => (c.align === "right" ? "---:" : ":---")).join("|")}|`;
  return [line(columns.map((c) => c.header)), rule, ...rows.map(line)].join("\n");
}

/** A figure to a sensible number of significant digits, with thousands separators. */
export function num(x: number): string {
  if (!Number.isFinite(x)) return "–";
  const digits = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : Math.abs(x) >= 1 ? 2 : 3;
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ratio(x: number): string {
  return Number.isFinite(x) ? `${x.toFixed(2)}×` : "–";
}

export const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
export const mib = (b: number) => `${num(b / MiB)} MiB`;
export const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
/** The "met?" column of a target table. */
export const met = (ok: boolean) => (ok ? "yes" : "**no**");
