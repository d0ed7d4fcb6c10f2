/**
 * The layers of src/ point down only, and no imports close a circle (ARCHITECTURE.md). Every
 * import of every file under src/ is read (type-only imports too: a circle of types is a
 * circle of design) and checked against the table below; a file that matches no layer fails
 * too, so a new folder must be placed in the table.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../../src");

/** Top to bottom. A layer may import its own files and the layers it names. */
const LAYERS: { name: string; files: RegExp; mayImport: string[] }[] = [
  { name: "commands", files: /^(main\.ts|commands\/)/, mayImport: ["node", "worker", "interfaces", "checkpoint", "restore", "store ops", "store backends", "store core", "engine", "config", "util", "base"] },
  { name: "node", files: /^node\//, mayImport: ["interfaces", "checkpoint", "restore", "store ops", "store backends", "store core", "engine", "config", "util", "base"] },
  { name: "worker", files: /^worker\.ts$/, mayImport: ["checkpoint", "restore", "store ops", "store backends", "store core", "engine", "util", "base"] },
  { name: "interfaces", files: /^(api|admin)\//, mayImport: ["engine", "config", "util", "base"] },
  { name: "checkpoint", files: /^checkpoint\//, mayImport: ["store ops", "store backends", "store core", "engine", "config", "util", "base"] },
  { name: "restore", files: /^restore\//, mayImport: ["store ops", "store backends", "store core", "engine", "util", "base"] },
  { name: "store ops", files: /^store\/(open|copy|gc|retention|jobs|keys)\.ts$/, mayImport: ["store backends", "store core", "util", "base"] },
  { name: "store backends", files: /^store\/(dir|s3|archive)\//, mayImport: ["store core", "util", "base"] },
  { name: "store core", files: /^store\/[^/]+\.ts$/, mayImport: ["util", "base"] },
  { name: "engine", files: /^engine\//, mayImport: ["util", "base"] },
  { name: "config", files: /^config\//, mayImport: ["util", "base"] },
  { name: "util", files: /^util\//, mayImport: ["base"] },
  { name: "base", files: /^(errors|log|version)\.ts$/, mayImport: [] },
];

function layerOf(rel: string): string | undefined {
  return LAYERS.find((l) => l.files.test(rel))?.name;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

/** The relative imports of a file (static, dynamic, type-only and re-exports), as paths under src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}\/[^"']+)["']/g)) {
    const target = resolve(dirname(file), m[1]!);
    if (target.startsWith(SRC)) out.push(relative(SRC, target));
  }
  return out;
}

const files = sourceFiles(SRC).map((f) => relative(SRC, f)).sort();
const graph = new Map(files.map((f) => [f, importsOf(join(SRC, f))]));

describe("layers of src/", () => {
  test("every file is in a layer", () => {
    expect(files.filter((f) => layerOf(f) === undefined)).toEqual([]);
  });

  test("every import points down the table (or stays in its layer)", () => {
    const upward: string[] = [];
    for (const [from, targets] of graph) {
      const a = layerOf(from)!;
      const allowed = LAYERS.find((l) => l.name === a)!.mayImport;
      for (const to of targets) {
        const b = layerOf(to);
        if (b !== a && !(b && allowed.includes(b))) upward.push(`${from} (${a}) → ${to} (${b ?? "no layer"})`);
      }
    }
    expect(upward).toEqual([]);
  });

  test("no imports close a circle", () => {
    // Tarjan's strongly connected components; any component of more than one file is a circle
    let index = 0;
    const idx = new Map<string, number>();
    const low = new Map<string, number>();
    const stack: string[] = [];
    const on = new Set<string>();
    const circles: string[][] = [];
    const visit = (v: string) => {
      idx.set(v, index);
      low.set(v, index++);
      stack.push(v);
      on.add(v);
      for (const w of graph.get(v) ?? []) {
        if (!graph.has(w)) continue;
        if (!idx.has(w)) {
          visit(w);
          low.set(v, Math.min(low.get(v)!, low.get(w)!));
        } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
      if (low.get(v) === idx.get(v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          on.delete(w);
          scc.push(w);
        } while (w !== v);
        if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) circles.push(scc.sort());
      }
    };
    for (const f of files) if (!idx.has(f)) visit(f);
    expect(circles).toEqual([]);
  });

  test("the test catches what it is for: an upward import and a circle", () => {
    // the arrows the layout issue found: a worker of checkpoint/ importing restore/, api/ importing node/
    const a = layerOf("checkpoint/range-job.ts")!;
    expect(LAYERS.find((l) => l.name === a)!.mayImport).not.toContain(layerOf("restore/range-job.ts"));
    expect(LAYERS.find((l) => l.name === layerOf("api/rest.ts"))!.mayImport).not.toContain(layerOf("node/node.ts"));
    expect(LAYERS.find((l) => l.name === layerOf("restore/restore.ts"))!.mayImport).not.toContain("checkpoint");
    expect(LAYERS.find((l) => l.name === layerOf("store/reader.ts"))!.mayImport).not.toContain("store backends");
  });
});
