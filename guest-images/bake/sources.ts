/**
 * The files of this repository a Firecracker bake reads: what the stack ships to the builder and what
 * the base version's "recipe" input hashes. One list for both, so a file the bake runs can neither be
 * missing on the builder nor change without a new base version.
 *
 * The TypeScript part is the import graph of the programs the bake runs (computed by esbuild, not kept
 * by hand); the rest are the folders whose files the recipes run or copy by path (shell scripts, the
 * kernel config, the hello-world the fresh base must serve).
 */
import { readdir } from "node:fs/promises";
import path from "node:path";
import { build } from "esbuild";

/** Programs the bake starts: itself, and what its plan runs with `node --import tsx` or bundles. */
export const BAKE_ENTRY_POINTS = [
  "guest-images/bake/main.ts",
  "guest-images/code-disk/cli.ts",
  "guest-images/node/fetch-cli.ts",
  "guest-images/runtime/main.ts",
  "host-agent/sandbox/firecracker/acceptance.ts",
  "host-agent/cli/bundle-cli.ts",
] as const;

/** Folders whose files the recipes use by path: scripts, configs, the seed function. */
export const BAKE_DATA_DIRS = [
  "guest-images/bake",
  "guest-images/linux",
  "guest-images/osv",
  // The native helper is compiled into the Linux rootfs by build-rootfs.sh, not bundled.
  "guest-images/runtime/native",
  "examples/hello-world",
] as const;

/** npm's view of the repository: the builder runs `npm ci` and `npm run bake` from these. */
export const BAKE_NPM_FILES = ["package.json", "package-lock.json", "tsconfig.json"] as const;

/** Never part of a bake: dependencies, build output, docs (prose does not shape a snapshot). */
function excluded(relative: string): boolean {
  const parts = relative.split("/");
  return (
    parts.some((p) => p === "node_modules" || p === "dist" || p === ".faas" || p === ".git") ||
    relative.endsWith(".md")
  );
}

async function walk(repoDir: string, dir: string, out: Set<string>): Promise<void> {
  for (const entry of await readdir(path.join(repoDir, dir), { withFileTypes: true })) {
    const rel = `${dir}/${entry.name}`;
    if (excluded(rel)) continue;
    if (entry.isDirectory()) await walk(repoDir, rel, out);
    else if (entry.isFile()) out.add(rel);
  }
}

/** Local files esbuild reaches from the entry points (packages stay external: npm ci installs them). */
export async function bakeImportGraph(repoDir: string): Promise<string[]> {
  const result = await build({
    entryPoints: BAKE_ENTRY_POINTS.map((e) => path.join(repoDir, e)),
    absWorkingDir: repoDir,
    bundle: true,
    platform: "node",
    format: "esm",
    packages: "external",
    metafile: true,
    write: false,
    outdir: "out",
    logLevel: "silent",
  });
  return Object.keys(result.metafile.inputs)
    .map((p) => p.split(path.sep).join("/"))
    .filter((p) => !excluded(p))
    .sort();
}

/** Repository-relative paths (forward slashes, sorted) of the recipe files, npm files excluded. */
export async function bakeRecipeFiles(repoDir: string): Promise<string[]> {
  const files = new Set(await bakeImportGraph(repoDir));
  for (const dir of BAKE_DATA_DIRS) await walk(repoDir, dir, files);
  return [...files].sort();
}

/**
 * Everything the builder needs: the recipe files plus package.json, the lockfile and tsconfig.json.
 * The input of the base version's "recipe" hash, and the content of the tarball the stack ships.
 */
export async function bakeSourceFiles(repoDir: string): Promise<string[]> {
  return [...(await bakeRecipeFiles(repoDir)), ...BAKE_NPM_FILES].sort();
}
