/**
 * Content hash of a folder of recipe files: the base image version. Same files, same version, so a bake
 * is skipped when its artifacts already exist.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join, relative, sep } from "node:path";

async function listFiles(root: string, dir: string, out: string[]): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    // Build output and dependencies are not recipe inputs.
    if (entry.name === "node_modules" || entry.name === "dist" || entry.name === ".faas") continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) await listFiles(root, path, out);
    else if (entry.isFile()) out.push(relative(root, path).split(sep).join("/"));
  }
}

/**
 * SHA-256 over the sorted relative paths and bytes of every file under `dir`, plus extra named inputs
 * (for example the OSv commit and Node version). Returns 64 hex digits.
 */
export async function hashRecipe(dir: string, extra: Readonly<Record<string, string>> = {}): Promise<string> {
  const files: string[] = [];
  try {
    await listFiles(dir, dir, files);
  } catch (error) {
    throw new Error(`recipe folder ${dir} cannot be read: ${(error as Error).message}`);
  }
  if (files.length === 0) throw new Error(`recipe folder ${dir} holds no files`);
  const hash = createHash("sha256");
  for (const file of files.sort()) {
    const bytes = await readFile(join(dir, file));
    // Length-prefixed fields: no two different inputs can serialize to the same stream.
    hash.update(`file ${file.length}:${file} ${bytes.length}:`);
    hash.update(bytes);
  }
  for (const key of Object.keys(extra).sort()) {
    const value = extra[key] ?? "";
    hash.update(`input ${key.length}:${key} ${value.length}:${value}`);
  }
  return hash.digest("hex");
}
