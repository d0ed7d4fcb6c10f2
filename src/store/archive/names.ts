/**
 * Archive files: what their names ask for (.tar, .tar.gz, .tar.zst) and what their first bytes
 * say they are, and the folder an archive holds its store under.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { CairnError } from "../../errors.ts";

export type ArchiveCompression = "none" | "gzip" | "zstd";

const ARCHIVE_NAME_RE = /\.(tar|tar\.gz|tgz|tar\.zst|tzst)$/i;

/** True if `path` is named like an archive (.tar, .tar.gz, .tgz, .tar.zst, .tzst). */
export function isArchiveName(path: string): boolean {
  return ARCHIVE_NAME_RE.test(path);
}

/** The compression an output name asks for. */
export function compressionForName(path: string): ArchiveCompression {
  const m = ARCHIVE_NAME_RE.exec(path);
  if (!m) {
    throw new CairnError("E_USAGE", `${path}: the output must end in .tar, .tar.gz or .tar.zst`);
  }
  const ext = m[1]!.toLowerCase();
  return ext === "tar" ? "none" : ext === "tar.gz" || ext === "tgz" ? "gzip" : "zstd";
}

/** The folder an archive of checkpoint `id` holds everything under. */
export function archiveRoot(id: number): string {
  return `cairn-checkpoint-${id}`;
}

/** What an archive's first bytes say it is compressed with (whatever its name). */
export function sniffCompression(path: string): ArchiveCompression {
  const fd = openSync(path, "r");
  try {
    const head = new Uint8Array(4);
    const n = readSync(fd, head, 0, 4, 0);
    if (n >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
    if (n >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
    return "none";
  } finally {
    closeSync(fd);
  }
}

