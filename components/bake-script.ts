// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are shell text, where ${...} is bash
/**
 * What the bake builder runs, rendered by the stack. Pure, so its steps are tested and shellchecked
 * without a builder, and rehearsed for real (test/components/guest-image-bake-rehearsal.test.ts).
 *
 * The builder is an Ubuntu 24.04 host of the fleet's instance type. The script runs as root from start
 * to end (one owner for every file, so a retry can clean up after a failed run), keeps downloads and
 * checkouts in a cache folder a retry reuses, writes the full log to a file on the builder and prints
 * only a few summary lines (the Command's output is kept in the Pulumi state), uploads artifacts before
 * the manifest, and stops the builder once the base is uploaded.
 */
import { baseImagePrefix } from "../contracts/release-manifest.ts";

/** The Ubuntu user of Canonical's AMIs: the Command logs in as it and runs the script under sudo. */
export const BUILDER_USER = "ubuntu";

/** Where CopyToRemote puts the sources tarball on the builder. */
export const BAKE_SOURCES_REMOTE_PATH = `/home/${BUILDER_USER}/snapfaas-bake-sources.tgz`;

/** Root-owned cache of the builder: sources, the bake's work folder and output, the builder's node, logs. */
export const BAKE_CACHE_DIR = "/var/cache/snapfaas-bake";

/**
 * Node that runs the bake on the builder (not the guest's node, which the recipe pins): an LTS line,
 * from nodejs.org with its SHASUMS256.txt check. 24.21.0 is the newest 24.x listed by the npm registry
 * (package "node", which republishes every Node release) when this was pinned.
 */
export const BUILDER_NODE = { version: "24.21.0", arch: "linux-x64" } as const;

/** What every bake needs on the builder before `npm ci`; the guest recipes install their own. */
export const BUILDER_PACKAGES = ["ca-certificates", "curl", "git", "xz-utils", "python3", "make"] as const;

export type BakeGuest = "linux" | "osv";

export interface BakeScriptInput {
  readonly bucketName: string;
  readonly region: string;
  /** The base version the stack computed; the bake must produce exactly this one. */
  readonly baseVersion: string;
  readonly guest: BakeGuest;
  /** The VM shape the snapshot fixes (the stack's `vm`). */
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** The fleet's pinned AMI: part of the base version (the host kernel shapes restores). */
  readonly hostAmi: string;
}

const SAFE = /^[A-Za-z0-9._:/@+=,-]+$/;

function safe(name: string, value: string | number): string {
  const text = String(value);
  if (!SAFE.test(text))
    throw new Error(`bake script value ${name} has characters outside [A-Za-z0-9._:/@+=,-]`);
  return text;
}

/** The manifest the bake uploads last; its presence means the artifacts of that version are complete. */
export function bakedManifestKey(baseVersion: string): string {
  return `${baseImagePrefix(baseVersion)}manifest.json`;
}

/**
 * The script. Knobs for a rehearsal only (never set by the stack; sudo on the builder drops them):
 * SNAPFAAS_BAKE_REHEARSAL=1 (no apt-get, the bake runs --rehearse, the builder is not stopped),
 * SNAPFAAS_BAKE_CACHE, SNAPFAAS_BAKE_SOURCES (paths), SNAPFAAS_BAKE_NODE_MODULES (a node_modules folder
 * to link instead of `npm ci`), SNAPFAAS_BUILDER_NODE_DIST, SNAPFAAS_FIRECRACKER_RELEASES (mirrors,
 * file:// allowed), SNAPFAAS_CACHE_DIR (where the guest's pinned Node is cached) and SNAPFAAS_S3_ENDPOINT
 * (an S3 endpoint).
 */
export function renderBakeScript(input: BakeScriptInput): string {
  if (!/^[0-9a-f]{64}$/.test(input.baseVersion))
    throw new Error("bake script value baseVersion must be 64 lowercase hex digits");
  if (input.guest !== "linux" && input.guest !== "osv")
    throw new Error(`bake script value guest must be "linux" or "osv", got "${input.guest}"`);
  const prefix = baseImagePrefix(input.baseVersion);
  const packages = BUILDER_PACKAGES;
  const nodeDir = `node-v${BUILDER_NODE.version}-${BUILDER_NODE.arch}`;
  return [
    "#!/bin/bash",
    `# snapfaas bake of base ${input.baseVersion} (${input.guest}); runs as root.`,
    "# -E: the ERR trap also fires for a failure inside a function (s3, stop_builder).",
    "set -Eeuo pipefail",
    "umask 022",
    `export AWS_DEFAULT_REGION=${safe("region", input.region)}`,
    `BUCKET=${safe("bucketName", input.bucketName)}`,
    `BASE_VERSION=${input.baseVersion}`,
    `PREFIX=${prefix}`,
    `GUEST=${input.guest}`,
    `VCPUS=${safe("vcpus", input.vcpus)}`,
    `MEMORY_MIB=${safe("memoryMiB", input.memoryMiB)}`,
    `HOST_AMI=${safe("hostAmi", input.hostAmi)}`,
    `SOURCES="\${SNAPFAAS_BAKE_SOURCES:-${BAKE_SOURCES_REMOTE_PATH}}"`,
    "# Kept between runs on this builder: a retry reuses downloads and checkouts.",
    `CACHE="\${SNAPFAAS_BAKE_CACHE:-${BAKE_CACHE_DIR}}"`,
    'SRC="$CACHE/src"',
    'WORK="$CACHE/work"',
    'OUT="$CACHE/out"',
    'LOG="$CACHE/bake-$BASE_VERSION.log"',
    "",
    'mkdir -p "$CACHE"',
    "# The full log stays on the builder; the Command's output (kept in the Pulumi state) is the summary.",
    'exec 3>&1 >>"$LOG" 2>&1',
    'say() { echo "bake: $*" >&3; echo "bake: $*"; }',
    'fail() { say "FAILED: $* (full log: $LOG on the builder)"; exit 1; }',
    "trap 'fail \"line $LINENO exited $?\"' ERR",
    's3() { aws ${SNAPFAAS_S3_ENDPOINT:+--endpoint-url "$SNAPFAAS_S3_ENDPOINT"} s3 "$@"; }',
    "stop_builder() {",
    '  if [ -n "${SNAPFAAS_BAKE_REHEARSAL:-}" ]; then',
    '    say "rehearsal: the builder would stop now (shutdown -h +1)"',
    "  else",
    "    # A minute's delay lets this SSH session end cleanly; the next base version replaces the builder.",
    '    say "stopping the builder"',
    "    shutdown -h +1",
    "  fi",
    "}",
    'say "base $BASE_VERSION: $GUEST guest, $VCPUS vCPU, $MEMORY_MIB MiB, hosts on $HOST_AMI; log in $LOG"',
    "",
    "# Same version, same base: nothing to rebuild when its manifest is already uploaded.",
    'if s3 ls "s3://$BUCKET/${PREFIX}manifest.json" >/dev/null 2>&1; then',
    '  say "base $BASE_VERSION is already uploaded, nothing to bake"',
    "  stop_builder",
    "  exit 0",
    "fi",
    "",
    'if [ -z "${SNAPFAAS_BAKE_REHEARSAL:-}" ]; then',
    "  export DEBIAN_FRONTEND=noninteractive",
    "  apt-get update -q",
    `  apt-get install -y -q --no-install-recommends ${packages.join(" ")}`,
    "  # Ubuntu 24.04 has no awscli package; Canonical's AMIs have snapd.",
    "  command -v aws >/dev/null || snap install aws-cli --classic",
    "fi",
    "",
    "# Fresh sources every run: exactly the tarball the stack sent.",
    'rm -rf "$SRC"',
    'mkdir -p "$SRC"',
    'tar -xzf "$SOURCES" -C "$SRC"',
    "",
    "# The builder's own node, checked against the release's SHASUMS256.txt, kept for retries.",
    `NODE_BIN="$CACHE/builder-node/${nodeDir}/bin"`,
    'if [ ! -x "$NODE_BIN/node" ]; then',
    '  dist="${SNAPFAAS_BUILDER_NODE_DIST:-https://nodejs.org/dist}/v' + BUILDER_NODE.version + '"',
    '  mkdir -p "$CACHE/builder-node"',
    `  curl -fsSL -o "$CACHE/builder-node/${nodeDir}.tar.xz" "$dist/${nodeDir}.tar.xz"`,
    '  curl -fsSL -o "$CACHE/builder-node/SHASUMS256.txt" "$dist/SHASUMS256.txt"',
    `  (cd "$CACHE/builder-node" && grep -F "  ${nodeDir}.tar.xz" SHASUMS256.txt | sha256sum --check --strict)`,
    `  tar -xJf "$CACHE/builder-node/${nodeDir}.tar.xz" -C "$CACHE/builder-node"`,
    "fi",
    'export PATH="$NODE_BIN:$PATH"',
    'cd "$SRC"',
    'if [ -n "${SNAPFAAS_BAKE_NODE_MODULES:-}" ]; then',
    '  ln -s "$SNAPFAAS_BAKE_NODE_MODULES" node_modules',
    "else",
    "  npm ci --no-audit --no-fund",
    "fi",
    "",
    'say "baking (node $(node --version))"',
    'npm run --silent bake -- --driver firecracker --guest "$GUEST" --out "$OUT" --work "$WORK" \\',
    '  --vcpus "$VCPUS" --memory-mib "$MEMORY_MIB" --host-ami "$HOST_AMI" \\',
    '  ${SNAPFAAS_BAKE_REHEARSAL:+--rehearse} >"$CACHE/bake-$BASE_VERSION.out"',
    'cat "$CACHE/bake-$BASE_VERSION.out"',
    "# The bake prints its base folder last: it must be the version the stack gave the hosts.",
    'made="$(tail -n 1 "$CACHE/bake-$BASE_VERSION.out")"',
    '[ "$made" = "$OUT/$BASE_VERSION" ] || fail "the bake made ${made:-nothing}, the stack expects $OUT/$BASE_VERSION (sources differ from the stack\'s)"',
    '[ -f "$made/manifest.json" ] || fail "no manifest.json in $made"',
    "",
    "# Artifacts first, manifest last: a host that sees the manifest sees a complete set. Re-running",
    "# overwrites the same keys with the same bytes.",
    's3 cp --only-show-errors --recursive --exclude manifest.json "$made/" "s3://$BUCKET/$PREFIX"',
    's3 cp --only-show-errors "$made/manifest.json" "s3://$BUCKET/${PREFIX}manifest.json"',
    'say "uploaded base $BASE_VERSION to s3://$BUCKET/$PREFIX"',
    "stop_builder",
    "",
  ].join("\n");
}

/**
 * The Command's create: the script written to a file and run under sudo. Not `bash -s` with the
 * script on stdin: apt-get and npm read stdin and would swallow the rest of the script.
 */
export function renderBakeCommand(script: string): string {
  if (script.includes("\nSNAPFAAS_BAKE\n")) throw new Error("the bake script contains its own heredoc end");
  return [
    "set -eu",
    'script="$(mktemp)"',
    "cat >\"$script\" <<'SNAPFAAS_BAKE'",
    `${script}SNAPFAAS_BAKE`,
    'sudo bash "$script" </dev/null',
    "",
  ].join("\n");
}
