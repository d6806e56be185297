/**
 * The agent's own record of its releases (current and previous) in the state dir, so a restarted agent
 * comes back on the base it had rolled to and can still roll back.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../registry/atomic-file.ts";
import { parseRelease, type Release } from "./release.ts";

export interface ReleaseRecords {
  readonly current: Release;
  readonly previous?: Release;
}

export function releaseFile(stateDir: string): string {
  return path.join(stateDir, "release.json");
}

/** The stored records, or undefined when there are none (or they no longer parse). */
export async function readReleaseRecords(stateDir: string): Promise<ReleaseRecords | undefined> {
  let raw: { current?: unknown; previous?: unknown };
  try {
    raw = JSON.parse(await readFile(releaseFile(stateDir), "utf8")) as typeof raw;
  } catch {
    return undefined;
  }
  try {
    const current = parseRelease(raw.current);
    const previous = raw.previous === undefined ? undefined : parseRelease(raw.previous);
    return previous ? { current, previous } : { current };
  } catch {
    return undefined;
  }
}

export async function writeReleaseRecords(stateDir: string, records: ReleaseRecords): Promise<void> {
  await writeFileAtomic(releaseFile(stateDir), `${JSON.stringify(records, null, 2)}\n`, 0o600);
}
