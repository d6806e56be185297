/**
 * What `pulumi up` builds for a stack: validated config in, FaasPlatform (AWS) or LocalAgent (local) out.
 * index.ts calls this with the engine's config; tests call it with each stack file's config under mocks.
 */
import { join, resolve } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { firecrackerBaseVersion } from "../guest-images/bake/firecracker-job.ts";
import { bakeSourcesTarball } from "./bake-sources.ts";
import { isAwsStack, parseStackConfig, StackConfigError } from "./config.ts";
import { FaasPlatform } from "./faas-platform.ts";
import { LocalAgent } from "./local-agent.ts";

export interface StackProgramOptions {
  /** Repository root: where host-agent/, guest-images/ and package.json are. */
  readonly repoRoot: string;
}

export interface StackOutputs {
  mode: "aws" | "local";
  endpointUrl: pulumi.Output<string>;
  bucketName?: pulumi.Output<string>;
  groupName?: pulumi.Output<string>;
  releaseVersion?: pulumi.Output<string>;
  baseImageVersion?: pulumi.Output<string>;
  benchmarkUrl?: pulumi.Output<string | undefined>;
}

export async function buildStack(
  flat: Readonly<Record<string, string>>,
  options: StackProgramOptions,
): Promise<StackOutputs> {
  const config = parseStackConfig(flat);
  const settings = { pool: config.pool, vm: config.vm, limits: config.limits };

  if (config.mode === "local") {
    const agent = new LocalAgent("snapfaas", {
      repoDir: resolve(options.repoRoot, config.local.repoDir),
      port: config.local.port,
      settings,
    });
    return { mode: "local", endpointUrl: agent.endpointUrl };
  }

  if (!isAwsStack(config)) throw new Error("unreachable: aws sections are validated by parseStackConfig");
  const region = flat["aws:region"];
  if (!region)
    throw new StackConfigError([
      'aws:region: is required when mode is "aws" (pulumi config set aws:region us-east-1)',
    ]);

  const { fleet, network, versions, gateway, bake } = config;
  const bakeEnabled = bake?.enabled ?? false;
  // The base version is computed here with the bake's own rule, from the same inputs the builder gets:
  // preview knows it, and the bake fails unless it makes exactly this one.
  const baked =
    bake && bakeEnabled
      ? {
          version: await firecrackerBaseVersion({
            guest: bake.guest,
            repoDir: options.repoRoot,
            machine: { vcpus: config.vm.vcpus, memMiB: config.vm.memoryMiB },
            hostAmi: versions.hostAmi,
          }),
          tarball: await bakeSourcesTarball(options.repoRoot),
        }
      : undefined;

  const platform = new FaasPlatform("snapfaas", {
    region,
    availabilityZones: network.availabilityZones,
    vpcCidr: network.vpcCidr,
    ...(network.existingVpcId === undefined
      ? {}
      : {
          existingVpcId: network.existingVpcId,
          ...(network.existingPublicSubnetIds
            ? { existingPublicSubnetIds: network.existingPublicSubnetIds }
            : {}),
          ...(network.existingPrivateSubnetIds
            ? { existingPrivateSubnetIds: network.existingPrivateSubnetIds }
            : {}),
        }),
    adminAccess: network.adminAccess,
    functionEgress: network.functionEgress,
    gatewayKind: gateway.kind,
    ...(gateway.certificateArn === undefined ? {} : { certificateArn: gateway.certificateArn }),
    ingressCidrs: gateway.ingressCidrs,
    // The load balancer must not cut a call the platform still allows.
    idleTimeoutSeconds: Math.ceil(config.limits.callTimeoutMs / 1000) + 5,
    instanceType: fleet.instanceType,
    nestedVirtualization: fleet.nestedVirtualization,
    minHosts: fleet.minHosts,
    maxHosts: fleet.maxHosts,
    desiredHosts: fleet.desiredHosts,
    rootVolumeGiB: fleet.rootVolumeGiB,
    targetPoolUtilizationPercent: fleet.targetPoolUtilizationPercent,
    drainTimeoutSeconds: fleet.drainTimeoutSeconds,
    amiId: versions.hostAmi,
    firecrackerVersion: versions.firecracker,
    ...(versions.firecrackerTarballSha256 === undefined
      ? {}
      : { firecrackerTarballSha256: versions.firecrackerTarballSha256 }),
    agentVersion: versions.agent,
    agentEntry: join(options.repoRoot, "host-agent", "main.ts"),
    guestRuntimeEntry: join(options.repoRoot, "guest-images", "runtime", "main.ts"),
    poolSettings: settings,
    ...(versions.baseImage === undefined ? {} : { baseImageVersion: versions.baseImage }),
    bakeEnabled,
    ...(bake && baked
      ? {
          bakeBaseImageVersion: baked.version,
          bakeSourcesTarball: baked.tarball.file,
          bakeGuest: bake.guest,
          bakeSshKeyName: bake.sshKeyName,
          bakeSshPrivateKey: pulumi.secret(config.bakeSshPrivateKey ?? ""),
          bakeSshIngressCidr: bake.sshIngressCidr,
        }
      : {}),
    benchmark: config.benchmark,
  });

  return {
    mode: "aws",
    endpointUrl: platform.endpointUrl,
    bucketName: platform.bucketName,
    groupName: platform.groupName,
    releaseVersion: platform.releaseVersion,
    baseImageVersion: platform.baseImageVersion,
    benchmarkUrl: platform.benchmarkUrl,
  };
}
