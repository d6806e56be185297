import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type HostUserDataInput, renderHostUserData } from "../../components/user-data.ts";

const input: HostUserDataInput = {
  region: "us-east-1",
  firecrackerVersion: "1.16.1",
  releaseParameterName: "/snapfaas/dev/release",
  releaseVersion: "0123456789abcdef",
  bucketName: "snapfaas-dev-artifacts",
  registryPrefix: "functions/",
  dataPort: 8080,
  adminPort: 8081,
  jailerUidStart: 200000,
  jailerUidCount: 1000,
  networkSlots: 64,
  slotCidr: "10.200.0.0/16",
  lifecycleHookName: "dev-fleet-drain",
  drainTimeoutSeconds: 300,
  metricNamespace: "SnapFaaS",
};

const pinned = "d".repeat(64);
/** How the script writes its root variable and the hashes it reads from SHA256SUMS. */
const R = "$" + "{SNAPFAAS_ROOT}";
const FC_SHA = "$" + "{firecracker_sha256}";

describe("renderHostUserData", () => {
  it("downloads the pinned Firecracker release and verifies the pinned tarball hash", () => {
    const script = renderHostUserData({ ...input, firecrackerTarballSha256: pinned });
    assert.ok(script.startsWith("#!/bin/bash\n"));
    assert.ok(
      script.includes(
        "https://github.com/firecracker-microvm/firecracker/releases/download/v1.16.1/firecracker-v1.16.1-x86_64.tgz",
      ),
    );
    assert.ok(script.includes(`expected_sha256=${pinned}\n`));
    assert.ok(script.includes('echo "$expected_sha256  $work/fc.tgz" | sha256sum -c -'));
    assert.ok(!script.includes(".sha256.txt"), "a pinned hash must not be replaced by the published one");
    assert.ok(
      script.includes('(cd "$work/release-v1.16.1-x86_64" && sha256sum -c --ignore-missing SHA256SUMS)'),
    );
    assert.ok(script.includes("/usr/local/bin/jailer"));
  });

  it("falls back to the release's published checksum file when no hash is pinned", () => {
    const script = renderHostUserData(input);
    assert.ok(script.includes("firecracker-v1.16.1-x86_64.tgz.sha256.txt"));
    assert.ok(script.includes("sha256sum -c -"));
  });

  it("prepares KVM, cgroup v2, ip forwarding, the jailer uid range and network slots", () => {
    const script = renderHostUserData(input);
    assert.ok(script.includes("[ -c /dev/kvm ] || fail"));
    assert.ok(script.includes('[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]'));
    assert.ok(script.includes("net.ipv4.ip_forward = 1"));
    assert.ok(script.includes("JAILER_UID_START=200000\nJAILER_UID_END=200999\n"));
    assert.ok(script.includes('"idRange": {\n    "first": 200000,\n    "count": 1000\n  }'));
    assert.ok(script.includes(`"firecrackerSha256": "${FC_SHA}"`), "the preflight's pins");
    assert.ok(script.includes('"hostSubnetBase": "10.200.0.0",\n    "poolSize": 16,\n    "maxSlots": 64'));
  });

  it("refuses a slot range that is not a /16 (the driver carves one /30 per VM from it)", () => {
    assert.throws(
      () => renderHostUserData({ ...input, slotCidr: "10.200.0.0/24" }),
      /slotCidr must be a \/16/,
    );
  });

  it("fetches the release from SSM and S3, checks the agent hash and runs it under systemd", () => {
    const script = renderHostUserData(input);
    assert.ok(script.includes("RELEASE_PARAMETER=/snapfaas/dev/release\n"));
    assert.ok(script.includes('aws ssm get-parameter --name "$RELEASE_PARAMETER"'));
    assert.ok(script.includes(`echo "$agent_sha256  ${R}/opt/snapfaas/host-agent.mjs" | sha256sum -c -`));
    assert.ok(script.includes("dnf install -y -q nftables jq nodejs24\n"), "Node 24 LTS from AL2023");
    assert.ok(script.includes(`ExecStart=/usr/bin/node-24 ${R}/opt/snapfaas/host-agent.mjs`));
    assert.ok(script.includes("systemctl enable --now snapfaas-agent.service"));
    assert.ok(script.includes("PORT=8080\nADMIN_PORT=8081\n"));
  });

  it("reads the release parameter at the version the launch template was rendered for", () => {
    const script = renderHostUserData({ ...input, releaseParameterVersion: 12 });
    assert.ok(script.includes('aws ssm get-parameter --name "$RELEASE_PARAMETER:12" '));
    assert.match(script, /\|\| fail "SSM parameter version holds release/, "a mismatch stops the boot");
  });

  it("opens the admin API beyond loopback only for adminAccess vpc", () => {
    assert.ok(renderHostUserData({ ...input, adminAccess: "vpc" }).includes("\nADMIN_HOST=0.0.0.0\n"));
    assert.ok(!renderHostUserData({ ...input, adminAccess: "none" }).includes("ADMIN_HOST"));
    assert.ok(!renderHostUserData(input).includes("ADMIN_HOST"));
  });

  it("offers functions egress only with functionEgress: the uplink found at boot, the VPC resolver", () => {
    const off = renderHostUserData(input);
    assert.ok(off.includes('"egress": {\n      "enabled": false\n    }'), "off by default");
    assert.ok(!off.includes("route show default"));
    const on = renderHostUserData({ ...input, functionEgress: true });
    const uplink = "$" + "{uplink}";
    assert.ok(
      on.includes(
        `"egress": {\n      "enabled": true,\n      "uplink": "${uplink}",\n      "dnsResolver": "169.254.169.253"\n    }`,
      ),
    );
    // Found before the driver config is written, and the boot fails with one line without it.
    const found = on.indexOf("uplink=$(ip -o -4 route show default");
    assert.ok(found > 0 && found < on.indexOf('firecracker.json" <<JSON'));
    assert.match(
      on,
      /\[ -n "\$uplink" \] \|\| fail "no IPv4 default route: functions' egress has no way out/,
    );
    // What the awk finds, on a route line as `ip -o -4 route show default` prints it.
    const awk = /uplink=\$\(ip -o -4 route show default \| awk '([^']+)'\)/.exec(on)![1]!;
    const got = spawnSync("awk", [awk], {
      input: "default via 10.40.0.1 dev ens5 proto dhcp src 10.40.1.9 metric 512 \n",
    });
    assert.equal(got.stdout.toString(), "ens5\n");
  });

  it("writes nothing outside $SNAPFAAS_ROOT (the rehearsal's scratch root; empty on a host)", () => {
    const script = renderHostUserData(input);
    const writes = script
      .split("\n")
      .flatMap((line) => [
        ...line.matchAll(/(?:cat >|tee -a|install -m 0755 \S+|install -d -m 0755|mkdir -p|> ) *"([^"]+)"/g),
      ])
      .flatMap((m) => m[1]!.split('" "'));
    assert.ok(writes.length >= 8, `found the writes: ${writes.join(" ")}`);
    for (const target of writes) {
      assert.ok(
        target.startsWith(`${R}/`) || target.startsWith("$work") || target.startsWith("$base_dir"),
        `${target} is under the root`,
      );
    }
    assert.ok(script.includes(`bases_dir=${R}/var/lib/snapfaas/bases\nbase_dir="$bases_dir/`));
  });

  it("changes when the release changes, so the launch template rolls the fleet", () => {
    assert.notEqual(
      renderHostUserData(input),
      renderHostUserData({ ...input, releaseVersion: "fedcba9876543210" }),
    );
    assert.equal(renderHostUserData(input), renderHostUserData({ ...input }));
  });

  it("refuses values that could break out of the shell assignments", () => {
    assert.throws(
      () => renderHostUserData({ ...input, bucketName: "b; rm -rf /" }),
      /bucketName has characters/,
    );
    assert.throws(
      () => renderHostUserData({ ...input, firecrackerTarballSha256: "XYZ" }),
      /firecrackerTarballSha256 must be 64 lowercase hex/,
    );
  });

  it("is shellcheck-clean in both checksum modes, with and without function egress", function () {
    if (spawnSync("shellcheck", ["--version"]).status !== 0) {
      console.log("    (skipped: shellcheck is not installed)");
      this.skip();
    }
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-userdata-"));
    try {
      const files = [
        renderHostUserData(input),
        renderHostUserData({ ...input, firecrackerTarballSha256: pinned, functionEgress: true }),
      ].map((text, i) => {
        const file = join(dir, `user-data-${i}.sh`);
        writeFileSync(file, text);
        return file;
      });
      // execFileSync throws, failing the test, on any finding.
      execFileSync("shellcheck", ["-s", "bash", ...files], { stdio: "pipe" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
