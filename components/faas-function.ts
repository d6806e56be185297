import { stat } from "node:fs/promises";
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { FunctionRecord } from "../host-agent/registry/backend.ts";
import { bundleKey, recordKey } from "../host-agent/registry/s3-backend.ts";
import { describeFunctionBundle } from "./function-bundle.ts";

const FUNCTION_NAME = /^[a-z][a-z0-9-]{0,62}$/;

export interface FaasFunctionArgs {
  /** The platform's artifact bucket (FaasPlatform.bucketName, or a stack reference to it). */
  bucketName: pulumi.Input<string>;
  /** Name callers use: POST /<functionName>. Known at construction; it is the record's key. */
  functionName: string;
  /** Local .tar.gz, .tgz or .zip of a folder with package.json. */
  archivePath: pulumi.Input<string>;
  /** Registry prefix the hosts read. Default "functions/", as KvmHostFleet. */
  registryPrefix?: string;
  /** Record revision; raise it with every deploy of new code under the same name. Default 1. */
  revision?: pulumi.Input<number>;
}

/**
 * Deploys one function from any stack: uploads the code archive under its content hash and writes the
 * registry record every host reads, so hosts the group launches later serve it without a manual step.
 */
export class FaasFunction extends pulumi.ComponentResource {
  public readonly codeHash: pulumi.Output<string>;
  public readonly recordKey: pulumi.Output<string>;
  public readonly bundleKey: pulumi.Output<string>;

  constructor(name: string, args: FaasFunctionArgs, opts?: pulumi.ComponentResourceOptions) {
    const errors: pulumi.InputPropertyErrorDetails[] = [];
    if (!FUNCTION_NAME.test(args.functionName)) {
      errors.push({ propertyPath: "functionName", reason: `must match ${FUNCTION_NAME.source}` });
    }
    if (args.registryPrefix !== undefined && !/^([a-z0-9-]+\/)*$/.test(args.registryPrefix)) {
      errors.push({ propertyPath: "registryPrefix", reason: 'must be empty or end in "/"' });
    }
    if (errors.length > 0)
      throw new pulumi.InputPropertiesError({ message: "Invalid arguments for FaasFunction", errors });
    super("snapfaas:index:FaasFunction", name, {}, opts);
    const prefix = args.registryPrefix ?? "functions/";

    const archive = pulumi.output(args.archivePath);
    const info = archive.apply(async (path) => {
      const described = await describeFunctionBundle(path);
      // The archive's modification time: stable across `pulumi up` runs for the same build.
      const built = (await stat(path)).mtime.toISOString();
      return { ...described, deployedAt: built };
    });

    const bundle = new aws.s3.BucketObjectv2(
      `${name}-bundle`,
      {
        bucket: args.bucketName,
        key: info.apply((i) => bundleKey(i.codeHash, prefix)),
        source: archive.apply((path) => new pulumi.asset.FileAsset(path)),
        contentType: "application/octet-stream",
      },
      { parent: this },
    );
    const record = pulumi.all([info, args.revision ?? 1]).apply(
      ([i, revision]): FunctionRecord => ({
        name: args.functionName,
        codeHash: i.codeHash,
        format: i.format,
        bundleBytes: i.bundleBytes,
        unpackedBytes: i.unpackedBytes,
        fileCount: i.fileCount,
        entry: i.entry,
        deployedAt: i.deployedAt,
        revision,
      }),
    );
    const recordObject = new aws.s3.BucketObjectv2(
      `${name}-record`,
      {
        bucket: args.bucketName,
        key: recordKey(args.functionName, prefix),
        content: record.apply((r) => JSON.stringify(r)),
        contentType: "application/json",
      },
      // A host that sees the record must find the bundle.
      { parent: this, dependsOn: [bundle] },
    );

    this.codeHash = info.apply((i) => i.codeHash);
    this.bundleKey = bundle.key;
    this.recordKey = recordObject.key;
    this.registerOutputs({ codeHash: this.codeHash, bundleKey: this.bundleKey, recordKey: this.recordKey });
  }
}
