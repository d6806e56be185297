/** `faas config <name>`: change a deployed function's configuration without a new upload. */
import { CliError, configPatchOf, updateConfig } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption, stringsOption } from "../command.ts";

export const configCommand: CommandSpec = {
  name: "config",
  summary: "change a function's environment, secrets, memory, timeout or egress without a new upload",
  description: [
    "The change is proven by a load with the new settings first (nothing changes when that fails);",
    "calls after the answer run on instances loaded with it. Values of variables and secrets are never",
    "shown: the answer lists their names.",
  ].join("\n"),
  positionals: [{ name: "name", required: true, description: "the function's name" }],
  options: {
    env: {
      type: "string",
      multiple: true,
      value: "<NAME=value>",
      description: "set an environment variable (repeat for more)",
    },
    secret: {
      type: "string",
      multiple: true,
      value: "<NAME=value>",
      description: "set a secret, stored apart from the code (repeat for more)",
    },
    "unset-env": {
      type: "string",
      multiple: true,
      value: "<NAME>",
      description: "remove an environment variable (repeat for more)",
    },
    "unset-secret": {
      type: "string",
      multiple: true,
      value: "<NAME>",
      description: "remove a secret (repeat for more)",
    },
    memory: {
      type: "string",
      value: "<MiB>",
      description: "the instance memory, from 128 MiB to the host's",
    },
    timeout: { type: "string", value: "<seconds>", description: "the call deadline, from 1 s to the host's" },
    egress: {
      type: "string",
      value: "on|off",
      description: "outbound network (NAT to the host's uplink, DNS) on, or off (no network, the default)",
    },
    concurrency: {
      type: "string",
      value: "<calls>",
      description: "calls one instance serves at once, from 1 to 100; they share its memory",
    },
  },
  json: true,
  examples: [
    "faas config api --env STAGE=prod --unset-env DEBUG",
    "faas config api --memory 256 --json",
    "faas config api --egress on",
  ],
  async run(line, ctx) {
    const name = line.args.name!;
    const set = configPatchOf({
      env: stringsOption(line, "env"),
      secrets: stringsOption(line, "secret"),
      memory: stringOption(line, "memory"),
      timeout: stringOption(line, "timeout"),
      egress: stringOption(line, "egress"),
      concurrency: stringOption(line, "concurrency"),
    });
    const unset = (names: readonly string[]) =>
      names.length === 0 ? undefined : Object.fromEntries(names.map((n) => [n, null]));
    const unsetEnv = unset(stringsOption(line, "unset-env"));
    const unsetSecrets = unset(stringsOption(line, "unset-secret"));
    const patch = {
      ...set,
      ...(set?.env || unsetEnv ? { env: { ...unsetEnv, ...set?.env } } : {}),
      ...(set?.secrets || unsetSecrets ? { secrets: { ...unsetSecrets, ...set?.secrets } } : {}),
    };
    if (Object.keys(patch).length === 0) {
      throw new CliError(
        "nothing to change: give --env, --secret, --unset-env, --unset-secret, --memory, --timeout or --egress",
      );
    }
    const out = await updateConfig(ctx.endpoints(), name, patch);
    if (line.json) printJson(out);
    else console.log(`configured ${out.function.name} (revision ${out.function.revision})`);
    return 0;
  },
};
