import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../registry/atomic-file.ts";

/** Compares a presented bearer token with the admin token in constant time (hashes first: equal lengths). */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "");
  return m?.[1];
}

export const TOKEN_FILE = "admin-token";

/**
 * The admin token: FAAS_ADMIN_TOKEN when set, else the one stored in the state dir, else a new one
 * (stored with mode 0600). `generated` tells the caller to print it, once.
 */
export async function resolveAdminToken(
  stateDir: string,
  fromEnv: string | undefined,
): Promise<{ token: string; generated: boolean; file: string }> {
  const file = path.join(stateDir, TOKEN_FILE);
  if (fromEnv) return { token: fromEnv, generated: false, file };
  try {
    const stored = (await readFile(file, "utf8")).trim();
    if (stored.length >= 16) return { token: stored, generated: false, file };
  } catch {
    // None stored yet.
  }
  const token = randomBytes(24).toString("base64url");
  await writeFileAtomic(file, `${token}\n`, 0o600);
  return { token, generated: true, file };
}
