/**
 * JSON with object keys sorted at every level and no whitespace: one byte string per value, so a hash
 * over it does not depend on the order keys were inserted in. Every version in the project that is a
 * hash of a JSON value (the base version from its inputs, the release version from its manifest, the
 * Linux guest's cache keys) hashes this text.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}
