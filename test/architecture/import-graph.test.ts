/**
 * The parts of the project (the Pulumi components, the guest images and their bake, the guest runtime,
 * the host agent) agree through contracts, not through each other's internals. This test reads every
 * import of the shipped code and fails when a part reaches into another in a way not listed below.
 * The list is the known debt: each entry is a contract that still lives inside one part instead of in
 * a module of its own that both sides import. It may only shrink: an entry that no longer occurs fails
 * too, so a move that settles one is recorded by deleting its line.
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Top-level parts, most specific first; a file belongs to the first whose folder holds it. */
const PARTS = [
  { name: "contracts", dir: "contracts" },
  { name: "guest-runtime", dir: "guest-images/runtime" },
  { name: "guest-images", dir: "guest-images" },
  { name: "host-agent", dir: "host-agent" },
  { name: "components", dir: "components" },
] as const;
type Part = (typeof PARTS)[number]["name"];

/** Which parts each part may import from without an entry in KNOWN_CROSSINGS. */
const ALLOWED: Record<Part, readonly Part[]> = {
  contracts: [],
  "guest-runtime": ["contracts"],
  "guest-images": ["contracts", "guest-runtime"],
  "host-agent": ["contracts"],
  components: ["contracts"],
};

/** `importer -> imported`, repository-relative, one per line of debt. */
const KNOWN_CROSSINGS: readonly string[] = [
  "components/config.ts -> host-agent/release/host-manifest.ts",
  "components/faas-function.ts -> host-agent/registry/backend.ts",
  "components/faas-function.ts -> host-agent/registry/s3-backend.ts",
  "components/user-data.ts -> host-agent/config.ts",
  "guest-images/bake/firecracker-job.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/bake/firecracker-plan.ts -> host-agent/sandbox/firecracker/base-layout.ts",
  "guest-images/bake/firecracker-plan.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/bake/verify.ts -> host-agent/sandbox/driver.ts",
  "guest-images/bake/verify.ts -> host-agent/sandbox/firecracker/base-layout.ts",
  "guest-images/process/bake.ts -> host-agent/sandbox/driver.ts",
  "host-agent/agent.ts -> guest-images/bake/verify.ts",
  "host-agent/agent.ts -> guest-images/process/bake.ts",
  "host-agent/cli/cli.ts -> guest-images/process/bake.ts",
  "host-agent/guest/client.ts -> guest-images/runtime/protocol.ts",
  "host-agent/guest/console-line.ts -> guest-images/runtime/protocol.ts",
  "host-agent/http/data-plane.ts -> guest-images/runtime/protocol.ts",
  "host-agent/pool/instance-source.ts -> guest-images/runtime/protocol.ts",
  "host-agent/pool/pool.ts -> guest-images/runtime/protocol.ts",
  "host-agent/registry/registry.ts -> guest-images/runtime/loader.ts",
  "host-agent/release/base-check.ts -> guest-images/process/bake.ts",
  "host-agent/release/rollout.ts -> guest-images/runtime/protocol.ts",
  "host-agent/sandbox/process/driver.ts -> guest-images/runtime/protocol.ts",
];

function partOf(file: string): Part | undefined {
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

describe("import graph: parts meet through contracts", () => {
  it("finds relative imports of every form the code uses", () => {
    const found = relativeImports(
      'import a from "./a.ts";\nexport { b } from "../b.ts";\nimport type { C } from "../../c.ts";\nconst d = await import("./d.ts");\nimport e from "node:fs";',
    );
    assert.deepEqual(found.sort(), ["../../c.ts", "../b.ts", "./a.ts", "./d.ts"]);
  });

  it("no part reaches into another beyond the listed debt, and the list holds no settled entry", async () => {
    const actual = await crossings();
    const known = new Set(KNOWN_CROSSINGS);
    const added = actual.filter((c) => !known.has(c));
    const settled = KNOWN_CROSSINGS.filter((c) => !actual.includes(c));
    assert.deepEqual(
      { added, settled },
      { added: [], settled: [] },
      "added: import from a contract module (contracts/) instead of another part's internals; settled: delete the line from KNOWN_CROSSINGS",
    );
  });
});
