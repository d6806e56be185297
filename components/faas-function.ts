import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { ConfigError } from "../contracts/function-config.ts";
import {
  bundleKey,
  DEFAULT_REGISTRY_PREFIX,
  FUNCTION_NAME,
  REGISTRY_PREFIX,
  RESERVED_FUNCTION_NAMES,
  recordKey,
  secretsKey,
} from "../contracts/registry-layout.ts";
import { describeArchive, type FunctionSettings, functionConfigOf, objectsOf } from "./function-objects.ts";

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
  /**
   * Environment, memory, timeout, CORS, egress and concurrency, with the rules `faas deploy` and
   * `faas config` apply (contracts/function-config.ts). Default: the hosts' defaults.
   */
  config?: pulumi.Input<FunctionSettings>;
  /**
   * Secret values by name: kept as Pulumi secrets, written to their own object beside the record (the
   * record holds their names only), given to the function as environment variables.
   */
  secrets?: pulumi.Input<Record<string, pulumi.Input<string>>>;
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
    // Settings known at construction are checked now, naming the field; later ones fail the update.
    const secretNames = plainKeys(args.secrets);
    if (isPlain(args.config) || secretNames) {
      try {
        functionConfigOf(
          isPlain(args.config) ? args.config : undefined,
          secretNames ? Object.fromEntries(secretNames.map((k) => [k, ""])) : undefined,
        );
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        const where = err.field.startsWith("secrets") ? err.field : `config.${err.field}`;
        errors.push({ propertyPath: where, reason: err.message.slice(err.field.length + 1) });
      }
    }
    if (errors.length > 0)
      throw new pulumi.InputPropertiesError({ message: "Invalid arguments for FaasFunction", errors });
    super("snapfaas:index:FaasFunction", name, {}, opts);
    const prefix = args.registryPrefix ?? DEFAULT_REGISTRY_PREFIX;

    const archive = pulumi.output(args.archivePath);
    // The archive is read once. Keys and the record's body come from the registry contract the hosts'
    // S3 backend reads; the keys never depend on the secrets, so they stay plain in the state.
    const described = archive.apply(describeArchive);
    const codeHash = described.apply((d) => d.bundle.codeHash);
    const withSettings = pulumi
      .all([described, args.revision ?? 1, args.config ?? {}, args.secrets ?? {}])
      .apply(([archived, revision, config, secrets]) =>
        objectsOf(archived, { functionName: args.functionName, prefix, revision, config, secrets }),
      );
    const bundle = new aws.s3.BucketObjectv2(
      `${name}-bundle`,
      {
        bucket: args.bucketName,
        key: codeHash.apply((hash) => bundleKey(hash, prefix)),
        source: archive.apply((path) => new pulumi.asset.FileAsset(path)),
        contentType: "application/octet-stream",
      },
      { parent: this },
    );
    const secretsObject = args.secrets
      ? new aws.s3.BucketObjectv2(
          `${name}-secrets`,
          {
            bucket: args.bucketName,
            key: secretsKey(args.functionName, prefix),
            content: pulumi.secret(withSettings.apply((o) => o.secrets?.body ?? "{}")),
            contentType: "application/json",
          },
          { parent: this, additionalSecretOutputs: ["content"] },
        )
      : undefined;
    const recordObject = new aws.s3.BucketObjectv2(
      `${name}-record`,
      {
        bucket: args.bucketName,
        // Known at construction (it depends on the name only), so previews show it.
        key: recordKey(args.functionName, prefix),
        // With secrets its secretsRevision is drawn from their values: kept a secret too.
        content: args.secrets
          ? pulumi.secret(withSettings.apply((o) => o.recordBody))
          : withSettings.apply((o) => o.recordBody),
        contentType: "application/json",
      },
      // A host that sees the record must find the bundle and the secrets it names.
      { parent: this, dependsOn: secretsObject ? [bundle, secretsObject] : [bundle] },
    );

    this.codeHash = codeHash;
    this.bundleKey = bundle.key;
    this.recordKey = recordObject.key;
    this.registerOutputs({ codeHash: this.codeHash, bundleKey: this.bundleKey, recordKey: this.recordKey });
  }
}

/** A value given directly, not through an Output (so it can be checked at construction). */
function isPlain<T>(value: pulumi.Input<T> | undefined): value is T {
  return value !== undefined && !pulumi.Output.isInstance(value) && !(value instanceof Promise);
}

/** The names of a secrets map given directly (its values may still be Outputs). */
function plainKeys(value: FaasFunctionArgs["secrets"]): string[] | undefined {
  return isPlain(value) ? Object.keys(value) : undefined;
}
