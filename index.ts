/**
 * The snapfaas Pulumi program. Pulumi calls the default export; everything it builds is decided by the
 * stack config (stacks/Pulumi.<stack>.yaml), validated in components/config.ts.
 */
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import * as pulumi from "@pulumi/pulumi";
import { buildStack, type StackOutputs } from "./components/stack-program.ts";

export default async function main(options: { repoRoot?: string } = {}): Promise<StackOutputs> {
  const repoRoot = options.repoRoot ?? dirname(fileURLToPath(import.meta.url));
  return buildStack(pulumi.runtime.allConfig(), { repoRoot });
}
