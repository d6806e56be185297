import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { canonicalJson } from "../contracts/canonical-json.ts";

/** sha256 (hex) of a file's bytes, streamed so snapshot memory files are not read into memory. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export function sha256Text(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * One sha256 for a set of files: the canonical JSON of {relative path: sha256 of bytes}. Paths are
 * relative to base, so the same files checked out elsewhere hash the same.
 */
export async function sha256Files(base: string, files: readonly string[]): Promise<string> {
  const entries: Record<string, string> = {};
  for (const file of files) entries[path.relative(base, file).split("\\").join("/")] = await sha256File(file);
  return sha256Text(canonicalJson(entries));
}

/** Every regular file below dir (recursively, symlinks not followed), sorted, as absolute paths. */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) out.push(full);
    }
  };
  await walk(dir);
  return out.sort();
}
