/**
 * The seam between what the stack ships to an AWS host and what the agent reads there: the boot script's
 * agent.env and firecracker.json, and the release manifest in SSM, are fed to the agent's own parsers,
 * for every AWS stack file in stacks/. A variable the agent does not know, a setting it refuses, or a
 * file the boot script does not write fails here instead of on a host at boot.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import {
  type AwsStackConfig,
  isAwsStack,
  parseStackConfig,
  readStackFileConfig,
} from "../../components/config.ts";
import { fleetHostUserDataInput } from "../../components/kvm-host-fleet.ts";
import { buildReleaseManifest } from "../../components/release-manifest.ts";
import { BASES_DIR, ROOT_VAR, renderHostUserData } from "../../components/user-data.ts";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { releaseManifestSchema } from "../../contracts/release-manifest.ts";
import { withReleaseLimits } from "../../host-agent/agent.ts";
import { agentEnvSchema, loadAgentConfig } from "../../host-agent/config.ts";
import {
  firecrackerLimitsFromManifest,
  parseHostManifest,
  withManifestDefaults,
} from "../../host-agent/release/host-manifest.ts";
import { shippedAwsStacks } from "../helpers/aws-stacks.ts";

const STACKS_DIR = join(import.meta.dirname, "..", "..", "stacks");

/** The text between `cat > "${SNAPFAAS_ROOT}<file>" <<TAG` and the line `TAG`. */
function heredoc(script: string, file: string): string {
  const target = `"\${${ROOT_VAR}}${file}"`.replace(/[./${}]/g, "\\$&");
  const m = new RegExp(`cat > ${target} <<'?(\\w+)'?\\n([\\s\\S]*?)\\n\\1\\n`).exec(script);
  assert.ok(m, `the boot script writes ${file}`);
  return m[2]!;
}

/** What the boot script's shell variables hold on a host (empty root), for the unquoted heredocs. */
const SHELL = {
  [ROOT_VAR]: "",
  ARTIFACT_BUCKET: "snapfaas-prod-artifacts",
  AWS_DEFAULT_REGION: "us-east-1",
  JAILER_UID_START: "200000",
  bases_dir: BASES_DIR,
  firecracker_sha256: "f".repeat(64),
  jailer_sha256: "e".repeat(64),
};

function expand(text: string, baseDir: string): string {
  return text.replace(/\$\{?(\w+)\}?/g, (_, name: string) =>
    name === "base_dir" ? baseDir : (SHELL[name as keyof typeof SHELL] ?? `<unset ${name}>`),
  );
}

function envFile(text: string, baseDir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    assert.ok(m, `agent.env line is KEY=value: ${line}`);
    env[m[1]!] = expand(m[2]!, baseDir);
  }
  return env;
}

function hostFiles(config: AwsStackConfig, baseImageVersion: string) {
  const manifest = buildReleaseManifest({
    agentVersion: config.versions.agent,
    baseImageVersion,
    firecrackerVersion: config.versions.firecracker,
    agent: { key: "releases/host-agent/abc.mjs", sha256: "a".repeat(64) },
    guestRuntime: { key: "releases/guest-runtime/def.mjs", sha256: "b".repeat(64) },
    config: { pool: config.pool, vm: config.vm, limits: config.limits },
  });
  const script = renderHostUserData(
    fleetHostUserDataInput({
      region: "us-east-1",
      firecrackerVersion: config.versions.firecracker,
      releaseParameterName: "/snapfaas/prod/release",
      releaseParameterVersion: 7,
      releaseVersion: manifest.releaseVersion,
      bucketName: SHELL.ARTIFACT_BUCKET,
      registryPrefix: "functions/",
      maxVmsPerHost: config.pool.maxInstances,
      lifecycleHookName: "prod-fleet-drain",
      drainTimeoutSeconds: config.fleet.drainTimeoutSeconds,
      adminAccess: config.network.adminAccess,
    }),
  );
  const baseDir = `${BASES_DIR}/${baseImageVersion}`;
  return {
    manifest,
    script,
    env: envFile(heredoc(script, "/etc/snapfaas/agent.env"), baseDir),
    firecracker: JSON.parse(expand(heredoc(script, "/etc/snapfaas/firecracker.json"), baseDir)) as Record<
      string,
      unknown
    >,
  };
}

const stacks = shippedAwsStacks();

describe("what an AWS host hands the agent", () => {
  it("covers the AWS stacks", () => {
    assert.ok(stacks.length >= 2, `AWS stacks found: ${stacks.map((s) => s.file).join(", ")}`);
  });

  for (const { file, config } of stacks) {
    describe(file, () => {
      const { manifest, script, env, firecracker } = hostFiles(config, "4f3c2a1b0e9d8c7b");

      it("sets only variables the agent reads", () => {
        const known = new Set(Object.keys(agentEnvSchema.shape));
        for (const key of Object.keys(env)) assert.ok(known.has(key), `${key} is an agent variable`);
      });

      it("gives the agent a configuration it accepts, with the release's settings", () => {
        const hostManifest = parseHostManifest(JSON.parse(JSON.stringify(manifest)), "release.json");
        const agent = loadAgentConfig(withManifestDefaults(env, hostManifest, env.FAAS_BASES_DIR!));
        assert.equal(agent.driver, "firecracker");
        assert.equal(agent.baseDir, `${BASES_DIR}/4f3c2a1b0e9d8c7b`);
        assert.equal(agent.firecrackerConfig, "/etc/snapfaas/firecracker.json");
        assert.deepEqual(agent.registry, { kind: "s3", bucket: SHELL.ARTIFACT_BUCKET, prefix: "functions/" });
        assert.equal(agent.host, "0.0.0.0", "the data plane faces the load balancer");
        assert.equal(
          agent.adminHost,
          config.network.adminAccess === "vpc" ? "0.0.0.0" : "127.0.0.1",
          "the admin API leaves loopback only when the security group lets the VPC reach it",
        );
        assert.equal(agent.pool.genericMin, config.pool.minIdle);
        assert.equal(agent.pool.maxInstances, config.pool.maxInstances);
        assert.equal(agent.pool.maxStarting, config.pool.maxConcurrentRestores);
        assert.equal(agent.pool.memoryBudgetMiB, config.pool.memoryBudgetMiB);
        assert.equal(agent.pool.idleTtlMs, config.pool.idleTtlSeconds * 1000);
        assert.equal(agent.pool.callTimeoutMs, config.limits.callTimeoutMs);
        assert.equal(agent.limits.memoryMiB, config.vm.memoryMiB);
        assert.equal(agent.limits.cpuPercent, config.vm.cpuMaxPercent);
        assert.equal(agent.maxBodyBytes, config.limits.payloadLimitBytes);
        assert.equal(agent.release.file, undefined, "base changes come as new hosts, not as a release file");
        // The fleet duties: the metric the scaling policy follows, and the scale-in drain.
        assert.equal(agent.aws.region, "us-east-1");
        assert.equal(agent.aws.metrics?.namespace, "SnapFaaS");
        assert.equal(agent.aws.drain?.hookName, "prod-fleet-drain");
        assert.equal(
          agent.aws.drain?.timeoutMs,
          config.fleet.drainTimeoutSeconds * 1000 - 30_000,
          "the agent completes the hook before it times out",
        );
      });

      it("writes a Firecracker driver config the driver accepts, one uid and slot per VM", () => {
        const hostManifest = parseHostManifest(manifest, "release.json");
        const driver = parseFirecrackerDriverConfig(
          withReleaseLimits(firecracker, firecrackerLimitsFromManifest(hostManifest)),
        );
        assert.equal(driver.chrootBase, "/srv/jailer");
        assert.ok(
          script.includes(`install -d -m 0755 "\${${ROOT_VAR}}/srv/jailer" `),
          "the boot script makes the jail root",
        );
        assert.deepEqual(driver.doctor, {
          firecrackerSha256: SHELL.firecracker_sha256,
          jailerSha256: SHELL.jailer_sha256,
          snapshotDir: "/var/lib/snapfaas",
        });
        assert.deepEqual(driver.idRange, { first: 200000, count: config.pool.maxInstances });
        assert.equal(driver.network.maxSlots, config.pool.maxInstances);
        assert.equal(driver.network.hostSubnetBase, "10.200.0.0");
        assert.equal(driver.limits.memMiB, config.vm.memoryMiB);
        assert.equal(driver.limits.vcpus, config.vm.vcpus);
        assert.deepEqual(driver.limits.codeDisk, {
          bandwidth: { size: config.vm.diskBandwidthBytesPerSecond, refillTimeMs: 1000 },
          ops: { size: config.vm.diskOpsPerSecond, refillTimeMs: 1000 },
        });
        assert.deepEqual(driver.limits.networkTx, {
          bandwidth: { size: config.vm.netBandwidthBytesPerSecond, refillTimeMs: 1000 },
        });
      });

      it("downloads the release's base image to the folder the agent is told", () => {
        const prefixLine = /^base_prefix="(.*)"$/m.exec(script);
        assert.ok(prefixLine, "the script names the base image's prefix");
        assert.equal(
          prefixLine[1]!.replace("$base_version", manifest.baseImageVersion),
          manifest.baseImagePrefix,
          "where the bake uploaded it",
        );
        assert.match(
          script,
          /aws s3 cp --only-show-errors --recursive "s3:\/\/\$ARTIFACT_BUCKET\/\$base_prefix" "\$base_dir\/"/,
        );
        assert.ok(
          script.includes(`bases_dir=\${${ROOT_VAR}}${BASES_DIR}\nbase_dir="$bases_dir/$base_version"\n`),
        );
        assert.equal(env.FAAS_BASES_DIR, BASES_DIR);
        assert.equal(manifest.baseImagePrefix, "images/4f3c2a1b0e9d8c7b/");
      });
    });
  }

  it("the largest pool and VM settings a stack accepts are ones the agent accepts too", () => {
    const base = stacks[0]!;
    const largest = {
      pool: {
        minIdle: 1000,
        maxInstances: 10_000,
        idleTtlSeconds: 86_400,
        maxConcurrentRestores: 256,
        memoryBudgetMiB: 16_777_216,
      },
      vm: { memoryMiB: 32_768, cpuMaxPercent: 3200 },
      limits: { callTimeoutMs: 900_000, payloadLimitBytes: 64 * 1024 * 1024 },
    };
    const { values } = readStackFileConfig(parseYaml(readFileSync(join(STACKS_DIR, base.file), "utf8")));
    const withValues = (over: typeof largest) =>
      parseStackConfig({
        ...values,
        "snapfaas:bakeSshPrivateKey": "fixture",
        "snapfaas:pool": JSON.stringify(over.pool),
        "snapfaas:vm": JSON.stringify({ ...JSON.parse(values["snapfaas:vm"] ?? "{}"), ...over.vm }),
        "snapfaas:limits": JSON.stringify(over.limits),
      });
    const config = withValues(largest);
    assert.ok(isAwsStack(config));
    const { manifest, env, firecracker } = hostFiles(config, "v1");
    const hostManifest = parseHostManifest(manifest, "m");
    const agent = loadAgentConfig(withManifestDefaults(env, hostManifest, BASES_DIR));
    const driver = parseFirecrackerDriverConfig(
      withReleaseLimits(firecracker, firecrackerLimitsFromManifest(hostManifest)),
    );
    assert.equal(driver.network.maxSlots, 10_000);
    assert.equal(agent.pool.maxInstances, 10_000);
    assert.equal(agent.pool.idleTtlMs, 86_400_000);
    // One past each bound is refused by the stack, before any host sees it.
    for (const [key, value] of Object.entries(largest.pool)) {
      assert.throws(
        () => withValues({ ...largest, pool: { ...largest.pool, [key]: value + 1 } }),
        new RegExp(`pool\\.${key}`),
        `pool.${key} = ${value + 1}`,
      );
    }
  });

  it("the boot script and the agent refuse the same base versions (a folder name, never . or ..)", () => {
    const { script } = hostFiles(stacks[0]!.config, "v1");
    const check = /^\[\[ "\$base_version" =~ .*$/m.exec(script)?.[0];
    assert.ok(check, "the boot script checks the version");
    const bootAccepts = (version: string) =>
      spawnSync("bash", ["-c", `fail() { exit 1; }; base_version="$1"; ${check}`, "check", version])
        .status === 0;
    const { manifest } = hostFiles(stacks[0]!.config, "v1");
    const agentAccepts = (version: string) =>
      releaseManifestSchema.safeParse({ ...manifest, baseImageVersion: version }).success;
    for (const version of ["4f3c2a1b0e9d8c7b", "v1.2.3", "base_7-x"]) {
      assert.ok(bootAccepts(version), `boot script accepts ${version}`);
      assert.ok(agentAccepts(version), `agent accepts ${version}`);
    }
    for (const version of ["", ".", "..", "../x", "a/b", "null x", "-rf", "$(id)"]) {
      assert.ok(!bootAccepts(version), `boot script refuses ${JSON.stringify(version)}`);
      assert.ok(!agentAccepts(version), `agent refuses ${JSON.stringify(version)}`);
    }
  });

  it("refuses a manifest without its base image version, naming the field", () => {
    const { manifest } = hostFiles(stacks[0]!.config, "v1");
    const { baseImageVersion: _, ...broken } = manifest;
    assert.throws(
      () => parseHostManifest(broken, "release.json"),
      /invalid release manifest release\.json:\n {2}baseImageVersion: /,
    );
    assert.throws(
      () => parseHostManifest({ ...manifest, baseImageVersion: "../x" }, "release.json"),
      /baseImageVersion: a version label/,
    );
  });
});
