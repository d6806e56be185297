import assert from "node:assert/strict";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { FaasPlatform, type FaasPlatformArgs } from "../../components/faas-platform.ts";
import { createFixtureRepo, type FixtureRepo } from "../support/fixture-repo.ts";
import { poolSettings } from "../support/fixtures.ts";
import {
  findRegistered,
  invoked,
  promiseOf,
  registered,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

describe("FaasPlatform", () => {
  usePulumiMocks();
  let repo: FixtureRepo;
  let args: FaasPlatformArgs;

  before(async () => {
    repo = await createFixtureRepo();
    args = {
      region: "us-east-1",
      availabilityZones: ["us-east-1a", "us-east-1b"],
      instanceType: "c5.metal",
      minHosts: 1,
      maxHosts: 2,
      desiredHosts: 1,
      firecrackerVersion: "1.16.1",
      agentVersion: "0.1.0",
      agentEntry: join(repo.root, "host-agent", "main.ts"),
      guestRuntimeEntry: join(repo.root, "guest-images", "runtime", "main.ts"),
      poolSettings,
      baseImageVersion: "c".repeat(64),
    };
  });

  after(async () => {
    await repo.remove();
  });

  it("composes network, artifact store, release, gateway and fleet, and outputs what operators need", async () => {
    const platform = new FaasPlatform("faas", args);
    assert.equal(await promiseOf(platform.endpointUrl), "http://faas-gateway-lb.elb.mock.amazonaws.com");
    assert.equal(await promiseOf(platform.bucketName), "faas-artifacts-bucket-mock");
    assert.equal(await promiseOf(platform.groupName), "faas-fleet-group-mock");
    assert.match(await promiseOf(platform.releaseVersion), /^[0-9a-f]{16}$/);
    assert.equal(await promiseOf(platform.baseImageVersion), "c".repeat(64));
    assert.equal(await promiseOf(platform.benchmarkUrl), undefined);
    await settled(platform);

    const components = registered
      .filter((r) => !r.custom)
      .map((r) => `${r.type} ${r.name}`)
      .sort();
    assert.deepEqual(components, [
      "snapfaas:index:ArtifactStore faas-artifacts",
      "snapfaas:index:FaasPlatform faas",
      "snapfaas:index:Gateway faas-gateway",
      "snapfaas:index:HostAgentRelease faas-release",
      "snapfaas:index:KvmHostFleet faas-fleet",
      "snapfaas:index:Network faas-network",
    ]);
    // Every resource is named from the platform's name.
    for (const resource of registered) assert.ok(resource.name.startsWith("faas"), resource.name);

    const template = findRegistered(
      "aws:ec2/launchTemplate:LaunchTemplate",
      "faas-fleet-launch-template",
    ).inputs;
    assert.equal(template.imageId, "ami-0123456789abcdef0", "AMI from the Amazon Linux 2023 SSM parameter");
    // Behind the ALB the agents believe the X-Forwarded-For of the VPC's range (only the LB reaches them).
    assert.match(
      Buffer.from(template.userData as string, "base64").toString("utf8"),
      /\nFAAS_TRUSTED_PROXIES=10\.40\.0\.0\/16\n/,
    );
    assert.deepEqual(template.vpcSecurityGroupIds, ["faas-network-host-sg-id"]);
    const group = findRegistered("aws:autoscaling/group:Group", "faas-fleet-group").inputs;
    assert.deepEqual(group.targetGroupArns, [
      "arn:aws:mock:us-east-1:123456789012:aws:lb/targetGroup:TargetGroup/faas-gateway-targets",
    ]);
    assert.deepEqual(group.vpcZoneIdentifiers, [
      "faas-network-private-us-east-1a-id",
      "faas-network-private-us-east-1b-id",
    ]);
    const lb = findRegistered("aws:lb/loadBalancer:LoadBalancer", "faas-gateway-lb").inputs;
    assert.deepEqual(lb.subnets, ["faas-network-public-us-east-1a-id", "faas-network-public-us-east-1b-id"]);
    assert.deepEqual(lb.securityGroups, ["faas-network-lb-sg-id"]);
    const parameter = findRegistered("aws:ssm/parameter:Parameter", "faas-release-manifest").inputs;
    assert.equal(parameter.name, "/snapfaas/test/faas/release");
  });

  it("adds the bake and the benchmark Lambda when asked, and the release waits for the baked version", async () => {
    const platform = new FaasPlatform("faas", {
      ...args,
      baseImageVersion: undefined,
      bakeEnabled: true,
      amiId: "ami-0abc1234def567890",
      bakeBaseImageVersion: "d".repeat(64),
      bakeSourcesTarball: join(repo.root, "host-agent", "main.ts"),
      bakeSshKeyName: "builder",
      bakeSshPrivateKey: "KEY",
      bakeSshIngressCidr: "100.64.12.4/32",
      benchmark: true,
      certificateArn: "arn:aws:acm:us-east-1:123456789012:certificate/abc",
    });
    assert.equal(await promiseOf(platform.baseImageVersion), "d".repeat(64));
    assert.equal(await promiseOf(platform.endpointUrl), "https://faas-gateway-lb.elb.mock.amazonaws.com");
    // The zones are checked for the fleet's type, which the builder (in the first public subnet) shares.
    assert.deepEqual(
      invoked
        .filter((i) => i.token === "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings")
        .map((i) => (i.inputs.filters as Array<{ values: string[] }>)[0]!.values[0])
        .sort(),
      ["c5.metal"],
    );
    assert.equal(
      await promiseOf(platform.benchmarkUrl),
      "https://faas-benchmark-url.lambda-url.us-east-1.on.aws/",
    );
    await settled(platform);
    const components = registered
      .filter((r) => !r.custom)
      .map((r) => r.name)
      .sort();
    assert.deepEqual(components, [
      "faas",
      "faas-artifacts",
      "faas-bake",
      "faas-benchmark",
      "faas-fleet",
      "faas-gateway",
      "faas-network",
      "faas-release",
    ]);
    const lbSg = findRegistered("aws:ec2/securityGroup:SecurityGroup", "faas-network-lb-sg").inputs;
    assert.equal((lbSg.ingress as Array<{ fromPort: number }>)[0]?.fromPort, 443);
    const manifest = JSON.parse(
      (
        findRegistered("aws:ssm/parameter:Parameter", "faas-release-manifest").inputs.value as {
          value: string;
        }
      ).value,
    );
    assert.equal(manifest.baseImageVersion, "d".repeat(64));
  });

  it("refuses the stack files' TEST-NET placeholder as the builder's SSH source, at preview", () => {
    assert.throws(
      () =>
        new FaasPlatform("bad", {
          ...args,
          bakeEnabled: true,
          amiId: "ami-0abc1234def567890",
          bakeBaseImageVersion: "d".repeat(64),
          bakeSourcesTarball: "sources.tgz",
          bakeSshKeyName: "k",
          bakeSshPrivateKey: "p",
          bakeSshIngressCidr: "192.0.2.10/32",
        }),
      (error: unknown) => {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        assert.equal(error.errors[0]?.propertyPath, "bakeSshIngressCidr");
        assert.match(error.errors[0]!.reason, /documentation range 192\.0\.2\.0\/24 \(a placeholder\)/);
        return true;
      },
    );
  });

  it("names the missing bake arguments", () => {
    assert.throws(
      () => new FaasPlatform("bad", { ...args, baseImageVersion: undefined, bakeEnabled: true }),
      (error: unknown) => {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        assert.deepEqual(
          error.errors.map((e) => e.propertyPath),
          [
            "amiId",
            "bakeBaseImageVersion",
            "bakeSourcesTarball",
            "bakeSshKeyName",
            "bakeSshPrivateKey",
            "bakeSshIngressCidr",
          ],
        );
        return true;
      },
    );
    assert.throws(
      () => new FaasPlatform("bad", { ...args, baseImageVersion: undefined }),
      (error: unknown) =>
        error instanceof pulumi.InputPropertiesError && error.errors[0]?.propertyPath === "baseImageVersion",
    );
  });
});
