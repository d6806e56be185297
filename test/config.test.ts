import assert from "node:assert/strict";
import { ConfigError, loadAgentConfig, unknownAgentVariables } from "../host-agent/config.ts";

describe("agent configuration", () => {
  it("has the documented defaults", () => {
    const c = loadAgentConfig({});
    assert.equal(c.port, 8080);
    assert.equal(c.adminPort, 8081);
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.adminHost, "127.0.0.1", "the admin API stays on loopback unless configured");
    assert.equal(c.stateDir, ".faas");
    assert.equal(c.pool.callTimeoutMs, 30_000);
    assert.equal(c.pool.genericMin, 2);
    assert.equal(c.bundle.maxBundleBytes, 50 * 1024 * 1024);
    assert.equal(c.bundle.maxUnpackedBytes, 250 * 1024 * 1024);
  });

  it("reads numbers from the environment", () => {
    const c = loadAgentConfig({ PORT: "9000", FAAS_POOL_GENERIC: "5", FAAS_INSTANCE_MEMORY_MIB: "512" });
    assert.equal(c.port, 9000);
    assert.equal(c.pool.genericMin, 5);
    assert.equal(c.limits.memoryMiB, 512);
  });

  it("names every bad variable, its value and what is allowed", () => {
    assert.throws(
      () => loadAgentConfig({ PORT: "http", FAAS_CALL_TIMEOUT_MS: "5", FAAS_ADMIN_TOKEN: "short" }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /PORT="http": .*number/);
        assert.match(err.message, /FAAS_CALL_TIMEOUT_MS="5": .*>=100/);
        assert.match(err.message, /FAAS_ADMIN_TOKEN="short": must be at least 16 characters/);
        return true;
      },
    );
  });

  it("names a FAAS_ variable it does not know, with the nearest one it does", () => {
    assert.deepEqual(
      unknownAgentVariables({
        FAAS_POOL_GENRIC: "4",
        FAAS_SOMETHING_ELSE: "x",
        FAAS_POOL_GENERIC: "2",
        FAAS_URL: "http://127.0.0.1:8080",
        PATH: "/bin",
      }),
      [
        "FAAS_POOL_GENRIC is not an agent variable and is ignored (did you mean FAAS_POOL_GENERIC?)",
        "FAAS_SOMETHING_ELSE is not an agent variable and is ignored",
      ],
    );
  });

  it("refuses the same port for both planes", () => {
    assert.throws(() => loadAgentConfig({ PORT: "9000", ADMIN_PORT: "9000" }), /must differ/);
  });
});

describe("agent configuration for production", () => {
  it("needs a baked base folder for the firecracker driver and a bucket for the S3 registry", () => {
    assert.throws(
      () => loadAgentConfig({ FAAS_DRIVER: "firecracker" }),
      /FAAS_BASE_DIR is required with FAAS_DRIVER=firecracker/,
    );
    assert.throws(() => loadAgentConfig({ FAAS_REGISTRY: "s3" }), /FAAS_REGISTRY_BUCKET is required/);
    const c = loadAgentConfig({
      FAAS_DRIVER: "firecracker",
      FAAS_BASE_DIR: "/var/lib/faas/base",
      FAAS_REGISTRY: "s3",
      FAAS_REGISTRY_BUCKET: "artifacts",
      FAAS_REGISTRY_PREFIX: "functions/",
    });
    assert.equal(c.driver, "firecracker");
    assert.deepEqual(c.registry, { kind: "s3", bucket: "artifacts", prefix: "functions/" });
    assert.throws(() => loadAgentConfig({ FAAS_DRIVER: "docker" }), /FAAS_DRIVER="docker"/);
  });

  it("refuses a registry prefix FaasFunction would not write under (the contract's rule)", () => {
    for (const bad of ["functions", "/functions/", "Functions/", "a//", "fn s/"]) {
      assert.throws(
        () =>
          loadAgentConfig({
            FAAS_REGISTRY: "s3",
            FAAS_REGISTRY_BUCKET: "artifacts",
            FAAS_REGISTRY_PREFIX: bad,
          }),
        new RegExp(`FAAS_REGISTRY_PREFIX="${bad}": must be empty or lower-case segments .* ending in "/"`),
      );
    }
    for (const good of ["", "functions/", "team-a/functions/"]) {
      const c = loadAgentConfig({
        FAAS_REGISTRY: "s3",
        FAAS_REGISTRY_BUCKET: "artifacts",
        FAAS_REGISTRY_PREFIX: good,
      });
      assert.deepEqual(c.registry, { kind: "s3", bucket: "artifacts", prefix: good });
    }
  });

  it("refuses to start the firecracker driver on a host that cannot run it, saying what is missing", async () => {
    const { mkdtemp, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const path = await import("node:path");
    const { startAgent, PreflightError } = await import("../host-agent/agent.ts");
    const { BaseImageError } = await import("../guest-images/bake/verify.ts");
    const pino = (await import("pino")).default;
    const state = await mkdtemp(path.join(tmpdir(), "faas-fc-agent-"));
    try {
      const config = loadAgentConfig({
        FAAS_DRIVER: "firecracker",
        FAAS_BASE_DIR: path.join(state, "no-base"),
        FAAS_STATE_DIR: state,
        PORT: "0",
        ADMIN_PORT: "0",
      });
      await assert.rejects(startAgent(config, { log: pino({ level: "silent" }) }), (err: unknown) => {
        // Here: no KVM and no firecracker binary. On a ready KVM host: no base in the folder.
        if (err instanceof PreflightError)
          return err.problems.some((p) => /kvm|firecracker|jailer/i.test(p.what));
        return err instanceof BaseImageError || /no-base/.test(String(err));
      });
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });
});

describe("agent configuration for an Auto Scaling fleet", () => {
  const fleet = {
    AWS_REGION: "eu-west-1",
    FAAS_METRIC_NAMESPACE: "SnapFaaS",
    FAAS_LIFECYCLE_HOOK: "snapfaas-hosts-drain",
  };

  it("runs neither the metric nor the drain unless named, and defaults the rest", () => {
    const c = loadAgentConfig({});
    assert.equal(c.aws.metrics, undefined);
    assert.equal(c.aws.drain, undefined);
    assert.equal(c.aws.imdsUrl, "http://169.254.169.254");
    assert.equal(c.aws.groupName, undefined);
    const on = loadAgentConfig(fleet);
    assert.deepEqual(on.aws.metrics, { namespace: "SnapFaaS", intervalMs: 60_000 });
    assert.deepEqual(on.aws.drain, { hookName: "snapfaas-hosts-drain", timeoutMs: 270_000 });
    assert.equal(on.aws.region, "eu-west-1");
  });

  it("reads the interval, drain timeout, metadata URL and group name", () => {
    const c = loadAgentConfig({
      ...fleet,
      FAAS_METRIC_INTERVAL_MS: "30000",
      FAAS_DRAIN_TIMEOUT_MS: "600000",
      FAAS_IMDS_URL: "http://127.0.0.1:1338",
      FAAS_ASG_NAME: "my-group",
    });
    assert.equal(c.aws.metrics?.intervalMs, 30_000);
    assert.equal(c.aws.drain?.timeoutMs, 600_000);
    assert.equal(c.aws.imdsUrl, "http://127.0.0.1:1338");
    assert.equal(c.aws.groupName, "my-group");
  });

  it("names each bad fleet variable and what is allowed", () => {
    assert.throws(
      () =>
        loadAgentConfig({
          ...fleet,
          FAAS_METRIC_NAMESPACE: "AWS/EC2",
          FAAS_LIFECYCLE_HOOK: "drain me",
          FAAS_METRIC_INTERVAL_MS: "500",
          FAAS_DRAIN_TIMEOUT_MS: "soon",
          FAAS_IMDS_URL: "ftp://169.254.169.254/latest",
          AWS_REGION: "Ireland",
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /FAAS_METRIC_NAMESPACE="AWS\/EC2": must not start with AWS\//);
        assert.match(
          err.message,
          /FAAS_LIFECYCLE_HOOK="drain me": must be 1-255 of letters, digits and - _ \//,
        );
        assert.match(err.message, /FAAS_METRIC_INTERVAL_MS="500": .*>=1000/);
        assert.match(err.message, /FAAS_DRAIN_TIMEOUT_MS="soon": .*number/);
        assert.match(
          err.message,
          /FAAS_IMDS_URL="ftp:\/\/169.254.169.254\/latest": must be http\(s\):\/\/host\[:port\]/,
        );
        assert.match(err.message, /AWS_REGION="Ireland": must be an AWS region name/);
        return true;
      },
    );
  });

  it("needs AWS_REGION when either duty is on, naming the variable that turned it on", () => {
    assert.throws(
      () => loadAgentConfig({ FAAS_METRIC_NAMESPACE: "SnapFaaS" }),
      /AWS_REGION is required with FAAS_METRIC_NAMESPACE/,
    );
    assert.throws(
      () => loadAgentConfig({ FAAS_LIFECYCLE_HOOK: "snapfaas-hosts-drain" }),
      /AWS_REGION is required with FAAS_LIFECYCLE_HOOK/,
    );
    assert.doesNotThrow(() => loadAgentConfig({ AWS_REGION: "us-gov-west-1", FAAS_LIFECYCLE_HOOK: "h" }));
  });
});
