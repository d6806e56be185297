import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { DEFAULT_REGISTRY_PREFIX } from "../contracts/registry-layout.ts";
import { ArtifactStore } from "./artifact-store.ts";
import type { BakeGuest } from "./bake-script.ts";
import { BenchmarkLambda } from "./benchmark-lambda.ts";
import { sshSourceCidrProblem } from "./cidr-rules.ts";
import type { PoolSettings } from "./config.ts";
import { Gateway } from "./gateway.ts";
import { BUILDER_AMI_PARAMETER, GuestImageBake } from "./guest-image-bake.ts";
import { HostAgentRelease } from "./host-agent-release.ts";
import { KvmHostFleet } from "./kvm-host-fleet.ts";
import { Network } from "./network.ts";

/** Amazon Linux 2023 (kernel 6.1, a Firecracker-supported host kernel, cgroup v2, AWS CLI included). */
export const HOST_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64";

/** Where the platform's hosts read functions: the registry contract's default prefix. */
export const REGISTRY_PREFIX = DEFAULT_REGISTRY_PREFIX;

export interface FaasPlatformArgs {
  region: pulumi.Input<string>;
  // Network
  availabilityZones: string[];
  vpcCidr?: pulumi.Input<string>;
  existingVpcId?: pulumi.Input<string>;
  existingPublicSubnetIds?: pulumi.Input<string>[];
  existingPrivateSubnetIds?: pulumi.Input<string>[];
  adminAccess?: "vpc" | "none";
  /** Hosts offer functions deployed with egress NAT out and DNS (default false: none can have it). */
  functionEgress?: boolean;
  // Gateway
  gatewayKind?: "alb" | "nlb";
  certificateArn?: pulumi.Input<string>;
  ingressCidrs?: pulumi.Input<string>[];
  // Fleet
  instanceType: string;
  nestedVirtualization?: boolean;
  minHosts: pulumi.Input<number>;
  maxHosts: pulumi.Input<number>;
  desiredHosts: pulumi.Input<number>;
  rootVolumeGiB?: pulumi.Input<number>;
  targetPoolUtilizationPercent?: pulumi.Input<number>;
  drainTimeoutSeconds?: pulumi.Input<number>;
  /**
   * The host AMI; by default the current Amazon Linux 2023 image from SSM. Required with the bake:
   * it is a base version input (the stack pins it in versions.hostAmi).
   */
  amiId?: pulumi.Input<string>;
  // Release
  firecrackerVersion: pulumi.Input<string>;
  firecrackerTarballSha256?: pulumi.Input<string>;
  agentVersion: pulumi.Input<string>;
  agentEntry?: pulumi.Input<string>;
  guestRuntimeEntry?: pulumi.Input<string>;
  poolSettings: pulumi.Input<PoolSettings>;
  /** Base image to run when nothing is baked here (bakeEnabled false). */
  baseImageVersion?: pulumi.Input<string>;
  // Bake
  bakeEnabled?: boolean;
  /**
   * The base version the bake makes, computed with the bake's own rule (firecrackerBaseVersion) from
   * the same guest, VM shape (poolSettings.vm) and host AMI (amiId) given here.
   */
  bakeBaseImageVersion?: pulumi.Input<string>;
  /** Local path of the bake sources tarball (components/bake-sources.ts). */
  bakeSourcesTarball?: string;
  /** Guest of the base; "linux" unless set ("osv" is experimental). */
  bakeGuest?: BakeGuest;
  bakeSshKeyName?: pulumi.Input<string>;
  bakeSshPrivateKey?: pulumi.Input<string>;
  bakeSshIngressCidr?: pulumi.Input<string>;
  // Benchmark
  benchmark?: boolean;
  /** ALB idle timeout, seconds; set above the call timeout. */
  idleTimeoutSeconds?: pulumi.Input<number>;
}

const BAKE_KEYS = [
  "amiId",
  "bakeBaseImageVersion",
  "bakeSourcesTarball",
  "bakeSshKeyName",
  "bakeSshPrivateKey",
  "bakeSshIngressCidr",
] as const;

/** The whole platform from one set of args: network, artifact store, bake, release, gateway and fleet. */
export class FaasPlatform extends pulumi.ComponentResource {
  public readonly endpointUrl: pulumi.Output<string>;
  public readonly bucketName: pulumi.Output<string>;
  public readonly groupName: pulumi.Output<string>;
  public readonly releaseVersion: pulumi.Output<string>;
  public readonly baseImageVersion: pulumi.Output<string>;
  /** The benchmark Lambda's URL, when `benchmark` is on. */
  public readonly benchmarkUrl: pulumi.Output<string | undefined>;

  constructor(name: string, args: FaasPlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    validatePlatformArgs(args);
    super("snapfaas:index:FaasPlatform", name, {}, opts);
    const stack = pulumi.getStack();

    const amiId =
      args.amiId ?? aws.ssm.getParameterOutput({ name: HOST_AMI_PARAMETER }, { parent: this }).value;
    const listenerPort = args.certificateArn !== undefined ? 443 : 80;

    const network = new Network(
      `${name}-network`,
      {
        region: args.region,
        availabilityZones: args.availabilityZones,
        ...(args.vpcCidr === undefined ? {} : { vpcCidr: args.vpcCidr }),
        ...(args.existingVpcId === undefined
          ? {}
          : {
              existingVpcId: args.existingVpcId,
              ...(args.existingPublicSubnetIds
                ? { existingPublicSubnetIds: args.existingPublicSubnetIds }
                : {}),
              ...(args.existingPrivateSubnetIds
                ? { existingPrivateSubnetIds: args.existingPrivateSubnetIds }
                : {}),
            }),
        listenerPort,
        ingressCidrs: args.ingressCidrs ?? ["0.0.0.0/0"],
        adminAccess: args.adminAccess ?? "none",
        // Hosts and the builder (in the first public subnet, of the fleet's type) must be launchable in
        // every zone.
        instanceTypes: [args.instanceType],
      },
      { parent: this },
    );
    const artifacts = new ArtifactStore(`${name}-artifacts`, {}, { parent: this });

    let baseImageVersion: pulumi.Output<string>;
    if (args.bakeEnabled) {
      const bake = new GuestImageBake(
        `${name}-bake`,
        {
          bucketName: artifacts.bucketName,
          bucketArn: artifacts.bucketArn,
          region: args.region,
          baseImageVersion: args.bakeBaseImageVersion!,
          sourcesTarball: args.bakeSourcesTarball!,
          guest: args.bakeGuest ?? "linux",
          // The release's VM shape and the fleet's AMI and CPU: what the snapshot is taken for.
          vcpus: pulumi.output(args.poolSettings).apply((s) => s.vm.vcpus),
          memoryMiB: pulumi.output(args.poolSettings).apply((s) => s.vm.memoryMiB),
          hostAmi: args.amiId!,
          builderInstanceType: args.instanceType,
          ...(args.nestedVirtualization === undefined
            ? {}
            : { nestedVirtualization: args.nestedVirtualization }),
          amiId: aws.ssm.getParameterOutput({ name: BUILDER_AMI_PARAMETER }, { parent: this }).value,
          vpcId: network.vpcId,
          subnetId: network.publicSubnetIds.apply((ids) => ids[0]!),
          sshKeyName: args.bakeSshKeyName!,
          sshPrivateKey: pulumi.secret(args.bakeSshPrivateKey!),
          sshIngressCidr: args.bakeSshIngressCidr!,
        },
        { parent: this },
      );
      baseImageVersion = bake.baseImageVersion;
    } else {
      baseImageVersion = pulumi.output(args.baseImageVersion!);
    }

    const release = new HostAgentRelease(
      `${name}-release`,
      {
        bucketName: artifacts.bucketName,
        ...(args.agentEntry === undefined ? {} : { agentEntry: args.agentEntry }),
        ...(args.guestRuntimeEntry === undefined ? {} : { guestRuntimeEntry: args.guestRuntimeEntry }),
        agentVersion: args.agentVersion,
        baseImageVersion,
        firecrackerVersion: args.firecrackerVersion,
        poolSettings: args.poolSettings,
        parameterName: `/snapfaas/${stack}/${name}/release`,
      },
      { parent: this },
    );
    const gateway = new Gateway(
      `${name}-gateway`,
      {
        kind: args.gatewayKind ?? "alb",
        vpcId: network.vpcId,
        subnetIds: network.publicSubnetIds,
        securityGroupId: network.loadBalancerSecurityGroupId,
        ...(args.certificateArn === undefined ? {} : { certificateArn: args.certificateArn }),
        ...(args.idleTimeoutSeconds === undefined ? {} : { idleTimeoutSeconds: args.idleTimeoutSeconds }),
      },
      { parent: this },
    );
    const fleet = new KvmHostFleet(
      `${name}-fleet`,
      {
        instanceType: args.instanceType,
        nestedVirtualization: args.nestedVirtualization ?? false,
        amiId,
        region: args.region,
        subnetIds: network.privateSubnetIds,
        securityGroupIds: [network.hostSecurityGroupId],
        targetGroupArns: [gateway.targetGroupArn],
        // An ALB names the client in X-Forwarded-For; only it reaches the data port (the host group
        // admits the load balancer's group), so its VPC range is trusted. An NLB keeps the client's
        // own address as the agent's peer: nothing to trust.
        ...((args.gatewayKind ?? "alb") === "alb" ? { trustedProxyCidrs: [network.vpcCidr] } : {}),
        bucketName: artifacts.bucketName,
        bucketArn: artifacts.bucketArn,
        registryPrefix: REGISTRY_PREFIX,
        releaseParameterName: release.parameterName,
        releaseParameterArn: release.parameterArn,
        releaseParameterVersion: release.parameterVersion,
        releaseVersion: release.releaseVersion,
        adminAccess: args.adminAccess ?? "none",
        functionEgress: args.functionEgress ?? false,
        firecrackerVersion: args.firecrackerVersion,
        ...(args.firecrackerTarballSha256 === undefined
          ? {}
          : { firecrackerTarballSha256: args.firecrackerTarballSha256 }),
        minHosts: args.minHosts,
        maxHosts: args.maxHosts,
        desiredHosts: args.desiredHosts,
        ...(args.rootVolumeGiB === undefined ? {} : { rootVolumeGiB: args.rootVolumeGiB }),
        ...(args.targetPoolUtilizationPercent === undefined
          ? {}
          : { targetPoolUtilizationPercent: args.targetPoolUtilizationPercent }),
        ...(args.drainTimeoutSeconds === undefined ? {} : { drainTimeoutSeconds: args.drainTimeoutSeconds }),
        maxVmsPerHost: pulumi.output(args.poolSettings).apply((s) => s.pool.maxInstances),
      },
      { parent: this },
    );

    let benchmarkUrl: pulumi.Output<string | undefined> = pulumi.output(undefined);
    if (args.benchmark) {
      const lambda = new BenchmarkLambda(
        `${name}-benchmark`,
        { memoryMiB: pulumi.output(args.poolSettings).apply((s) => s.vm.memoryMiB) },
        { parent: this },
      );
      benchmarkUrl = lambda.functionUrl;
    }

    this.endpointUrl = gateway.endpointUrl;
    this.bucketName = artifacts.bucketName;
    this.groupName = fleet.groupName;
    this.releaseVersion = release.releaseVersion;
    this.baseImageVersion = baseImageVersion;
    this.benchmarkUrl = benchmarkUrl;
    this.registerOutputs({
      endpointUrl: this.endpointUrl,
      bucketName: this.bucketName,
      groupName: this.groupName,
      releaseVersion: this.releaseVersion,
      baseImageVersion: this.baseImageVersion,
      benchmarkUrl: this.benchmarkUrl,
    });
  }
}

function validatePlatformArgs(args: FaasPlatformArgs): void {
  const errors: pulumi.InputPropertyErrorDetails[] = [];
  if (args.bakeEnabled) {
    for (const key of BAKE_KEYS) {
      if (args[key] === undefined)
        errors.push({ propertyPath: key, reason: "is required when bakeEnabled is true" });
    }
    // A placeholder left in the stack file would have Pulumi dial the builder for half an hour.
    const ssh = args.bakeSshIngressCidr;
    const problem = typeof ssh === "string" ? sshSourceCidrProblem(ssh) : undefined;
    if (problem) errors.push({ propertyPath: "bakeSshIngressCidr", reason: problem });
  } else if (args.baseImageVersion === undefined) {
    errors.push({ propertyPath: "baseImageVersion", reason: "is required when bakeEnabled is false" });
  }
  if (errors.length > 0)
    throw new pulumi.InputPropertiesError({ message: "Invalid arguments for FaasPlatform", errors });
}
