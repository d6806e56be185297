/** The shipped AWS stack files, parsed with the real stack config parser, as a host would be handed them. */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import {
  type AwsStackConfig,
  isAwsStack,
  parseStackConfig,
  readStackFileConfig,
} from "../../components/config.ts";

export const STACKS_DIR = join(import.meta.dirname, "..", "..", "stacks");

export interface ShippedAwsStack {
  /** `Pulumi.<stack>.yaml` */
  readonly file: string;
  /** `<stack>` */
  readonly stack: string;
  readonly region: string;
  readonly config: AwsStackConfig;
}

export function shippedAwsStacks(): ShippedAwsStack[] {
  return readdirSync(STACKS_DIR)
    .filter((f) => /^Pulumi\.[\w-]+\.yaml$/.test(f))
    .flatMap((file) => {
      const { values, secureKeys } = readStackFileConfig(
        parseYaml(readFileSync(join(STACKS_DIR, file), "utf8")),
      );
      // The operator's secrets (the bake's SSH key) do not reach a host: any value stands in for them.
      const secrets: Record<string, string> = { "snapfaas:bakeSshPrivateKey": "fixture" };
      for (const key of secureKeys) secrets[key] = "fixture";
      const config = parseStackConfig({ ...secrets, ...values });
      if (!isAwsStack(config)) return [];
      const stack = /^Pulumi\.([\w-]+)\.yaml$/.exec(file)![1]!;
      return [{ file, stack, region: values["aws:region"] ?? "us-east-1", config }];
    });
}
