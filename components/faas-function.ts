import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import {
  DEFAULT_REGISTRY_PREFIX,
  FUNCTION_NAME,
  REGISTRY_PREFIX,
  RESERVED_FUNCTION_NAMES,
  recordKey,
} from "../contracts/registry-layout.ts";
import { functionObjects } from "./function-objects.ts";

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
    } else if (RESERVED_FUNCTION_NAMES.has(args.functionName)) {
      errors.push({
        propertyPath: "functionName",
        reason: `"${args.functionName}" is reserved for the hosts' own routes (${[...RESERVED_FUNCTION_NAMES].join(", ")})`,
      });
    }
    if (args.registryPrefix !== undefined && !REGISTRY_PREFIX.test(args.registryPrefix)) {
      errors.push({ propertyPath: "registryPrefix", reason: 'must be empty or end in "/"' });
    }
    if (errors.length > 0)
      throw new pulumi.InputPropertiesError({ message: "Invalid arguments for FaasFunction", errors });
    super("snapfaas:index:FaasFunction", name, {}, opts);
    const prefix = args.registryPrefix ?? DEFAULT_REGISTRY_PREFIX;

    const archive = pulumi.output(args.archivePath);
    // Keys and the record's body come from the registry contract the hosts' S3 backend reads.
    const objects = pulumi
      .all([archive, args.revision ?? 1])
      .apply(([path, revision]) =>
        functionObjects(path, { functionName: args.functionName, prefix, revision }),
      );
    const bundle = new aws.s3.BucketObjectv2(
      `${name}-bundle`,
      {
        bucket: args.bucketName,
        key: objects.apply((o) => o.bundleKey),
        source: archive.apply((path) => new pulumi.asset.FileAsset(path)),
        contentType: "application/octet-stream",
      },
      { parent: this },
    );
    const recordObject = new aws.s3.BucketObjectv2(
      `${name}-record`,
      {
        bucket: args.bucketName,
        // Known at construction (it depends on the name only), so previews show it.
        key: recordKey(args.functionName, prefix),
        content: objects.apply((o) => o.recordBody),
        contentType: "application/json",
      },
      // A host that sees the record must find the bundle.
      { parent: this, dependsOn: [bundle] },
    );

    this.codeHash = objects.apply((o) => o.record.codeHash);
    this.bundleKey = bundle.key;
    this.recordKey = recordObject.key;
    this.registerOutputs({ codeHash: this.codeHash, bundleKey: this.bundleKey, recordKey: this.recordKey });
  }
}
