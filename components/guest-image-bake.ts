import * as aws from "@pulumi/aws";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { assumeRolePolicy } from "./assume-role.ts";
import { renderBakeScript } from "./bake-script.ts";
import { checkKvmInstanceType } from "./instance-types.ts";

export const BAKE_SOURCE_DIR = "/home/ec2-user/snapfaas-src";

export interface GuestImageBakeArgs {
  bucketName: pulumi.Input<string>;
  bucketArn: pulumi.Input<string>;
  region: pulumi.Input<string>;
  /** Content hash of the recipe: the base image version; a new hash re-runs the bake. */
  recipeHash: pulumi.Input<string>;
  /** Repository files the bake needs (package.json, lockfile, guest-images/...), copied to the builder. */
  sources: pulumi.Input<pulumi.asset.Archive>;
  /** Overrides of the recipe's OSv and Node pins; absent means the recipe decides. */
  osvRef?: pulumi.Input<string>;
  nodeVersion?: pulumi.Input<string>;
  /** Known at construction: the builder boots Firecracker, so it needs KVM too. */
  builderInstanceType: string;
  nestedVirtualization?: boolean;
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
 * Bakes the OSv + Node base snapshot on a KVM builder host and uploads the artifacts under
 * images/<recipe hash>/ in the artifact store. The command re-runs only when the recipe hash changes and
 * exits early when that hash's artifacts are already uploaded.
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
      { parent: this },
    );

    const connection: command.types.input.remote.ConnectionArgs = {
      host: builder.publicIp,
      user: "ec2-user",
      privateKey: args.sshPrivateKey,
      // Metal instances take several minutes before sshd answers.
      dialErrorLimit: 120,
      perDialTimeout: 10,
    };
    const upload = new command.remote.CopyToRemote(
      `${name}-upload-sources`,
      { connection, source: args.sources, remotePath: BAKE_SOURCE_DIR, triggers: [args.recipeHash] },
      { parent: this },
    );
    const script = pulumi
      .all([args.bucketName, args.recipeHash, args.region, args.nodeVersion, args.osvRef])
      .apply(([bucketName, recipeHash, region, nodeVersion, osvRef]) =>
        renderBakeScript({
          bucketName,
          recipeHash,
          region,
          sourceDir: BAKE_SOURCE_DIR,
          ...(nodeVersion === undefined ? {} : { nodeVersion }),
          ...(osvRef === undefined ? {} : { osvRef }),
        }),
      );
    const bake = new command.remote.Command(
      `${name}-bake`,
      {
        connection,
        create: pulumi.interpolate`bash -s <<'SNAPFAAS_BAKE'\n${script}SNAPFAAS_BAKE\n`,
        // The hash is the only trigger: same recipe, no new bake.
        triggers: [args.recipeHash],
      },
      { parent: this, dependsOn: [upload] },
    );

    // Read through the command so consumers of the version wait for the upload.
    this.baseImageVersion = pulumi.all([bake.stdout, args.recipeHash]).apply(([, hash]) => hash);
    this.artifactsPrefix = pulumi.interpolate`images/${this.baseImageVersion}/`;
    this.builderPublicIp = builder.publicIp;
    this.registerOutputs({
      baseImageVersion: this.baseImageVersion,
      artifactsPrefix: this.artifactsPrefix,
      builderPublicIp: this.builderPublicIp,
    });
  }
}
