/**
 * The shell script the bake builder runs. Pure, so its skip check and commands are tested and
 * shellchecked without a builder.
 */

export interface BakeScriptInput {
  readonly bucketName: string;
  readonly recipeHash: string;
  readonly region: string;
  /** Where the sources were copied on the builder. */
  readonly sourceDir: string;
  /** Overrides of the recipe's pins; absent means the recipe decides. */
  readonly nodeVersion?: string;
  readonly osvRef?: string;
}

const SAFE = /^[A-Za-z0-9._:/@+=,-]+$/;

function safe(name: string, value: string): string {
  if (!SAFE.test(value))
    throw new Error(`bake script value ${name} has characters outside [A-Za-z0-9._:/@+=,-]`);
  return value;
}

/** The manifest the bake writes last; its presence means the artifacts of that hash are complete. */
export function bakedManifestKey(recipeHash: string): string {
  return `images/${recipeHash}/manifest.json`;
}

export function renderBakeScript(input: BakeScriptInput): string {
  const prefix = `images/${safe("recipeHash", input.recipeHash)}`;
  return [
    "#!/bin/bash",
    "set -euo pipefail",
    `export AWS_DEFAULT_REGION=${safe("region", input.region)}`,
    `BUCKET=${safe("bucketName", input.bucketName)}`,
    `PREFIX=${prefix}`,
    `SRC=${safe("sourceDir", input.sourceDir)}`,
    `OUT=/var/tmp/snapfaas-bake/${input.recipeHash}`,
    "",
    "# Same recipe hash, same base version: nothing to rebuild when its manifest is already uploaded.",
    `if aws s3 ls "s3://$BUCKET/${bakedManifestKey(input.recipeHash)}" >/dev/null 2>&1; then`,
    '  echo "bake: artifacts for $PREFIX exist, skipping"',
    "  exit 0",
    "fi",
    "",
    "sudo dnf install -y -q git make gcc-c++ python3 nodejs20 nodejs20-npm",
    ...(input.osvRef === undefined ? [] : [`export SNAPFAAS_OSV_REF=${safe("osvRef", input.osvRef)}`]),
    ...(input.nodeVersion === undefined
      ? []
      : [`export SNAPFAAS_NODE_VERSION=${safe("nodeVersion", input.nodeVersion)}`]),
    'rm -rf "$OUT"',
    'mkdir -p "$OUT"',
    'cd "$SRC"',
    "npm-20 ci --no-audit --no-fund",
    'sudo --preserve-env=SNAPFAAS_OSV_REF,SNAPFAAS_NODE_VERSION npm-20 run bake -- --driver firecracker --guest osv --out "$OUT"',
    '[ -f "$OUT/manifest.json" ] || { echo "bake: no manifest.json in $OUT" >&2; exit 1; }',
    "",
    "# Artifacts first, manifest last: a reader that sees the manifest sees a complete set.",
    'aws s3 cp --only-show-errors --recursive --exclude manifest.json "$OUT" "s3://$BUCKET/$PREFIX/"',
    'aws s3 cp --only-show-errors "$OUT/manifest.json" "s3://$BUCKET/$PREFIX/manifest.json"',
    'echo "bake: uploaded $PREFIX"',
    "",
  ].join("\n");
}
