import assert from "node:assert/strict";
import { parseStackConfig, readStackFileConfig, StackConfigError } from "../../components/config.ts";

const validAws: Record<string, string> = {
  "aws:region": "us-east-1",
  "snapfaas:fleet": JSON.stringify({ instanceType: "c5.metal", minHosts: 1, maxHosts: 3, desiredHosts: 2 }),
  "snapfaas:network": JSON.stringify({ availabilityZones: ["us-east-1a", "us-east-1b"] }),
  "snapfaas:versions": JSON.stringify({
    firecracker: "1.16.1",
    agent: "0.1.0",
    baseImage: "base-1",
    hostAmi: "ami-0abc1234def567890",
  }),
};

function problemsOf(flat: Record<string, string>): readonly string[] {
  try {
    parseStackConfig(flat);
  } catch (error) {
    assert.ok(error instanceof StackConfigError, `expected StackConfigError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail("config was accepted");
}

describe("parseStackConfig", () => {
  it("fills defaults for a minimal AWS stack", () => {
    const config = parseStackConfig(validAws);
    assert.equal(config.mode, "aws");
    assert.deepEqual(config.fleet, {
      instanceType: "c5.metal",
      nestedVirtualization: false,
      minHosts: 1,
      maxHosts: 3,
      desiredHosts: 2,
      rootVolumeGiB: 100,
      targetPoolUtilizationPercent: 70,
      drainTimeoutSeconds: 300,
    });
    assert.deepEqual(config.network, {
      vpcCidr: "10.40.0.0/16",
      availabilityZones: ["us-east-1a", "us-east-1b"],
      adminAccess: "none",
      functionEgress: false,
    });
    assert.deepEqual(config.limits, { callTimeoutMs: 30000, payloadLimitBytes: 6291456 });
    assert.deepEqual(config.gateway, { kind: "alb", ingressCidrs: ["0.0.0.0/0"] });
    assert.equal(config.benchmark, false);
    assert.equal(config.pool.memoryBudgetMiB, 65536);
    assert.equal(config.vm.cpuMaxPercent, 100);
  });

  it("decodes top-level scalars the way Pulumi stores them (strings)", () => {
    const config = parseStackConfig({ ...validAws, "snapfaas:benchmark": "true" });
    assert.equal(config.benchmark, true);
  });

  it("names an unknown top-level key and an unknown nested key", () => {
    assert.deepEqual(
      problemsOf({
        ...validAws,
        "snapfaas:pools": "{}",
        "snapfaas:vm": JSON.stringify({ memoryMb: 512 }),
      }),
      ["snapfaas:vm.memoryMb: unknown key", "snapfaas:pools: unknown key"],
    );
  });

  it("names a wrong value and says what is allowed", () => {
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:gateway": JSON.stringify({ kind: "elb" }) }), [
      'snapfaas:gateway.kind: must be one of "alb", "nlb"',
    ]);
    const [problem] = problemsOf({
      ...validAws,
      "snapfaas:limits": JSON.stringify({ callTimeoutMs: 10 }),
    });
    assert.match(problem ?? "", /^snapfaas:limits\.callTimeoutMs: Too small: expected number to be >=100$/);
  });

  it("refuses an instance type without KVM, naming fleet.instanceType", () => {
    const fleet = JSON.stringify({ instanceType: "m5.xlarge", minHosts: 1, maxHosts: 1, desiredHosts: 1 });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:fleet": fleet }), [
      "snapfaas:fleet.instanceType: m5.xlarge has no KVM: use a .metal type (for example c5.metal, m7i.metal-24xl) or c8i/m8i/r8i with nestedVirtualization",
    ]);
  });

  it("checks host counts against each other", () => {
    const fleet = JSON.stringify({ instanceType: "c5.metal", minHosts: 3, maxHosts: 2, desiredHosts: 4 });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:fleet": fleet }), [
      "snapfaas:fleet.minHosts: must be <= maxHosts (2)",
      "snapfaas:fleet.desiredHosts: must be between minHosts (3) and maxHosts (2)",
    ]);
  });

  it("requires fleet, network and versions in aws mode, and nothing in local mode", () => {
    assert.deepEqual(problemsOf({ "snapfaas:mode": "aws" }), [
      'snapfaas:fleet: is required when mode is "aws"',
      'snapfaas:network: is required when mode is "aws"',
      'snapfaas:versions: is required when mode is "aws"',
    ]);
    assert.equal(parseStackConfig({ "snapfaas:mode": "local" }).local.port, 8080);
  });

  it("requires the builder SSH key secret when the bake is enabled", () => {
    const bake = JSON.stringify({
      sshKeyName: "builder",
      sshIngressCidr: "203.0.113.7/32",
    });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:bake": bake }), [
      "snapfaas:bakeSshPrivateKey: is required when bake.enabled is true (pulumi config set --secret snapfaas:bakeSshPrivateKey < key.pem)",
    ]);
    const config = parseStackConfig({
      ...validAws,
      "snapfaas:bake": bake,
      "snapfaas:bakeSshPrivateKey": "KEY",
    });
    assert.equal(config.bake?.guest, "linux", "the Linux guest unless OSv is asked for");
  });

  it("bakes on the fleet's instance type only, with the Firecracker the bake pins", () => {
    const bake = (extra: Record<string, unknown>) =>
      JSON.stringify({ sshKeyName: "builder", sshIngressCidr: "203.0.113.7/32", ...extra });
    const secret = { "snapfaas:bakeSshPrivateKey": "KEY" };
    assert.deepEqual(
      problemsOf({ ...validAws, ...secret, "snapfaas:bake": bake({ builderInstanceType: "c5n.metal" }) }),
      [
        "snapfaas:bake.builderInstanceType: must be fleet.instanceType (c5.metal) or left out: a snapshot restores only on the CPU model it was baked on",
      ],
    );
    assert.equal(
      parseStackConfig({ ...validAws, ...secret, "snapfaas:bake": bake({ builderInstanceType: "c5.metal" }) })
        .bake?.builderInstanceType,
      "c5.metal",
    );
    const versions = JSON.stringify({
      firecracker: "1.15.0",
      agent: "0.1.0",
      hostAmi: "ami-0abc1234def567890",
    });
    assert.deepEqual(
      problemsOf({ ...validAws, ...secret, "snapfaas:bake": bake({}), "snapfaas:versions": versions }),
      [
        "snapfaas:versions.firecracker: must be 1.16.1, the Firecracker the bake pins (contracts/firecracker-release.ts): a snapshot restores only on the version that wrote it",
      ],
    );
    assert.deepEqual(
      problemsOf({
        ...validAws,
        ...secret,
        "snapfaas:bake": bake({}),
        "snapfaas:vm": JSON.stringify({ vcpus: 3 }),
      }),
      [
        "snapfaas:vm.vcpus: must be 1 or an even number when the stack bakes (Firecracker boots no other count), got 3",
      ],
    );
    assert.deepEqual(problemsOf({ ...validAws, ...secret, "snapfaas:bake": bake({ guest: "freebsd" }) }), [
      'snapfaas:bake.guest: must be one of "linux", "osv"',
    ]);
  });

  it("requires the hosts' AMI pinned, as an AMI id", () => {
    const versions = (hostAmi?: string) =>
      JSON.stringify({
        firecracker: "1.16.1",
        agent: "0.1.0",
        baseImage: "base-1",
        ...(hostAmi ? { hostAmi } : {}),
      });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:versions": versions() }), [
      "snapfaas:versions.hostAmi: is required (a string)",
    ]);
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:versions": versions("ami-XYZ") }), [
      "snapfaas:versions.hostAmi: must be an AMI id like ami-0123456789abcdef0 (ami- and 8 to 17 hex digits)",
    ]);
  });

  it("requires a base image version when nothing is baked", () => {
    const versions = JSON.stringify({
      firecracker: "1.16.1",
      agent: "0.1.0",
      hostAmi: "ami-0abc1234def567890",
    });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:versions": versions }), [
      "snapfaas:versions.baseImage: is required when no bake section is enabled",
    ]);
  });

  it("refuses an existing VPC without its subnets", () => {
    const network = JSON.stringify({
      availabilityZones: ["us-east-1a", "us-east-1b"],
      existingVpcId: "vpc-0abc",
    });
    assert.deepEqual(problemsOf({ ...validAws, "snapfaas:network": network }), [
      "snapfaas:network.existingVpcId: needs existingPublicSubnetIds and existingPrivateSubnetIds (two or more each)",
    ]);
  });

  it("ignores other namespaces", () => {
    assert.equal(parseStackConfig({ ...validAws, "aws:profile": "x" }).mode, "aws");
  });
});

describe("readStackFileConfig", () => {
  it("JSON-encodes structured values, keeps strings and lists secure keys apart", () => {
    const read = readStackFileConfig({
      config: {
        "aws:region": "eu-west-1",
        "snapfaas:benchmark": true,
        "snapfaas:fleet": { minHosts: 1 },
        "snapfaas:bakeSshPrivateKey": { secure: "AAAB" },
      },
    });
    assert.deepEqual(read, {
      values: { "aws:region": "eu-west-1", "snapfaas:benchmark": "true", "snapfaas:fleet": '{"minHosts":1}' },
      secureKeys: ["snapfaas:bakeSshPrivateKey"],
    });
  });
});
