/**
 * Reads the relative imports of the shipped code and says which of them cross from one part of the
 * project into another (test/architecture/import-graph.test.ts holds the rule and the known debt).
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Top-level parts, most specific first; a file belongs to the first whose folder holds it. */
export const PARTS = [
  { name: "contracts", dir: "contracts" },
  { name: "guest-runtime", dir: "guest-images/runtime" },
  { name: "guest-images", dir: "guest-images" },
  { name: "host-agent", dir: "host-agent" },
  { name: "components", dir: "components" },
] as const;
export type Part = (typeof PARTS)[number]["name"];

/** Which parts each part may import from without an entry in KNOWN_CROSSINGS. */
export const ALLOWED: Record<Part, readonly Part[]> = {
  contracts: [],
  "guest-runtime": ["contracts"],
  "guest-images": ["contracts", "guest-runtime"],
  "host-agent": ["contracts"],
  components: ["contracts"],
};

export function partOf(file: string): Part | undefined {
  return PARTS.find((p) => file === p.dir || file.startsWith(`${p.dir}/`))?.name;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(path.join(REPO, dir), { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const rel = path.posix.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(rel)));
    else if (/\.(ts|mts|cts|js|mjs|cjs)$/.test(entry.name)) out.push(rel);
  }
  return out;
}

/** Relative module specifiers of one file: static imports and exports, and dynamic import(). */
export function relativeImports(source: string): string[] {
  const found = new Set<string>();
  const patterns = [/\bfrom\s+["'](\.{1,2}\/[^"']+)["']/g, /\bimport\s*\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g];
  for (const pattern of patterns) for (const m of source.matchAll(pattern)) found.add(m[1] as string);
  return [...found];
}

export async function crossings(): Promise<string[]> {
  const files = (await Promise.all(PARTS.map((p) => sourceFiles(p.dir)))).flat();
  const seen = new Set<string>();
  for (const file of new Set(files)) {
    const from = partOf(file);
    if (!from) continue;
    const source = await readFile(path.join(REPO, file), "utf8");
    for (const spec of relativeImports(source)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
      const to = partOf(target);
      if (!to || to === from || ALLOWED[from].includes(to)) continue;
      seen.add(`${file} -> ${target}`);
    }
  }
  return [...seen].sort();
}
