/**
 * The release manifest: what the Pulumi stack publishes for its hosts (in SSM) and what every host's boot
 * script and agent read (FAAS_RELEASE_MANIFEST): which agent bundle to run, which base image to restore,
 * and the pool, VM and limit settings. One schema for the writer (components/release-manifest.ts builds
 * and checks its output with it) and the reader (host-agent/release/host-manifest.ts parses with it), and
 * the layout both sides derive from it: where a base version's artifacts are in the bucket and on a host.
 */
import path from "node:path";
import { z } from "zod";

/** A base version as a folder and key name: one path segment, never . or .. */
export const BASE_VERSION_LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Where a host keeps its base images, one folder per version (the boot script's and the agent's default). */
export const DEFAULT_BASES_DIR = "/var/lib/snapfaas/bases";

const positive = z.int().positive();
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "a sha256 in lowercase hex (64 characters)");

const baseVersionLabel = z
  .string()
  .regex(BASE_VERSION_LABEL, "a version label: letters, digits, . _ -, starting with a letter or digit");

/** An object the stack uploaded: its key in the artifact bucket and the sha256 of its bytes. */
export const releaseArtifactSchema = z.object({ key: z.string().min(1), sha256: sha256Hex });

/** The pool, VM and limit settings of a release (the stack's `pool`, `vm` and `limits`, defaults applied). */
export const releaseSettingsSchema = z.object({
  pool: z.object({
    /** Restored, unspecialised VMs kept ready per host. */
    minIdle: z.int().min(0),
    maxInstances: positive,
    idleTtlSeconds: positive,
    maxConcurrentRestores: positive,
    memoryBudgetMiB: positive,
  }),
  vm: z.object({
    vcpus: positive,
    memoryMiB: positive,
    cpuMaxPercent: positive,
    ioReadBytesPerSecond: positive,
    ioWriteBytesPerSecond: positive,
    diskBandwidthBytesPerSecond: positive,
    diskOpsPerSecond: positive,
    netBandwidthBytesPerSecond: positive,
  }),
  limits: z.object({ callTimeoutMs: positive, payloadLimitBytes: positive }),
});

export const releaseManifestSchema = z.object({
  schemaVersion: z.literal(1),
  /** Hash of everything else: changes exactly when a host would behave differently. */
  releaseVersion: z.string().min(1),
  agentVersion: z.string().min(1),
  baseImageVersion: baseVersionLabel,
  firecrackerVersion: z.string().regex(/^\d+\.\d+\.\d+$/, "a version like 1.16.1 (no leading v)"),
  agent: releaseArtifactSchema,
  guestRuntime: releaseArtifactSchema,
  /** Key prefix of the baked base image artifacts of baseImageVersion (baseImagePrefix). */
  baseImagePrefix: z.string().min(1),
  config: releaseSettingsSchema,
});

export type ReleaseArtifact = z.infer<typeof releaseArtifactSchema>;
export type ReleaseSettings = z.infer<typeof releaseSettingsSchema>;
export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;

/** Key prefix where the bake uploads the artifacts of one base version, and where hosts download them. */
export function baseImagePrefix(baseImageVersion: string): string {
  return `images/${baseImageVersion}/`;
}

/** Where a host keeps the base image of a version: <basesDir>/<baseImageVersion>. */
export function baseDirOf(basesDir: string, baseImageVersion: string): string {
  return path.join(basesDir, baseImageVersion);
}
