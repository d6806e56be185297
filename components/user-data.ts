/**
 * Renders the boot script of a KVM host (Amazon Linux 2023: kernel 6.1, cgroup v2, AWS CLI preinstalled).
 * Pure: the same inputs give the same text, so a changed release or pin changes the launch template and
 * the group's instance refresh rolls the hosts.
 */

import {
  type FirecrackerDriverConfigInput,
  parseFirecrackerDriverConfig,
} from "../contracts/firecracker-driver-config.ts";
import { firecrackerReleaseUrls } from "../contracts/firecracker-release.ts";
import { BASE_VERSION_LABEL, baseImagePrefix, DEFAULT_BASES_DIR } from "../contracts/release-manifest.ts";
import { HOST_NODE } from "./host-node.ts";

export interface HostUserDataInput {
  readonly region: string;
  /** Firecracker release number without "v", e.g. "1.16.1". */
  readonly firecrackerVersion: string;
  /** Pinned SHA-256 of the release tarball; without it the published .sha256.txt is used. */
  readonly firecrackerTarballSha256?: string;
  /** SSM parameter holding the release manifest JSON. */
  readonly releaseParameterName: string;
  /** Changes with every release, so a new release means a new launch template version. */
  readonly releaseVersion: string;
  readonly bucketName: string;
  /** Key prefix of the function registry in the bucket (read by the agent's S3 registry backend). */
  readonly registryPrefix: string;
  readonly dataPort: number;
  readonly adminPort: number;
  readonly jailerUidStart: number;
  readonly jailerUidCount: number;
  readonly networkSlots: number;
  /** Address range the agent carves network slots from. */
  readonly slotCidr: string;
  readonly lifecycleHookName: string;
  /** The hook's heartbeat timeout: the agent gives up waiting for calls a little before it. */
  readonly drainTimeoutSeconds: number;
  readonly metricNamespace: string;
  /** Version of the SSM parameter that holds this release: the host reads exactly that version. */
  readonly releaseParameterVersion?: number;
  /** "vpc": the admin API listens on every interface (the security group admits the VPC only). */
  readonly adminAccess?: "vpc" | "none";
  /**
   * CIDRs of the proxies in front of the data port whose X-Forwarded-For names the client (the ALB's
   * subnets); none: the agent's peer is the client.
   */
  readonly trustedProxyCidrs?: readonly string[];
  /** Offer functions deployed with egress NAT out of the host's default route and the VPC resolver. */
  readonly functionEgress?: boolean;
}

/**
 * The root the boot script writes under. Empty on a host; a rehearsal sets SNAPFAAS_ROOT in the
 * environment to run the script into a scratch folder. Every path the script writes, and every path
 * it hands the agent, starts with it.
 */
export const ROOT_VAR = "SNAPFAAS_ROOT";
/** A shell variable's expansion, as written in the script. */
const shellVar = (name: string) => `\${${name}}`;
const R = shellVar(ROOT_VAR);

/** Where the boot script writes what the agent and systemd read (without the root prefix). */
export const HOST_PATHS = {
  log: "/var/log/snapfaas-bootstrap.log",
  sysctl: "/etc/sysctl.d/90-snapfaas.conf",
  firecracker: "/usr/local/bin/firecracker",
  jailer: "/usr/local/bin/jailer",
  jailRoot: "/srv/jailer",
  stateRoot: "/var/lib/snapfaas",
  etc: "/etc/snapfaas",
  release: "/etc/snapfaas/release.json",
  firecrackerConfig: "/etc/snapfaas/firecracker.json",
  agentEnv: "/etc/snapfaas/agent.env",
  opt: "/opt/snapfaas",
  agentBundle: "/opt/snapfaas/host-agent.mjs",
  unit: "/etc/systemd/system/snapfaas-agent.service",
} as const;

export const AGENT_UNIT = "snapfaas-agent.service";

/** How long the agent waits for calls in flight on scale-in: the hook's timeout less a margin to complete it. */
export function agentDrainTimeoutMs(drainTimeoutSeconds: number): number {
  return drainTimeoutSeconds * 1000 - Math.min(30_000, drainTimeoutSeconds * 500);
}

const SAFE_VALUE = /^[A-Za-z0-9._:/@+=,-]*$/;

/** Values land in shell assignments and an EnvironmentFile; refusing odd characters keeps both unquoted-safe. */
function safe(name: string, value: string | number): string {
  const text = String(value);
  if (!SAFE_VALUE.test(text))
    throw new Error(`user data value ${name} has characters outside [A-Za-z0-9._:/@+=,-]`);
  return text;
}

/** Where the boot script puts base images, one folder per version: where the agent looks by default. */
export const BASES_DIR = DEFAULT_BASES_DIR;

/**
 * Network slots the agent builds before it serves; the others are built when a VM first needs one.
 * Building every slot up front (256 on prod, a dozen `ip`/`nft` calls each) only delays the first
 * healthy answer.
 */
export const PREBUILT_SLOTS = 16;

/** What the boot script knows only on the host: its root, and the binaries' hashes from SHA256SUMS. */
export interface DriverConfigHostValues {
  readonly root: string;
  readonly firecrackerSha256: string;
  readonly jailerSha256: string;
  /** The interface of the host's default route (found at boot), for functions' egress. */
  readonly uplink: string;
}

/** The VPC's resolver, answered at this link-local address on every instance. */
const VPC_RESOLVER = "169.254.169.253";

/**
 * The Firecracker driver's config file (contracts/firecracker-driver-config.ts, the schema the agent
 * parses) for this host: the binaries step 4 installs and their sha256 for the preflight, the jail root
 * step 5 makes, the uid range, and one network slot per VM carved from the slot range. The release's VM
 * shape and rate limits come from its manifest.
 */
export function firecrackerDriverConfig(
  input: HostUserDataInput,
  host: DriverConfigHostValues,
): FirecrackerDriverConfigInput {
  const match = /^(\d{1,3}\.\d{1,3})\.0\.0\/16$/.exec(input.slotCidr);
  if (!match)
    throw new Error(`slotCidr must be a /16 like 10.200.0.0/16 (one /30 per VM slot): ${input.slotCidr}`);
  return {
    firecrackerPath: `${host.root}${HOST_PATHS.firecracker}`,
    jailerPath: `${host.root}${HOST_PATHS.jailer}`,
    chrootBase: `${host.root}${HOST_PATHS.jailRoot}`,
    idRange: { first: input.jailerUidStart, count: input.jailerUidCount },
    network: {
      hostSubnetBase: `${match[1]}.0.0`,
      poolSize: Math.min(input.networkSlots, PREBUILT_SLOTS),
      maxSlots: input.networkSlots,
      egress: input.functionEgress
        ? { enabled: true, uplink: host.uplink, dnsResolver: VPC_RESOLVER }
        : { enabled: false },
    },
    doctor: {
      firecrackerSha256: host.firecrackerSha256,
      jailerSha256: host.jailerSha256,
      snapshotDir: `${host.root}${HOST_PATHS.stateRoot}`,
    },
  };
}

/**
 * The driver config as the boot script's unquoted heredoc: the root and the hashes are shell variables
 * there. The same object with sample host values goes through the agent's parser first, so a config
 * the agent would refuse fails here, at render time.
 */
function firecrackerDriverConfigHeredoc(input: HostUserDataInput): string {
  parseFirecrackerDriverConfig(
    firecrackerDriverConfig(input, {
      root: "",
      firecrackerSha256: "0".repeat(64),
      jailerSha256: "0".repeat(64),
      uplink: "ens5",
    }),
  );
  const text = JSON.stringify(
    firecrackerDriverConfig(input, {
      root: R,
      firecrackerSha256: shellVar("firecracker_sha256"),
      jailerSha256: shellVar("jailer_sha256"),
      uplink: shellVar("uplink"),
    }),
    null,
    2,
  );
  if (/[`\\]|\$\(/.test(text)) throw new Error("the driver config would not survive an unquoted heredoc");
  return text;
}

export function renderHostUserData(input: HostUserDataInput): string {
  const urls = firecrackerReleaseUrls(safe("firecrackerVersion", input.firecrackerVersion));
  const pinned = input.firecrackerTarballSha256;
  if (pinned !== undefined && !/^[0-9a-f]{64}$/.test(pinned)) {
    throw new Error("firecrackerTarballSha256 must be 64 lowercase hex digits");
  }
  const lastUid = input.jailerUidStart + input.jailerUidCount - 1;
  const tarballCheck =
    pinned === undefined
      ? [
          "# No pinned tarball hash: check against the checksum file published with the release.",
          `curl -fsSL --retry 5 -o "$work/fc.tgz.sha256.txt" "${urls.checksum}"`,
          'expected_sha256=$(cut -d " " -f 1 "$work/fc.tgz.sha256.txt")',
        ]
      : [`expected_sha256=${pinned}`];

  const p = (path: string) => `${R}${path}`;
  const releaseRead =
    input.releaseParameterVersion === undefined
      ? '"$RELEASE_PARAMETER"'
      : `"$RELEASE_PARAMETER:${safe("releaseParameterVersion", input.releaseParameterVersion)}"`;
  const fcName = "firecracker-v$FIRECRACKER_VERSION-x86_64";
  const jailerName = "jailer-v$FIRECRACKER_VERSION-x86_64";
  const releaseDir = `$work/${urls.dir}`;

  const lines = [
    "#!/bin/bash",
    "# snapfaas KVM host bootstrap (rendered by components/user-data.ts).",
    "set -euo pipefail",
    `# Every path written below starts with $${ROOT_VAR}: empty on a host, a scratch folder in a rehearsal.`,
    `${ROOT_VAR}="\${${ROOT_VAR}:-}"`,
    `mkdir -p "${p("/var/log")}"`,
    `exec > >(tee -a "${p(HOST_PATHS.log)}") 2>&1`,
    "",
    `export AWS_DEFAULT_REGION=${safe("region", input.region)}`,
    `FIRECRACKER_VERSION=${safe("firecrackerVersion", input.firecrackerVersion)}`,
    `RELEASE_PARAMETER=${safe("releaseParameterName", input.releaseParameterName)}`,
    `RELEASE_VERSION=${safe("releaseVersion", input.releaseVersion)}`,
    `ARTIFACT_BUCKET=${safe("bucketName", input.bucketName)}`,
    "",
    'fail() { echo "snapfaas bootstrap: $*" >&2; exit 1; }',
    "",
    "# 1. KVM: the whole platform depends on it (metal, or nested virtualization on c8i/m8i/r8i).",
    "modprobe kvm_intel 2>/dev/null || modprobe kvm_amd 2>/dev/null || true",
    '[ -c /dev/kvm ] || fail "/dev/kvm is missing: the instance type exposes no KVM"',
    "",
    "# 2. cgroup v2: the jailer writes cpu.max, memory.max and io.max there.",
    '[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || fail "cgroup v2 is not mounted at /sys/fs/cgroup"',
    "",
    "# 3. Kernel settings for the per-VM network slots (netns + tap + veth + NAT).",
    "modprobe tun",
    "modprobe veth",
    `mkdir -p "${p("/etc/sysctl.d")}"`,
    `cat > "${p(HOST_PATHS.sysctl)}" <<'SYSCTL'`,
    "net.ipv4.ip_forward = 1",
    "net.ipv4.conf.all.rp_filter = 0",
    "net.ipv4.neigh.default.gc_thresh3 = 16384",
    "SYSCTL",
    "sysctl --system >/dev/null",
    `# Node ${HOST_NODE.major} LTS for the agent (components/host-node.ts).`,
    `dnf install -y -q nftables jq ${HOST_NODE.dnfPackage}`,
    "",
    "# 4. Firecracker and jailer, pinned, verified before anything is installed.",
    "work=$(mktemp -d)",
    "trap 'rm -rf \"$work\"' EXIT",
    `curl -fsSL --retry 5 -o "$work/fc.tgz" "${urls.tarball}"`,
    ...tarballCheck,
    'echo "$expected_sha256  $work/fc.tgz" | sha256sum -c - || fail "Firecracker tarball checksum mismatch"',
    'tar -xzf "$work/fc.tgz" -C "$work"',
    `(cd "${releaseDir}" && sha256sum -c --ignore-missing SHA256SUMS) || fail "Firecracker binaries do not match SHA256SUMS"`,
    // --ignore-missing passes a binary SHA256SUMS does not list: take each hash from the file and require it.
    'sums_entry() { awk -v f="$2" \'$2 == f || $2 == "*" f { print $1 }\' "$1/SHA256SUMS"; }',
    `firecracker_sha256=$(sums_entry "${releaseDir}" "${fcName}")`,
    `jailer_sha256=$(sums_entry "${releaseDir}" "${jailerName}")`,
    `[[ "$firecracker_sha256" =~ ^[0-9a-f]{64}$ ]] || fail "SHA256SUMS lists no ${fcName}"`,
    `[[ "$jailer_sha256" =~ ^[0-9a-f]{64}$ ]] || fail "SHA256SUMS lists no ${jailerName}"`,
    `mkdir -p "${p("/usr/local/bin")}"`,
    `install -m 0755 "${releaseDir}/${fcName}" "${p(HOST_PATHS.firecracker)}"`,
    `install -m 0755 "${releaseDir}/${jailerName}" "${p(HOST_PATHS.jailer)}"`,
    `"${p(HOST_PATHS.firecracker)}" --version | grep -q "v$FIRECRACKER_VERSION" || fail "installed Firecracker reports another version"`,
    "",
    "# 5. Jailed VMs run as unprivileged uids from a range no login account uses.",
    `JAILER_UID_START=${safe("jailerUidStart", input.jailerUidStart)}`,
    `JAILER_UID_END=${safe("jailerUidEnd", lastUid)}`,
    'if getent passwd | awk -F: -v lo="$JAILER_UID_START" -v hi="$JAILER_UID_END" \'$3 >= lo && $3 <= hi { found = 1 } END { exit !found }\'; then',
    '  fail "an existing account uses a uid in the jailer range $JAILER_UID_START-$JAILER_UID_END"',
    "fi",
    "id snapfaas >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin snapfaas",
    `install -d -m 0755 "${p(HOST_PATHS.jailRoot)}" "${p(HOST_PATHS.stateRoot)}" "${p(HOST_PATHS.etc)}" "${p(HOST_PATHS.opt)}"`,
    "",
    "# 6. The release: manifest from SSM, agent bundle from S3, checked against the manifest's hash.",
    input.releaseParameterVersion === undefined
      ? "# The parameter's current value (no version pinned)."
      : "# The parameter's version written with this launch template, not whatever SSM holds now.",
    `aws ssm get-parameter --name ${releaseRead} --query Parameter.Value --output text > "${p(HOST_PATHS.release)}"`,
    `manifest_version=$(jq -er .releaseVersion "${p(HOST_PATHS.release)}") || fail "the release manifest has no releaseVersion"`,
    input.releaseParameterVersion === undefined
      ? '[ "$manifest_version" = "$RELEASE_VERSION" ] || echo "note: SSM holds release $manifest_version, launch template expects $RELEASE_VERSION"'
      : '[ "$manifest_version" = "$RELEASE_VERSION" ] || fail "SSM parameter version holds release $manifest_version, the launch template expects $RELEASE_VERSION"',
    `agent_key=$(jq -er .agent.key "${p(HOST_PATHS.release)}") || fail "the release manifest has no agent.key"`,
    `agent_sha256=$(jq -er .agent.sha256 "${p(HOST_PATHS.release)}") || fail "the release manifest has no agent.sha256"`,
    `aws s3 cp --only-show-errors "s3://$ARTIFACT_BUCKET/$agent_key" "${p(HOST_PATHS.agentBundle)}"`,
    `echo "$agent_sha256  ${p(HOST_PATHS.agentBundle)}" | sha256sum -c - || fail "agent bundle checksum mismatch"`,
    "",
    "# The release's base image (snapshot, kernel, runtime), where the agent looks for it: <bases>/<version>.",
    "# The agent checks every file against the base's manifest.json before it restores anything.",
    `base_version=$(jq -er .baseImageVersion "${p(HOST_PATHS.release)}") || fail "the release manifest has no baseImageVersion"`,
    // The manifest schema's rule (contracts/release-manifest.ts): one path segment, not . or ..
    `[[ "$base_version" =~ ${BASE_VERSION_LABEL.source} ]] || fail "the release names no usable base image version: $base_version"`,
    // The bake uploads a version under this prefix: one rule for both (contracts/release-manifest.ts).
    `base_prefix="${baseImagePrefix("$base_version")}"`,
    `bases_dir=${R}${BASES_DIR}`,
    'base_dir="$bases_dir/$base_version"',
    'aws s3 cp --only-show-errors --recursive "s3://$ARTIFACT_BUCKET/$base_prefix" "$base_dir/"',
    '[ -f "$base_dir/manifest.json" ] || fail "base image $base_version is incomplete: no manifest.json under s3://$ARTIFACT_BUCKET/$base_prefix"',
    "",
    ...(input.functionEgress
      ? [
          "# Functions with egress leave by the host's default route (NAT), DNS to the VPC resolver.",
          "uplink=$(ip -o -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == \"dev\") { print $(i + 1); exit }}')",
          '[ -n "$uplink" ] || fail "no IPv4 default route: functions\' egress has no way out (or set network.functionEgress false)"',
        ]
      : []),
    "# The Firecracker driver: binaries and their pinned hashes, jails, the uid range and the network slots.",
    `cat > "${p(HOST_PATHS.firecrackerConfig)}" <<JSON`,
    firecrackerDriverConfigHeredoc(input),
    "JSON",
    "",
    "# 7. Agent settings and the systemd unit.",
    `cat > "${p(HOST_PATHS.agentEnv)}" <<ENV`,
    "FAAS_DRIVER=firecracker",
    // Pool, VM and limit settings of the release; the variables below win over it.
    `FAAS_RELEASE_MANIFEST=${p(HOST_PATHS.release)}`,
    "FAAS_BASES_DIR=$bases_dir",
    "FAAS_BASE_DIR=$base_dir",
    `FAAS_STATE_DIR=${p(HOST_PATHS.stateRoot)}/state`,
    `FAAS_FIRECRACKER_CONFIG=${p(HOST_PATHS.firecrackerConfig)}`,
    "FAAS_REGISTRY=s3",
    "FAAS_REGISTRY_BUCKET=$ARTIFACT_BUCKET",
    `FAAS_REGISTRY_PREFIX=${safe("registryPrefix", input.registryPrefix)}`,
    // The data plane faces the load balancer. The admin API stays on loopback unless the stack lets the
    // VPC reach it (network.adminAccess "vpc": the host security group admits the admin port from the VPC).
    "HOST=0.0.0.0",
    ...(input.adminAccess === "vpc" ? ["ADMIN_HOST=0.0.0.0"] : []),
    `PORT=${safe("dataPort", input.dataPort)}`,
    ...(input.trustedProxyCidrs && input.trustedProxyCidrs.length > 0
      ? [`FAAS_TRUSTED_PROXIES=${safe("trustedProxyCidrs", input.trustedProxyCidrs.join(","))}`]
      : []),
    `ADMIN_PORT=${safe("adminPort", input.adminPort)}`,
    `FAAS_LIFECYCLE_HOOK=${safe("lifecycleHookName", input.lifecycleHookName)}`,
    `FAAS_DRAIN_TIMEOUT_MS=${safe("drainTimeoutSeconds", agentDrainTimeoutMs(input.drainTimeoutSeconds))}`,
    `FAAS_METRIC_NAMESPACE=${safe("metricNamespace", input.metricNamespace)}`,
    "AWS_REGION=$AWS_DEFAULT_REGION",
    "ENV",
    "",
    `mkdir -p "${p("/etc/systemd/system")}"`,
    `cat > "${p(HOST_PATHS.unit)}" <<UNIT`,
    "[Unit]",
    "Description=snapfaas host agent",
    "After=network-online.target",
    "Wants=network-online.target",
    "",
    "[Service]",
    `EnvironmentFile=${p(HOST_PATHS.agentEnv)}`,
    `ExecStart=${HOST_NODE.binary} ${p(HOST_PATHS.agentBundle)}`,
    "Restart=always",
    "RestartSec=2",
    "LimitNOFILE=1048576",
    "# The agent drains on SIGTERM; give running calls time to finish.",
    "TimeoutStopSec=120",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "UNIT",
    "systemctl daemon-reload",
    `systemctl enable --now ${AGENT_UNIT}`,
    'echo "snapfaas bootstrap: agent started for release $RELEASE_VERSION"',
    "",
  ];
  return lines.join("\n");
}
