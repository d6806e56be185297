import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { addressRangeProblem } from "../contracts/address-range.ts";
import { DEFAULT_REGISTRY_PREFIX, REGISTRY_PREFIX } from "../contracts/registry-layout.ts";
import { assumeRolePolicy } from "./assume-role.ts";
import { checkKvmInstanceType } from "./instance-types.ts";
import { ADMIN_PORT, DATA_PORT } from "./network.ts";
import { type HostUserDataInput, renderHostUserData } from "./user-data.ts";

export const METRIC_NAMESPACE = "SnapFaaS";
export const POOL_UTILIZATION_METRIC = "PoolUtilization";
/** Jailed VMs run as uids from here on, far above login and system accounts. */
export const JAILER_UID_START = 200000;

export interface KvmHostFleetArgs {
  /** Known at construction, because it decides whether the fleet can run Firecracker at all. */
  instanceType: string;
  /** c8i/m8i/r8i only: expose KVM through nested virtualization. Default false. */
  nestedVirtualization?: boolean;
  /** Amazon Linux 2023 x86_64 AMI. */
  amiId: pulumi.Input<string>;
  region: pulumi.Input<string>;
  /** Private subnets in two or more zones. */
  subnetIds: pulumi.Input<pulumi.Input<string>[]>;
  securityGroupIds: pulumi.Input<pulumi.Input<string>[]>;
  targetGroupArns: pulumi.Input<pulumi.Input<string>[]>;
  bucketName: pulumi.Input<string>;
  bucketArn: pulumi.Input<string>;
  /** Key prefix of the function registry (records and bundles) in the bucket. Default "functions/". */
  registryPrefix?: string;
  releaseParameterName: pulumi.Input<string>;
  releaseParameterArn: pulumi.Input<string>;
  releaseVersion: pulumi.Input<string>;
  /** Version of the release parameter holding this release; hosts read exactly that version. */
  releaseParameterVersion?: pulumi.Input<number>;
  /** "vpc": the agent's admin API listens beyond loopback (the host security group admits the VPC). */
  adminAccess?: "vpc" | "none";
  /**
   * Proxies in front of the agents whose X-Forwarded-For names the client (an ALB: the VPC's range, as
   * only the load balancer reaches the data port). Default none: the agent's peer is the client.
   */
  trustedProxyCidrs?: pulumi.Input<pulumi.Input<string>[]>;
  /**
   * Whether hosts offer functions a way out (NAT out of the host's default route, DNS to the VPC
   * resolver); each function still opts in. Default false: a function asking for egress gets a 409.
   */
  functionEgress?: boolean;
  firecrackerVersion: pulumi.Input<string>;
  firecrackerTarballSha256?: pulumi.Input<string>;
  minHosts: pulumi.Input<number>;
  maxHosts: pulumi.Input<number>;
  desiredHosts: pulumi.Input<number>;
  rootVolumeGiB?: pulumi.Input<number>;
  /** PoolUtilization (percent of pool slots busy) the group steers towards. Default 70. */
  targetPoolUtilizationPercent?: pulumi.Input<number>;
  /** Seconds a host scheduled for scale-in may drain. Default 300. */
  drainTimeoutSeconds?: pulumi.Input<number>;
  /** VMs one host may run at once; sizes the jailer uid range and network slots. Default 256. */
  maxVmsPerHost?: pulumi.Input<number>;
}

/**
 * The hosts: a launch template (KVM-capable type, IMDSv2 only, encrypted disk, least-privilege profile,
 * boot script that installs pinned Firecracker and starts the agent) and an Auto Scaling group that tracks
 * the agents' PoolUtilization metric, rolls hosts on every template change and lets a host drain on scale-in.
 */
export class KvmHostFleet extends pulumi.ComponentResource {
  public readonly groupName: pulumi.Output<string>;
  public readonly groupArn: pulumi.Output<string>;
  public readonly launchTemplateId: pulumi.Output<string>;
  public readonly roleName: pulumi.Output<string>;
  public readonly drainHookName: string;

  constructor(name: string, args: KvmHostFleetArgs, opts?: pulumi.ComponentResourceOptions) {
    validateFleetArgs(args);
    super("snapfaas:index:KvmHostFleet", name, {}, opts);
    const registryPrefix = args.registryPrefix ?? DEFAULT_REGISTRY_PREFIX;
    this.drainHookName = `${name}-drain`;

    const role = new aws.iam.Role(
      `${name}-role`,
      {
        description: "snapfaas host agent",
        assumeRolePolicy: assumeRolePolicy("ec2.amazonaws.com"),
      },
      { parent: this },
    );
    new aws.iam.RolePolicy(
      `${name}-policy`,
      {
        role: role.name,
        policy: hostPolicyDocument(args.bucketArn, args.releaseParameterArn, registryPrefix),
      },
      { parent: this },
    );
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name }, { parent: this });

    // pulumi.all keeps element types for up to eight inputs: two groups.
    const userData = pulumi
      .all([
        pulumi.all([
          args.region,
          args.firecrackerVersion,
          args.firecrackerTarballSha256,
          args.releaseParameterName,
          args.trustedProxyCidrs ?? [],
        ]),
        pulumi.all([
          args.releaseParameterVersion,
          args.releaseVersion,
          args.bucketName,
          args.maxVmsPerHost ?? 256,
          args.drainTimeoutSeconds ?? 300,
        ]),
      ])
      .apply(
        ([
          [region, firecrackerVersion, sha256, parameterName, trustedProxyCidrs],
          [parameterVersion, releaseVersion, bucketName, maxVmsPerHost, drainTimeoutSeconds],
        ]) => ({
          region,
          firecrackerVersion,
          sha256,
          parameterName,
          parameterVersion,
          releaseVersion,
          bucketName,
          maxVmsPerHost,
          drainTimeoutSeconds,
          trustedProxyCidrs,
        }),
      )
      .apply((v) =>
        Buffer.from(
          renderHostUserData(
            fleetHostUserDataInput({
              region: v.region,
              firecrackerVersion: v.firecrackerVersion,
              ...(v.sha256 === undefined ? {} : { firecrackerTarballSha256: v.sha256 }),
              releaseParameterName: v.parameterName,
              ...(v.parameterVersion === undefined ? {} : { releaseParameterVersion: v.parameterVersion }),
              releaseVersion: v.releaseVersion,
              bucketName: v.bucketName,
              registryPrefix,
              maxVmsPerHost: v.maxVmsPerHost,
              drainTimeoutSeconds: v.drainTimeoutSeconds,
              lifecycleHookName: this.drainHookName,
              adminAccess: args.adminAccess ?? "none",
              functionEgress: args.functionEgress ?? false,
              trustedProxyCidrs: v.trustedProxyCidrs,
            }),
          ),
        ).toString("base64"),
      );

    const launchTemplate = new aws.ec2.LaunchTemplate(
      `${name}-launch-template`,
      {
        description: "snapfaas KVM host",
        imageId: args.amiId,
        instanceType: args.instanceType,
        ...(args.nestedVirtualization ? { cpuOptions: { nestedVirtualization: "enabled" } } : {}),
        iamInstanceProfile: { arn: profile.arn },
        vpcSecurityGroupIds: args.securityGroupIds,
        userData,
        updateDefaultVersion: true,
        metadataOptions: {
          httpEndpoint: "enabled",
          // IMDSv2 only, and one hop: a guest behind the host's NAT cannot reach the host's credentials.
          httpTokens: "required",
          httpPutResponseHopLimit: 1,
          // The agent reads its group name from the instance tags to complete the drain hook.
          instanceMetadataTags: "enabled",
        },
        blockDeviceMappings: [
          {
            deviceName: "/dev/xvda",
            ebs: {
              volumeSize: args.rootVolumeGiB ?? 100,
              volumeType: "gp3",
              encrypted: "true",
              deleteOnTermination: "true",
            },
          },
        ],
        tagSpecifications: [
          { resourceType: "instance", tags: { Name: `${name}-host`, "snapfaas:role": "kvm-host" } },
          { resourceType: "volume", tags: { Name: `${name}-host`, "snapfaas:role": "kvm-host" } },
        ],
      },
      { parent: this },
    );

    const group = new aws.autoscaling.Group(
      `${name}-group`,
      {
        minSize: args.minHosts,
        maxSize: args.maxHosts,
        desiredCapacity: args.desiredHosts,
        vpcZoneIdentifiers: args.subnetIds,
        targetGroupArns: args.targetGroupArns,
        // A host failing the load balancer's /healthz check is replaced, not just taken out of rotation.
        healthCheckType: "ELB",
        // Metal hosts take minutes to boot and install; do not judge them before that.
        healthCheckGracePeriod: 900,
        // Metal types often take more than the default 10 minutes to reach InService.
        waitForCapacityTimeout: "30m",
        launchTemplate: { id: launchTemplate.id, version: launchTemplate.latestVersion.apply(String) },
        instanceRefresh: {
          strategy: "Rolling",
          // Launch before terminate: a replacement is healthy before an old host goes, so a one-host stack
          // keeps serving through a release (at the cost of running up to twice the hosts meanwhile).
          preferences: { minHealthyPercentage: 100, maxHealthyPercentage: 200, instanceWarmup: "600" },
        },
        tags: [{ key: "Name", value: `${name}-host`, propagateAtLaunch: true }],
      },
      // Scaling owns the desired count once the group exists.
      { parent: this, ignoreChanges: ["desiredCapacity"] },
    );

    new aws.autoscaling.LifecycleHook(
      `${name}-drain-hook`,
      {
        name: this.drainHookName,
        autoscalingGroupName: group.name,
        lifecycleTransition: "autoscaling:EC2_INSTANCE_TERMINATING",
        heartbeatTimeout: args.drainTimeoutSeconds ?? 300,
        // When the agent never answers, the host goes anyway: a stuck drain must not block scale-in.
        defaultResult: "CONTINUE",
      },
      { parent: this },
    );
    new aws.iam.RolePolicy(
      `${name}-drain-policy`,
      {
        role: role.name,
        policy: group.arn.apply((groupArn) =>
          JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              {
                Sid: "CompleteOwnDrain",
                Effect: "Allow",
                Action: ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"],
                Resource: groupArn,
              },
            ],
          }),
        ),
      },
      { parent: this },
    );
    new aws.autoscaling.Policy(
      `${name}-pool-tracking`,
      {
        autoscalingGroupName: group.name,
        policyType: "TargetTrackingScaling",
        estimatedInstanceWarmup: 600,
        targetTrackingConfiguration: {
          targetValue: args.targetPoolUtilizationPercent ?? 70,
          customizedMetricSpecification: {
            namespace: METRIC_NAMESPACE,
            metricName: POOL_UTILIZATION_METRIC,
            statistic: "Average",
            unit: "Percent",
            metricDimensions: [{ name: "AutoScalingGroupName", value: group.name }],
          },
        },
      },
      { parent: this },
    );

    this.groupName = group.name;
    this.groupArn = group.arn;
    this.launchTemplateId = launchTemplate.id;
    this.roleName = role.name;
    this.registerOutputs({
      groupName: this.groupName,
      groupArn: this.groupArn,
      launchTemplateId: this.launchTemplateId,
      roleName: this.roleName,
    });
  }
}

/** What a host may do: read its release and artifacts, list the registry and base images, publish pool metrics. */
export function hostPolicyDocument(
  bucketArn: pulumi.Input<string>,
  releaseParameterArn: pulumi.Input<string>,
  registryPrefix: string,
): pulumi.Output<string> {
  return pulumi.all([bucketArn, releaseParameterArn]).apply(([bucket, parameter]) =>
    JSON.stringify({
      Version: "2012-10-17",
      Statement: [
        {
          Sid: "ReadReleasesImagesAndFunctions",
          Effect: "Allow",
          Action: "s3:GetObject",
          Resource: [`${bucket}/releases/*`, `${bucket}/images/*`, `${bucket}/${registryPrefix}*`],
        },
        {
          // The whole functions prefix, not only the records: without ListBucket S3 answers a missing
          // bundle with 403 AccessDenied, and the agent could not tell "deleted" from "forbidden".
          Sid: "ListFunctions",
          Effect: "Allow",
          Action: "s3:ListBucket",
          Resource: bucket,
          Condition: { StringLike: { "s3:prefix": [`${registryPrefix}*`] } },
        },
        {
          // The boot script copies a base image folder (aws s3 cp --recursive), which lists it first.
          Sid: "ListBaseImages",
          Effect: "Allow",
          Action: "s3:ListBucket",
          Resource: bucket,
          Condition: { StringLike: { "s3:prefix": ["images/*"] } },
        },
        { Sid: "ReadReleaseManifest", Effect: "Allow", Action: "ssm:GetParameter", Resource: parameter },
        {
          Sid: "PublishPoolMetrics",
          Effect: "Allow",
          Action: "cloudwatch:PutMetricData",
          // PutMetricData has no resource ARNs; the namespace condition is what limits it.
          Resource: "*",
          Condition: { StringEquals: { "cloudwatch:namespace": METRIC_NAMESPACE } },
        },
      ],
    }),
  );
}

/** The fleet's fixed choices around what varies per stack: ports, uid range, slot range, metric. */
export interface FleetUserDataValues {
  readonly region: string;
  readonly firecrackerVersion: string;
  readonly firecrackerTarballSha256?: string;
  readonly releaseParameterName: string;
  readonly releaseParameterVersion?: number;
  readonly releaseVersion: string;
  readonly bucketName: string;
  readonly registryPrefix: string;
  readonly maxVmsPerHost: number;
  readonly drainTimeoutSeconds: number;
  readonly lifecycleHookName: string;
  readonly adminAccess: "vpc" | "none";
  readonly functionEgress?: boolean;
  readonly trustedProxyCidrs?: readonly string[];
}

/** The boot script's input for one fleet host: pure, so the rehearsal renders exactly what hosts get. */
export function fleetHostUserDataInput(values: FleetUserDataValues): HostUserDataInput {
  return {
    region: values.region,
    firecrackerVersion: values.firecrackerVersion,
    ...(values.firecrackerTarballSha256 === undefined
      ? {}
      : { firecrackerTarballSha256: values.firecrackerTarballSha256 }),
    releaseParameterName: values.releaseParameterName,
    ...(values.releaseParameterVersion === undefined
      ? {}
      : { releaseParameterVersion: values.releaseParameterVersion }),
    releaseVersion: values.releaseVersion,
    bucketName: values.bucketName,
    registryPrefix: values.registryPrefix,
    dataPort: DATA_PORT,
    adminPort: ADMIN_PORT,
    jailerUidStart: JAILER_UID_START,
    jailerUidCount: values.maxVmsPerHost,
    networkSlots: values.maxVmsPerHost,
    slotCidr: "10.200.0.0/16",
    lifecycleHookName: values.lifecycleHookName,
    drainTimeoutSeconds: values.drainTimeoutSeconds,
    metricNamespace: METRIC_NAMESPACE,
    adminAccess: values.adminAccess,
    ...(values.functionEgress ? { functionEgress: true } : {}),
    ...(values.trustedProxyCidrs && values.trustedProxyCidrs.length > 0
      ? { trustedProxyCidrs: values.trustedProxyCidrs }
      : {}),
  };
}

function validateFleetArgs(args: KvmHostFleetArgs): void {
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  const check = checkKvmInstanceType(args.instanceType, args.nestedVirtualization ?? false);
  if (Array.isArray(args.trustedProxyCidrs)) {
    args.trustedProxyCidrs.forEach((cidr, i) => {
      const problem = typeof cidr === "string" ? addressRangeProblem(cidr) : undefined;
      if (problem) errors.push({ propertyPath: `trustedProxyCidrs[${i}]`, reason: problem });
    });
  }
  if (!check.ok) errors.push({ propertyPath: "instanceType", reason: check.reason });
  const { minHosts, maxHosts, desiredHosts } = args;
  if (typeof minHosts === "number" && typeof maxHosts === "number" && minHosts > maxHosts) {
    errors.push({ propertyPath: "minHosts", reason: `must be <= maxHosts (${maxHosts})` });
  }
  if (
    typeof desiredHosts === "number" &&
    typeof minHosts === "number" &&
    typeof maxHosts === "number" &&
    (desiredHosts < minHosts || desiredHosts > maxHosts)
  ) {
    errors.push({ propertyPath: "desiredHosts", reason: `must be between minHosts and maxHosts` });
  }
  if (args.registryPrefix !== undefined && !REGISTRY_PREFIX.test(args.registryPrefix)) {
    errors.push({
      propertyPath: "registryPrefix",
      reason: 'must be empty or end in "/" (e.g. "functions/")',
    });
  }
  if (errors.length > 0)
    throw new pulumi.InputPropertiesError({ message: "Invalid arguments for KvmHostFleet", errors });
}
