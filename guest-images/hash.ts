import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";

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
 * JSON with object keys sorted at every level and no whitespace: one byte string per value, so a
 * hash over it does not depend on the order keys were inserted in.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
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
