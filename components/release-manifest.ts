/**
 * Builds the release manifest hosts read from SSM (its schema: contracts/release-manifest.ts). Pure, so
 * its shape is tested directly.
 */
import { createHash } from "node:crypto";
import { canonicalJson } from "../contracts/canonical-json.ts";
import {
  baseImagePrefix,
  type ReleaseManifest,
  releaseManifestSchema,
} from "../contracts/release-manifest.ts";
import { describeZodIssues } from "../contracts/zod-errors.ts";

export type ReleaseManifestInput = Omit<
  ReleaseManifest,
  "schemaVersion" | "releaseVersion" | "baseImagePrefix"
>;

/** The manifest of a release; one the hosts' schema would refuse is an error here, at `pulumi preview`. */
export function buildReleaseManifest(input: ReleaseManifestInput): ReleaseManifest {
  const body = {
    ...input,
    schemaVersion: 1 as const,
    baseImagePrefix: baseImagePrefix(input.baseImageVersion),
  };
  const releaseVersion = createHash("sha256").update(canonicalJson(body)).digest("hex").slice(0, 16);
  const manifest = { ...body, releaseVersion };
  const checked = releaseManifestSchema.safeParse(manifest);
  if (!checked.success) {
    throw new Error(
      `the release manifest would be refused by the hosts:\n${describeZodIssues(checked.error.issues, { root: "(manifest)" }).join("\n")}`,
    );
  }
  return manifest;
}
