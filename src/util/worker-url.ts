/**
 * Where a worker entry point lives. Under `bun run` it is the .ts file beside its module; in
 * the `bun build --compile` binary every extra entry point (see scripts/build.ts) is embedded
 * at /$bunfs/root/<path relative to src>.js.
 */
export function workerUrl(fromSrc: string): string {
  if (import.meta.url.includes("$bunfs")) return `/$bunfs/root/${fromSrc}.js`;
  return new URL(`../${fromSrc}.ts`, import.meta.url).href;
}

/** Worker entry points, relative to src/ and without extension; the build embeds each one. */
export const WORKER_ENTRY_POINTS = ["worker"] as const;
