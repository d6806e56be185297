import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { assumeRolePolicy } from "./assume-role.ts";

/** The seed's hello-world, as a Lambda handler behind a function URL, for round-trip comparisons. */
export const HELLO_WORLD_HANDLER = `export const handler = async () => ({
  statusCode: 200,
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ jsonrpc: "2.0", result: "Hello world!", error: null, id: 1 }),
});
`;

/**
 * Node.js 24: Lambda's newest Node LTS runtime. nodejs20.x was deprecated on 2026-04-30 and AWS then
 * blocks creating functions on it, so a first `pulumi up` would fail at this resource.
 */
export const BENCHMARK_RUNTIME = "nodejs24.x";

export interface BenchmarkLambdaArgs {
  /** Memory of the Lambda, MiB; match the platform's per-VM memory for a fair comparison. Default 256. */
  memoryMiB?: pulumi.Input<number>;
}

/** An AWS Lambda hello-world with a public function URL, deployed beside the platform for `bench:rtt`. */
export class BenchmarkLambda extends pulumi.ComponentResource {
  public readonly functionUrl: pulumi.Output<string>;
  public readonly functionName: pulumi.Output<string>;
  public readonly functionArn: pulumi.Output<string>;

  constructor(name: string, args: BenchmarkLambdaArgs = {}, opts?: pulumi.ComponentResourceOptions) {
    super("snapfaas:index:BenchmarkLambda", name, {}, opts);
    const role = new aws.iam.Role(
      `${name}-role`,
      {
        assumeRolePolicy: assumeRolePolicy("lambda.amazonaws.com"),
      },
      { parent: this },
    );
    const logs = new aws.iam.RolePolicyAttachment(
      `${name}-logs`,
      { role: role.name, policyArn: "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole" },
      { parent: this },
    );
    const fn = new aws.lambda.Function(
      `${name}-function`,
      {
        role: role.arn,
        runtime: BENCHMARK_RUNTIME,
        handler: "index.handler",
        architectures: ["x86_64"],
        memorySize: args.memoryMiB ?? 256,
        timeout: 10,
        code: new pulumi.asset.AssetArchive({
          "index.mjs": new pulumi.asset.StringAsset(HELLO_WORLD_HANDLER),
        }),
      },
      { parent: this, dependsOn: [logs] },
    );
    const url = new aws.lambda.FunctionUrl(
      `${name}-url`,
      { functionName: fn.name, authorizationType: "NONE" },
      { parent: this },
    );
    // With auth type NONE the function's resource policy still decides, and since October 2025 a new
    // function URL needs both grants to anyone; without them every call is answered 403.
    new aws.lambda.Permission(
      `${name}-url-invoke`,
      {
        function: fn.arn,
        action: "lambda:InvokeFunctionUrl",
        principal: "*",
        functionUrlAuthType: "NONE",
      },
      { parent: this },
    );
    new aws.lambda.Permission(
      `${name}-invoke`,
      // Only through the URL: without the condition anyone could call the Invoke API on it directly.
      { function: fn.arn, action: "lambda:InvokeFunction", principal: "*", invokedViaFunctionUrl: true },
      { parent: this },
    );
    this.functionUrl = url.functionUrl;
    this.functionName = fn.name;
    this.functionArn = fn.arn;
    this.registerOutputs({
      functionUrl: this.functionUrl,
      functionName: this.functionName,
      functionArn: this.functionArn,
    });
  }
}
