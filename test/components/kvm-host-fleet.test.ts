import assert from "node:assert/strict";
import * as pulumi from "@pulumi/pulumi";
import { KvmHostFleet, type KvmHostFleetArgs } from "../../components/kvm-host-fleet.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

const args: KvmHostFleetArgs = {
  instanceType: "c5.metal",
  amiId: "ami-0123456789abcdef0",
  region: "us-east-1",
  subnetIds: ["subnet-a", "subnet-b"],
  securityGroupIds: ["sg-host"],
  targetGroupArns: ["arn:tg"],
  bucketName: "art-bucket",
  bucketArn: "arn:aws:s3:::art-bucket",
  releaseParameterName: "/snapfaas/test/release",
  releaseParameterArn: "arn:aws:ssm:us-east-1:123456789012:parameter/snapfaas/test/release",
  releaseVersion: "0123456789abcdef",
  firecrackerVersion: "1.16.1",
  firecrackerTarballSha256: "e".repeat(64),
  minHosts: 2,
  maxHosts: 4,
  desiredHosts: 2,
  targetPoolUtilizationPercent: 65,
  drainTimeoutSeconds: 240,
};

async function build(overrides: Partial<KvmHostFleetArgs> = {}): Promise<KvmHostFleet> {
  const fleet = new KvmHostFleet("fleet", { ...args, ...overrides });
  await promiseOf(fleet.groupName);
  await settled(fleet);
  return fleet;
}

describe("KvmHostFleet", () => {
  usePulumiMocks();

  it("creates exactly the role, policies, profile, launch template, group, drain hook and tracking policy", async () => {
    const fleet = await build();
    assert.equal(await promiseOf(fleet.groupName), "fleet-group-mock");
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:autoscaling/group:Group fleet-group",
      "aws:autoscaling/lifecycleHook:LifecycleHook fleet-drain-hook",
      "aws:autoscaling/policy:Policy fleet-pool-tracking",
      "aws:ec2/launchTemplate:LaunchTemplate fleet-launch-template",
      "aws:iam/instanceProfile:InstanceProfile fleet-profile",
      "aws:iam/role:Role fleet-role",
      "aws:iam/rolePolicy:RolePolicy fleet-drain-policy",
      "aws:iam/rolePolicy:RolePolicy fleet-policy",
      "snapfaas:index:KvmHostFleet fleet",
    ]);
  });

  it("requires IMDSv2 with one hop, encrypts the root volume and uses the configured type", async () => {
    await build();
    const template = findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs;
    assert.equal(template.instanceType, "c5.metal");
    assert.equal(template.imageId, "ami-0123456789abcdef0");
    assert.deepEqual(template.metadataOptions, {
      httpEndpoint: "enabled",
      httpTokens: "required",
      httpPutResponseHopLimit: 1,
      instanceMetadataTags: "enabled",
    });
    assert.deepEqual(template.blockDeviceMappings, [
      {
        deviceName: "/dev/xvda",
        ebs: { volumeSize: 100, volumeType: "gp3", encrypted: "true", deleteOnTermination: "true" },
      },
    ]);
    assert.equal(template.cpuOptions, undefined);
    assert.deepEqual(template.vpcSecurityGroupIds, ["sg-host"]);
    assert.deepEqual(template.iamInstanceProfile, {
      arn: "arn:aws:mock:us-east-1:123456789012:aws:iam/instanceProfile:InstanceProfile/fleet-profile",
    });
  });

  it("puts the pinned Firecracker version and checksum, the release and the drain hook into the user data", async () => {
    await build();
    const template = findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs;
    const script = Buffer.from(template.userData as string, "base64").toString("utf8");
    assert.ok(script.includes("FIRECRACKER_VERSION=1.16.1\n"));
    assert.ok(script.includes(`expected_sha256=${"e".repeat(64)}\n`));
    assert.ok(
      script.includes("RELEASE_PARAMETER=/snapfaas/test/release\nRELEASE_VERSION=0123456789abcdef\n"),
    );
    assert.ok(script.includes("ARTIFACT_BUCKET=art-bucket\n"));
    assert.ok(script.includes("FAAS_LIFECYCLE_HOOK=fleet-drain\n"));
    assert.ok(script.includes("FAAS_REGISTRY_PREFIX=functions/\n"));
    // One jailer uid and one network slot per VM the pool may run.
    assert.ok(script.includes('"idRange": {\n    "first": 200000,\n    "count": 256\n  }'));
    assert.ok(script.includes('"maxSlots": 256'));
  });

  it("pins the release parameter's version and opens the admin API only for adminAccess vpc", async () => {
    const scriptOf = () =>
      Buffer.from(
        findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs
          .userData as string,
        "base64",
      ).toString("utf8");
    await build({ releaseParameterVersion: 5, adminAccess: "vpc" });
    assert.ok(scriptOf().includes('aws ssm get-parameter --name "$RELEASE_PARAMETER:5" '));
    assert.ok(scriptOf().includes("\nADMIN_HOST=0.0.0.0\n"));
  });

  it("keeps the admin API on loopback and trusts no proxy by default", async () => {
    await build();
    const script = Buffer.from(
      findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs
        .userData as string,
      "base64",
    ).toString("utf8");
    assert.ok(!script.includes("ADMIN_HOST"));
    assert.ok(!script.includes("FAAS_TRUSTED_PROXIES"));
    assert.ok(script.includes('"egress": {\n      "enabled": false'), "no function egress by default");
  });

  it("offers function egress on the hosts' driver config only with functionEgress", async () => {
    await build({ functionEgress: true });
    const script = Buffer.from(
      findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs
        .userData as string,
      "base64",
    ).toString("utf8");
    assert.ok(script.includes('"egress": {\n      "enabled": true'));
    assert.ok(script.includes('"dnsResolver": "169.254.169.253"'));
  });

  it("hands the agents the proxies it trusts, and refuses one that is no address range, naming it", async () => {
    await build({ trustedProxyCidrs: [pulumi.output("10.40.0.0/16"), "fd00::/8"] });
    const script = Buffer.from(
      findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs
        .userData as string,
      "base64",
    ).toString("utf8");
    assert.ok(script.includes("\nFAAS_TRUSTED_PROXIES=10.40.0.0/16,fd00::/8\n"));
    assert.throws(
      () => new KvmHostFleet("bad", { ...args, trustedProxyCidrs: ["10.0.0.0/8", "10.0.0.0/40"] }),
      (error: unknown) => {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        assert.deepEqual(
          error.errors.map((e) => e.propertyPath),
          ["trustedProxyCidrs[1]"],
        );
        assert.match(error.errors[0]?.reason ?? "", /"10\.0\.0\.0\/40" is not an address range/);
        return true;
      },
    );
  });

  it("enables nested virtualization on c8i when configured", async () => {
    await build({ instanceType: "c8i.4xlarge", nestedVirtualization: true });
    const template = findRegistered("aws:ec2/launchTemplate:LaunchTemplate", "fleet-launch-template").inputs;
    assert.deepEqual(template.cpuOptions, { nestedVirtualization: "enabled" });
  });

  it("grants only the host's needs: read its objects and release, list the registry and base images, publish its metric", async () => {
    await build();
    const policy = JSON.parse(
      findRegistered("aws:iam/rolePolicy:RolePolicy", "fleet-policy").inputs.policy as string,
    );
    assert.deepEqual(policy.Statement, [
      {
        Sid: "ReadReleasesImagesAndFunctions",
        Effect: "Allow",
        Action: "s3:GetObject",
        Resource: [
          "arn:aws:s3:::art-bucket/releases/*",
          "arn:aws:s3:::art-bucket/images/*",
          "arn:aws:s3:::art-bucket/functions/*",
        ],
      },
      {
        // All of functions/: without ListBucket a missing bundle reads as 403, not 404.
        Sid: "ListFunctions",
        Effect: "Allow",
        Action: "s3:ListBucket",
        Resource: "arn:aws:s3:::art-bucket",
        Condition: { StringLike: { "s3:prefix": ["functions/*"] } },
      },
      {
        Sid: "ListBaseImages",
        Effect: "Allow",
        Action: "s3:ListBucket",
        Resource: "arn:aws:s3:::art-bucket",
        Condition: { StringLike: { "s3:prefix": ["images/*"] } },
      },
      {
        Sid: "ReadReleaseManifest",
        Effect: "Allow",
        Action: "ssm:GetParameter",
        Resource: "arn:aws:ssm:us-east-1:123456789012:parameter/snapfaas/test/release",
      },
      {
        Sid: "PublishPoolMetrics",
        Effect: "Allow",
        Action: "cloudwatch:PutMetricData",
        Resource: "*",
        Condition: { StringEquals: { "cloudwatch:namespace": "SnapFaaS" } },
      },
    ]);
    const drain = JSON.parse(
      findRegistered("aws:iam/rolePolicy:RolePolicy", "fleet-drain-policy").inputs.policy as string,
    );
    assert.deepEqual(drain.Statement, [
      {
        Sid: "CompleteOwnDrain",
        Effect: "Allow",
        Action: ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
        Resource: "arn:aws:mock:us-east-1:123456789012:aws:autoscaling/group:Group/fleet-group",
      },
    ]);
    const trust = JSON.parse(
      findRegistered("aws:iam/role:Role", "fleet-role").inputs.assumeRolePolicy as string,
    );
    assert.deepEqual(trust.Statement[0].Principal, { Service: "ec2.amazonaws.com" });
  });

  it("sizes the group from args, replaces unhealthy hosts, refreshes on template change and tracks PoolUtilization", async () => {
    await build();
    const group = findRegistered("aws:autoscaling/group:Group", "fleet-group").inputs;
    assert.deepEqual([group.minSize, group.maxSize, group.desiredCapacity], [2, 4, 2]);
    assert.deepEqual(group.vpcZoneIdentifiers, ["subnet-a", "subnet-b"]);
    assert.deepEqual(group.targetGroupArns, ["arn:tg"]);
    assert.equal(group.healthCheckType, "ELB");
    assert.deepEqual(group.launchTemplate, { id: "fleet-launch-template-id", version: "1" });
    assert.equal(group.instanceRefresh.strategy, "Rolling");
    // Launch before terminate, so a one-host stack is never without a healthy host during a release.
    assert.deepEqual(
      [
        group.instanceRefresh.preferences.minHealthyPercentage,
        group.instanceRefresh.preferences.maxHealthyPercentage,
      ],
      [100, 200],
    );
    assert.equal(group.waitForCapacityTimeout, "30m", "metal hosts need more than the default 10m");

    const hook = findRegistered("aws:autoscaling/lifecycleHook:LifecycleHook", "fleet-drain-hook").inputs;
    assert.deepEqual(
      [
        hook.name,
        hook.lifecycleTransition,
        hook.heartbeatTimeout,
        hook.defaultResult,
        hook.autoscalingGroupName,
      ],
      ["fleet-drain", "autoscaling:EC2_INSTANCE_TERMINATING", 240, "CONTINUE", "fleet-group-mock"],
    );
    const scaling = findRegistered("aws:autoscaling/policy:Policy", "fleet-pool-tracking").inputs;
    assert.equal(scaling.policyType, "TargetTrackingScaling");
    assert.deepEqual(scaling.targetTrackingConfiguration, {
      targetValue: 65,
      customizedMetricSpecification: {
        namespace: "SnapFaaS",
        metricName: "PoolUtilization",
        statistic: "Average",
        unit: "Percent",
        metricDimensions: [{ name: "AutoScalingGroupName", value: "fleet-group-mock" }],
      },
    });
  });

  it("refuses a type without KVM and inconsistent host counts, naming each property", () => {
    assert.throws(
      () =>
        new KvmHostFleet("bad", {
          ...args,
          instanceType: "m5.large",
          minHosts: 5,
          maxHosts: 4,
          desiredHosts: 9,
        }),
      (error: unknown) => {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        assert.deepEqual(
          error.errors.map((e) => e.propertyPath),
          ["instanceType", "minHosts", "desiredHosts"],
        );
        assert.match(error.errors[0]?.reason ?? "", /m5\.large has no KVM/);
        return true;
      },
    );
    assert.throws(
      () => new KvmHostFleet("bad", { ...args, instanceType: "c8i.large" }),
      /nested virtualization|Invalid arguments/,
    );
  });
});
