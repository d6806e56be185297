/**
 * Renders the boot script of a KVM host (Amazon Linux 2023: kernel 6.1, cgroup v2, AWS CLI preinstalled).
 * Pure: the same inputs give the same text, so a changed release or pin changes the launch template and
 * the group's instance refresh rolls the hosts.
 */

import { DEFAULT_BASES_DIR } from "../host-agent/config.ts";
import { baseImagePrefix } from "./release-manifest.ts";

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
}

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

export function firecrackerReleaseUrls(version: string): { tarball: string; checksum: string; dir: string } {
  const base = `https://github.com/firecracker-microvm/firecracker/releases/download/v${version}`;
  return {
    tarball: `${base}/firecracker-v${version}-x86_64.tgz`,
    checksum: `${base}/firecracker-v${version}-x86_64.tgz.sha256.txt`,
    dir: `release-v${version}-x86_64`,
  };
}

/** Where the boot script puts base images, one folder per version: where the agent looks by default. */
export const BASES_DIR = DEFAULT_BASES_DIR;

/**
 * The Firecracker driver's config file (host-agent/sandbox/firecracker/config.ts) for this host: the
 * binaries step 4 installs, the jail root step 5 makes, the uid range, and one network slot per VM
 * carved from the slot range. The release's VM shape and rate limits come from its manifest.
 */
export function firecrackerDriverConfigJson(input: HostUserDataInput): string {
  const match = /^(\d{1,3}\.\d{1,3})\.0\.0\/16$/.exec(input.slotCidr);
  if (!match)
    throw new Error(`slotCidr must be a /16 like 10.200.0.0/16 (one /30 per VM slot): ${input.slotCidr}`);
  const config = {
    firecrackerPath: "/usr/local/bin/firecracker",
    jailerPath: "/usr/local/bin/jailer",
    chrootBase: "/srv/jailer",
    idRange: { first: input.jailerUidStart, count: input.jailerUidCount },
    network: {
      hostSubnetBase: `${match[1]}.0.0`,
      poolSize: input.networkSlots,
      maxSlots: input.networkSlots,
    },
  };
  return JSON.stringify(config, null, 2);
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

  const lines = [
    "#!/bin/bash",
    "# snapfaas KVM host bootstrap (rendered by components/user-data.ts).",
    "set -euo pipefail",
    "exec > >(tee -a /var/log/snapfaas-bootstrap.log) 2>&1",
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
    "cat > /etc/sysctl.d/90-snapfaas.conf <<'SYSCTL'",
    "net.ipv4.ip_forward = 1",
    "net.ipv4.conf.all.rp_filter = 0",
    "net.ipv4.neigh.default.gc_thresh3 = 16384",
    "SYSCTL",
    "sysctl --system >/dev/null",
    "dnf install -y -q nftables jq nodejs20",
    "",
    "# 4. Firecracker and jailer, pinned, verified before anything is installed.",
    "work=$(mktemp -d)",
    "trap 'rm -rf \"$work\"' EXIT",
    `curl -fsSL --retry 5 -o "$work/fc.tgz" "${urls.tarball}"`,
    ...tarballCheck,
    'echo "$expected_sha256  $work/fc.tgz" | sha256sum -c - || fail "Firecracker tarball checksum mismatch"',
    'tar -xzf "$work/fc.tgz" -C "$work"',
    `(cd "$work/${urls.dir}" && sha256sum -c --ignore-missing SHA256SUMS) || fail "Firecracker binaries do not match SHA256SUMS"`,
    `install -m 0755 "$work/${urls.dir}/firecracker-v$FIRECRACKER_VERSION-x86_64" /usr/local/bin/firecracker`,
    `install -m 0755 "$work/${urls.dir}/jailer-v$FIRECRACKER_VERSION-x86_64" /usr/local/bin/jailer`,
    '/usr/local/bin/firecracker --version | grep -q "v$FIRECRACKER_VERSION" || fail "installed Firecracker reports another version"',
    "",
    "# 5. Jailed VMs run as unprivileged uids from a range no login account uses.",
    `JAILER_UID_START=${safe("jailerUidStart", input.jailerUidStart)}`,
    `JAILER_UID_END=${safe("jailerUidEnd", lastUid)}`,
    'if getent passwd | awk -F: -v lo="$JAILER_UID_START" -v hi="$JAILER_UID_END" \'$3 >= lo && $3 <= hi { found = 1 } END { exit !found }\'; then',
    '  fail "an existing account uses a uid in the jailer range $JAILER_UID_START-$JAILER_UID_END"',
    "fi",
    "id snapfaas >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin snapfaas",
    "install -d -m 0755 /srv/jailer /var/lib/snapfaas /etc/snapfaas /opt/snapfaas",
    "",
    "# 6. The release: manifest from SSM, agent bundle from S3, checked against the manifest's hash.",
    'aws ssm get-parameter --name "$RELEASE_PARAMETER" --query Parameter.Value --output text > /etc/snapfaas/release.json',
    "manifest_version=$(jq -r .releaseVersion /etc/snapfaas/release.json)",
    '[ "$manifest_version" = "$RELEASE_VERSION" ] || echo "note: SSM holds release $manifest_version, launch template expects $RELEASE_VERSION"',
    "agent_key=$(jq -r .agent.key /etc/snapfaas/release.json)",
    "agent_sha256=$(jq -r .agent.sha256 /etc/snapfaas/release.json)",
    'aws s3 cp --only-show-errors "s3://$ARTIFACT_BUCKET/$agent_key" /opt/snapfaas/host-agent.mjs',
    'echo "$agent_sha256  /opt/snapfaas/host-agent.mjs" | sha256sum -c - || fail "agent bundle checksum mismatch"',
    "",
    "# The release's base image (snapshot, kernel, runtime), where the agent looks for it: <bases>/<version>.",
    "# The agent checks every file against the base's manifest.json before it restores anything.",
    "base_version=$(jq -r .baseImageVersion /etc/snapfaas/release.json)",
    // The same rule as the agent's (host-agent/release/host-manifest.ts): one path segment, not . or ..
    `[[ "$base_version" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || fail "the release names no usable base image version: $base_version"`,
    // The bake uploads a version under this prefix: one rule for both (release-manifest.ts).
    `base_prefix="${baseImagePrefix("$base_version")}"`,
    `base_dir=${BASES_DIR}/$base_version`,
    'aws s3 cp --only-show-errors --recursive "s3://$ARTIFACT_BUCKET/$base_prefix" "$base_dir/"',
    '[ -f "$base_dir/manifest.json" ] || fail "base image $base_version is incomplete: no manifest.json under s3://$ARTIFACT_BUCKET/$base_prefix"',
    "",
    "# The Firecracker driver: binaries, jails, the uid range and the network slots of this host.",
    "cat > /etc/snapfaas/firecracker.json <<'JSON'",
    firecrackerDriverConfigJson(input),
    "JSON",
    "",
    "# 7. Agent settings and the systemd unit.",
    "cat > /etc/snapfaas/agent.env <<ENV",
    "FAAS_DRIVER=firecracker",
    // Pool, VM and limit settings of the release; the variables below win over it.
    "FAAS_RELEASE_MANIFEST=/etc/snapfaas/release.json",
    `FAAS_BASES_DIR=${BASES_DIR}`,
    "FAAS_BASE_DIR=$base_dir",
    "FAAS_STATE_DIR=/var/lib/snapfaas/state",
    "FAAS_FIRECRACKER_CONFIG=/etc/snapfaas/firecracker.json",
    "FAAS_REGISTRY=s3",
    "FAAS_REGISTRY_BUCKET=$ARTIFACT_BUCKET",
    `FAAS_REGISTRY_PREFIX=${safe("registryPrefix", input.registryPrefix)}`,
    // The data plane faces the load balancer; the admin API stays on loopback (FaasFunction writes to S3).
    "HOST=0.0.0.0",
    `PORT=${safe("dataPort", input.dataPort)}`,
    `ADMIN_PORT=${safe("adminPort", input.adminPort)}`,
    `FAAS_LIFECYCLE_HOOK=${safe("lifecycleHookName", input.lifecycleHookName)}`,
    `FAAS_DRAIN_TIMEOUT_MS=${safe("drainTimeoutSeconds", agentDrainTimeoutMs(input.drainTimeoutSeconds))}`,
    `FAAS_METRIC_NAMESPACE=${safe("metricNamespace", input.metricNamespace)}`,
    "AWS_REGION=$AWS_DEFAULT_REGION",
    "ENV",
    "",
    "cat > /etc/systemd/system/snapfaas-agent.service <<'UNIT'",
    "[Unit]",
    "Description=snapfaas host agent",
    "After=network-online.target",
    "Wants=network-online.target",
    "",
    "[Service]",
    "EnvironmentFile=/etc/snapfaas/agent.env",
    "ExecStart=/usr/bin/node-20 /opt/snapfaas/host-agent.mjs",
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
    "systemctl enable --now snapfaas-agent.service",
    'echo "snapfaas bootstrap: agent started for release $RELEASE_VERSION"',
    "",
  ];
  return lines.join("\n");
}
