/**
 * Turns a function's folder into a deployable bundle: its entry bundled with esbuild into one CommonJS
 * file (TypeScript and dependencies included), plus a package.json naming it, as a tar.gz.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { build } from "esbuild";
import { create } from "tar";

export class PackError extends Error {
  override readonly name = "PackError";
}

const ENTRY_CANDIDATES = [
  "index.ts",
  "index.mts",
  "index.js",
  "index.mjs",
  "index.cjs",
  "src/index.ts",
  "src/index.js",
];

export function findEntry(dir: string): string {
  const pkgFile = path.join(dir, "package.json");
  if (existsSync(pkgFile)) {
    const pkg = JSON.parse(readFileSync(pkgFile, "utf8")) as { main?: string; source?: string };
    for (const field of [pkg.source, pkg.main]) {
      if (typeof field === "string" && existsSync(path.join(dir, field))) return field;
    }
  }
  for (const candidate of ENTRY_CANDIDATES) if (existsSync(path.join(dir, candidate))) return candidate;
  throw new PackError(
    `${dir}: no entry found (package.json "main", or one of ${ENTRY_CANDIDATES.join(", ")})`,
  );
}

/**
 * Bundles the function in `dir` the way `faas deploy` ships it: its entry and everything it imports in
 * one CommonJS file, `out/index.js`, with a package.json naming it. The bake builds its hello-world code
 * disk from this too, so the base is proven against what a deploy really sends.
 */
export async function bundleFunctionInto(dir: string, out: string): Promise<void> {
  if (!existsSync(dir)) throw new PackError(`${dir}: no such folder`);
  const entry = findEntry(dir);
  const result = await build({
    entryPoints: [path.resolve(dir, entry)],
    absWorkingDir: path.resolve(dir),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    outfile: path.join(out, "index.js"),
    logLevel: "silent",
    legalComments: "none",
  }).catch((err: Error) => {
    throw new PackError(`esbuild could not bundle ${path.join(dir, entry)}: ${err.message}`);
  });
  if (result.errors.length > 0) throw new PackError(result.errors.map((e) => e.text).join("\n"));
  await writeFile(path.join(out, "package.json"), `${JSON.stringify({ main: "index.js" })}\n`);
}

/** The tar.gz bytes of the bundled function. */
export async function packFunction(dir: string): Promise<Buffer> {
  if (!existsSync(dir)) throw new PackError(`${dir}: no such folder`);
  const out = await mkdtemp(path.join(tmpdir(), "faas-pack-"));
  try {
    await bundleFunctionInto(dir, out);
    const chunks: Buffer[] = [];
    const stream = create({ gzip: true, cwd: out, portable: true, mtime: new Date(0) }, [
      "index.js",
      "package.json",
    ]);
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
