/**
 * The release manifest hosts read from SSM: which agent bundle to run, which base image to restore,
 * and the pool and limit settings. Pure, so its shape is tested directly.
 */
import { createHash } from "node:crypto";
import type { PoolSettings } from "./config.ts";

export interface ReleaseArtifact {
  readonly key: string;
  readonly sha256: string;
}

export interface ReleaseManifest {
  readonly schemaVersion: 1;
  /** Hash of everything below: changes exactly when a host would behave differently. */
  readonly releaseVersion: string;
  readonly agentVersion: string;
  readonly baseImageVersion: string;
  readonly firecrackerVersion: string;
  readonly agent: ReleaseArtifact;
  readonly guestRuntime: ReleaseArtifact;
  /** Prefix of the baked base image artifacts for baseImageVersion. */
  readonly baseImagePrefix: string;
  readonly config: PoolSettings;
}

export type ReleaseManifestInput = Omit<
  ReleaseManifest,
  "schemaVersion" | "releaseVersion" | "baseImagePrefix"
>;

/** Key prefix where the bake uploads the artifacts of one base version. */
export function baseImagePrefix(baseImageVersion: string): string {
  return `images/${baseImageVersion}/`;
}

/** JSON with object keys sorted at every level, so equal content always gives equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function buildReleaseManifest(input: ReleaseManifestInput): ReleaseManifest {
  const body = {
    ...input,
    schemaVersion: 1 as const,
    baseImagePrefix: baseImagePrefix(input.baseImageVersion),
  };
  const releaseVersion = createHash("sha256").update(canonicalJson(body)).digest("hex").slice(0, 16);
  return { ...body, releaseVersion };
}
