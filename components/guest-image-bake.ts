import { existsSync } from "node:fs";
import * as aws from "@pulumi/aws";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { baseImagePrefix } from "../contracts/release-manifest.ts";
import { assumeRolePolicy } from "./assume-role.ts";
import {
  BAKE_SOURCES_REMOTE_PATH,
  type BakeGuest,
  BUILDER_USER,
  renderBakeCommand,
  renderBakeScript,
} from "./bake-script.ts";
import { checkKvmInstanceType } from "./instance-types.ts";

/**
 * Canonical's public SSM parameter for the current Ubuntu 24.04 AMI: the bake's recipes and OSv's
 * build use apt-get, which the fleet's Amazon Linux lacks. The builder's OS does not shape the
 * snapshot; its CPU does (same instance type as the fleet) and the hosts' AMI does (a base version
 * input).
 */
export const BUILDER_AMI_PARAMETER =
  "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id";

export interface GuestImageBakeArgs {
  bucketName: pulumi.Input<string>;
  bucketArn: pulumi.Input<string>;
  region: pulumi.Input<string>;
  /**
   * The base version this bake makes, computed by the stack with the bake's own rule
   * (guest-images/bake/firecracker-job.ts firecrackerBaseVersion): a new version re-runs the bake
   * on a fresh builder, and the bake fails unless it makes exactly this version.
   */
  baseImageVersion: pulumi.Input<string>;
  /** Local path of the sources tarball (components/bake-sources.ts), sent as a FileAsset. */
  sourcesTarball: string;
  guest: BakeGuest;
  /** The VM shape the snapshot fixes: the stack's vm.vcpus and vm.memoryMiB. */
  vcpus: pulumi.Input<number>;
  memoryMiB: pulumi.Input<number>;
  /** The fleet's pinned AMI, recorded in the base version. */
  hostAmi: pulumi.Input<string>;
  /** Known at construction: the fleet's instance type (a snapshot restores only on the CPU it was taken on). */
  builderInstanceType: string;
  nestedVirtualization?: boolean;
  /** The builder's own image: Ubuntu 24.04 (BUILDER_AMI_PARAMETER). */
  amiId: pulumi.Input<string>;
  vpcId: pulumi.Input<string>;
  /** A public subnet: `pulumi up` reaches the builder over SSH. */
  subnetId: pulumi.Input<string>;
  sshKeyName: pulumi.Input<string>;
  sshPrivateKey: pulumi.Input<string>;
  /** The only source allowed to reach port 22, e.g. the operator's address /32. */
  sshIngressCidr: pulumi.Input<string>;
}

/**
 * Bakes the base snapshot on a KVM builder host of the fleet's type and uploads it under
 * images/<base version>/ in the artifact store. A new base version replaces the builder and re-runs
 * the bake; the bake exits early when that version's manifest is already uploaded, and stops the
 * builder when it is done.
 */
export class GuestImageBake extends pulumi.ComponentResource {
  public readonly baseImageVersion: pulumi.Output<string>;
  public readonly artifactsPrefix: pulumi.Output<string>;
  public readonly builderPublicIp: pulumi.Output<string>;

  constructor(name: string, args: GuestImageBakeArgs, opts?: pulumi.ComponentResourceOptions) {
    const check = checkKvmInstanceType(args.builderInstanceType, args.nestedVirtualization ?? false);
    if (!check.ok) {
      throw new pulumi.InputPropertiesError({
        message: "Invalid arguments for GuestImageBake",
        errors: [{ propertyPath: "builderInstanceType", reason: check.reason }],
      });
    }
    if (!existsSync(args.sourcesTarball)) {
      throw new pulumi.InputPropertiesError({
        message: "Invalid arguments for GuestImageBake",
        errors: [{ propertyPath: "sourcesTarball", reason: `${args.sourcesTarball} does not exist` }],
      });
    }
    super("snapfaas:index:GuestImageBake", name, {}, opts);

    const sshGroup = new aws.ec2.SecurityGroup(
      `${name}-ssh-sg`,
      {
        vpcId: args.vpcId,
        description: "snapfaas bake builder: SSH from the operator only",
        ingress: [
          {
            protocol: "tcp",
            fromPort: 22,
            toPort: 22,
            cidrBlocks: [args.sshIngressCidr],
            description: "operator SSH",
          },
        ],
        egress: [
          { protocol: "-1", fromPort: 0, toPort: 0, cidrBlocks: ["0.0.0.0/0"], description: "downloads" },
        ],
      },
      { parent: this },
    );
    const role = new aws.iam.Role(
      `${name}-role`,
      {
        description: "snapfaas bake builder",
        assumeRolePolicy: assumeRolePolicy("ec2.amazonaws.com"),
      },
      { parent: this },
    );
    new aws.iam.RolePolicy(
      `${name}-policy`,
      {
        role: role.name,
        policy: pulumi.output(args.bucketArn).apply((bucket) =>
          JSON.stringify({
            Version: "2012-10-17",
            Statement: [
              {
                Sid: "WriteBakedImages",
                Effect: "Allow",
                Action: ["s3:GetObject", "s3:PutObject"],
                Resource: `${bucket}/images/*`,
              },
              {
                Sid: "CheckBakedImages",
                Effect: "Allow",
                Action: "s3:ListBucket",
                Resource: bucket,
                Condition: { StringLike: { "s3:prefix": ["images/*"] } },
              },
            ],
          }),
        ),
      },
      { parent: this },
    );
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name }, { parent: this });

    const builder = new aws.ec2.Instance(
      `${name}-builder`,
      {
        ami: args.amiId,
        instanceType: args.builderInstanceType,
        // One builder per base version: a new version launches a fresh one (the old one is stopped).
        userData: pulumi.interpolate`#!/bin/bash\n# snapfaas bake builder for base ${args.baseImageVersion}\n`,
        userDataReplaceOnChange: true,
        // The bake stops the builder when it is done; it is not terminated, so its cache survives.
        instanceInitiatedShutdownBehavior: "stop",
        ...(args.nestedVirtualization ? { cpuOptions: { nestedVirtualization: "enabled" } } : {}),
        subnetId: args.subnetId,
        associatePublicIpAddress: true,
        vpcSecurityGroupIds: [sshGroup.id],
        keyName: args.sshKeyName,
        iamInstanceProfile: profile.name,
        metadataOptions: { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: 1 },
        rootBlockDevice: { volumeSize: 100, volumeType: "gp3", encrypted: true, deleteOnTermination: true },
        tags: { Name: `${name}-builder`, "snapfaas:role": "bake-builder" },
      },
      // A newer Ubuntu AMI is no reason for a new metal builder: the builder's OS is no base input.
      { parent: this, ignoreChanges: ["ami"] },
    );

    // A fixed address: the bake stops the builder, and a stopped instance loses its public IP, so a
    // refresh would otherwise change the connection and make the next `up` dial nobody.
    const address = new aws.ec2.Eip(
      `${name}-builder-ip`,
      { domain: "vpc", instance: builder.id, tags: { Name: `${name}-builder` } },
      { parent: this },
    );
    const connection: command.types.input.remote.ConnectionArgs = {
      host: address.publicIp,
      user: BUILDER_USER,
      privateKey: args.sshPrivateKey,
      // Metal instances take several minutes before sshd answers.
      dialErrorLimit: 120,
      perDialTimeout: 10,
    };
    // The tarball holds only files the base version hashes, so it changes exactly when the version does.
    const upload = new command.remote.CopyToRemote(
      `${name}-upload-sources`,
      {
        connection,
        // CopyToRemote takes path-based sources only (FileAsset, FileArchive of a path).
        source: new pulumi.asset.FileAsset(args.sourcesTarball),
        remotePath: BAKE_SOURCES_REMOTE_PATH,
        triggers: [args.baseImageVersion],
      },
      { parent: this },
    );
    const script = pulumi
      .all([args.bucketName, args.region, args.baseImageVersion, args.vcpus, args.memoryMiB, args.hostAmi])
      .apply(([bucketName, region, baseVersion, vcpus, memoryMiB, hostAmi]) =>
        renderBakeCommand(
          renderBakeScript({ bucketName, region, baseVersion, guest: args.guest, vcpus, memoryMiB, hostAmi }),
        ),
      );
    const bake = new command.remote.Command(
      `${name}-bake`,
      {
        connection,
        create: script,
        // The version is the only trigger: same base, no new bake.
        triggers: [args.baseImageVersion],
      },
      { parent: this, dependsOn: [upload] },
    );

    // Read through the command so consumers of the version wait for the upload.
    this.baseImageVersion = pulumi.all([bake.stdout, args.baseImageVersion]).apply(([, version]) => version);
    this.artifactsPrefix = this.baseImageVersion.apply(baseImagePrefix);
    this.builderPublicIp = address.publicIp;
    this.registerOutputs({
      baseImageVersion: this.baseImageVersion,
      artifactsPrefix: this.artifactsPrefix,
      builderPublicIp: this.builderPublicIp,
    });
  }
}
