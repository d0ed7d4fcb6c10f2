/** Every test gets its own temp dir, removed afterwards. Paths stay short for Unix sockets. */
import { mkdtempSync, rmSync } from "node:fs";
import { afterEach } from "bun:test";

const made: string[] = [];

export function tmpDir(prefix = "cairn-"): string {
  const dir = mkdtempSync(`/tmp/${prefix}`);
  made.push(dir);
  return dir;
}

/** Remove every dir made by tmpDir() in this file once each test ends. */
export function cleanTmpDirsAfterEach(): void {
  afterEach(() => {
    for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
  });
}
