/**
 * A team's own Pulumi program that deploys a function onto a running snapfaas platform. The platform
 * stack exports bucketName and endpointUrl; this stack only adds a FaasFunction, and every host of the
 * platform (also ones launched later) picks the function up from the registry.
 *
 *   pulumi config set platformStack acme/snapfaas/prod
 *   pulumi config set archive ./hello-world.tar.gz     # tar czf of a folder with package.json
 *   pulumi config set --secret apiKey s3cr3t            # optional: the function's API_KEY
 *   pulumi up
 */
import * as pulumi from "@pulumi/pulumi";
// From another repository this is the package's components entry, e.g. "snapfaas/components/index.ts".
import { FaasFunction } from "../../components/index.ts";

export default async function main() {
  const config = new pulumi.Config();
  const platform = new pulumi.StackReference("platform", { name: config.require("platformStack") });
  const bucketName = platform.requireOutput("bucketName").apply(String);
  const endpointUrl = platform.requireOutput("endpointUrl").apply(String);

  const hello = new FaasFunction("hello-world", {
    bucketName,
    functionName: "hello-world",
    archivePath: config.get("archive") ?? "hello-world.tar.gz",
    revision: config.getNumber("revision") ?? 1,
    // What `faas deploy --env/--memory/--timeout` set; secrets stay secret in the state and the record.
    config: { env: { GREETING: "Hello" }, timeoutMs: 10_000 },
    ...(config.getSecret("apiKey") ? { secrets: { API_KEY: config.requireSecret("apiKey") } } : {}),
  });

  return {
    codeHash: hello.codeHash,
    url: pulumi.interpolate`${endpointUrl}/hello-world`,
  };
}
