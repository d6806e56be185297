import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { ReleaseManifest } from "../contracts/release-manifest.ts";
import { bundleNodeEntry, bundleObjectKey } from "./bundle.ts";
import type { PoolSettings } from "./config.ts";
import { buildReleaseManifest } from "./release-manifest.ts";

export interface HostAgentReleaseArgs {
  bucketName: pulumi.Input<string>;
  /** Host agent entry point, bundled with esbuild. Default "host-agent/main.ts". */
  agentEntry?: pulumi.Input<string>;
  /** Guest runtime entry point, bundled with esbuild. Default "guest-images/runtime/main.ts". */
  guestRuntimeEntry?: pulumi.Input<string>;
  agentVersion: pulumi.Input<string>;
  baseImageVersion: pulumi.Input<string>;
  firecrackerVersion: pulumi.Input<string>;
  poolSettings: pulumi.Input<PoolSettings>;
  /** SSM parameter name hosts read the manifest from, e.g. "/snapfaas/prod/release". */
  parameterName: pulumi.Input<string>;
}

/**
 * One release of what runs on a host: the host agent and the guest runtime as content-addressed bundles
 * in the artifact store, and the manifest naming them (plus base image and pool settings) in SSM.
 */
export class HostAgentRelease extends pulumi.ComponentResource {
  public readonly releaseVersion: pulumi.Output<string>;
  public readonly manifest: pulumi.Output<ReleaseManifest>;
  public readonly parameterName: pulumi.Output<string>;
  public readonly parameterArn: pulumi.Output<string>;
  /** SSM's version number of the parameter holding this release (it grows with every new value). */
  public readonly parameterVersion: pulumi.Output<number>;
  public readonly agentKey: pulumi.Output<string>;
  public readonly guestRuntimeKey: pulumi.Output<string>;

  constructor(name: string, args: HostAgentReleaseArgs, opts?: pulumi.ComponentResourceOptions) {
    super("snapfaas:index:HostAgentRelease", name, {}, opts);

    const agent = pulumi.output(args.agentEntry ?? "host-agent/main.ts").apply(bundleNodeEntry);
    const runtime = pulumi
      .output(args.guestRuntimeEntry ?? "guest-images/runtime/main.ts")
      .apply(bundleNodeEntry);

    const agentObject = new aws.s3.BucketObjectv2(
      `${name}-agent-bundle`,
      {
        bucket: args.bucketName,
        key: agent.apply((b) => bundleObjectKey("host-agent", b.sha256)),
        source: agent.apply((b) => new pulumi.asset.StringAsset(b.text)),
        contentType: "text/javascript",
      },
      { parent: this },
    );
    const runtimeObject = new aws.s3.BucketObjectv2(
      `${name}-guest-runtime-bundle`,
      {
        bucket: args.bucketName,
        key: runtime.apply((b) => bundleObjectKey("guest-runtime", b.sha256)),
        source: runtime.apply((b) => new pulumi.asset.StringAsset(b.text)),
        contentType: "text/javascript",
      },
      { parent: this },
    );

    this.manifest = pulumi
      .all([
        agent,
        runtime,
        args.agentVersion,
        args.baseImageVersion,
        args.firecrackerVersion,
        args.poolSettings,
      ])
      .apply(([agentBundle, runtimeBundle, agentVersion, baseImageVersion, firecrackerVersion, config]) =>
        buildReleaseManifest({
          agentVersion,
          baseImageVersion,
          firecrackerVersion,
          agent: { key: bundleObjectKey("host-agent", agentBundle.sha256), sha256: agentBundle.sha256 },
          guestRuntime: {
            key: bundleObjectKey("guest-runtime", runtimeBundle.sha256),
            sha256: runtimeBundle.sha256,
          },
          config,
        }),
      );

    const parameter = new aws.ssm.Parameter(
      `${name}-manifest`,
      {
        name: args.parameterName,
        type: "String",
        tier: "Standard",
        value: this.manifest.apply((m) => JSON.stringify(m)),
        description: "snapfaas release manifest read by every host at boot",
      },
      // Hosts must never read a manifest whose bundles are not uploaded yet.
      { parent: this, dependsOn: [agentObject, runtimeObject] },
    );

    this.releaseVersion = this.manifest.apply((m) => m.releaseVersion);
    this.parameterName = parameter.name;
    this.parameterArn = parameter.arn;
    this.parameterVersion = parameter.version;
    this.agentKey = agentObject.key;
    this.guestRuntimeKey = runtimeObject.key;
    this.registerOutputs({
      releaseVersion: this.releaseVersion,
      manifest: this.manifest,
      parameterName: this.parameterName,
      parameterArn: this.parameterArn,
      parameterVersion: this.parameterVersion,
      agentKey: this.agentKey,
      guestRuntimeKey: this.guestRuntimeKey,
    });
  }
}
