/** `faas release [<dir>|<release.json>]`: roll the agent to another base, or show where the roll stands. */

import type { RolloutStatus } from "../../release/rollout.ts";
import { adminRequest, CliError } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption } from "../command.ts";
import { describeStatus, releaseFromArg } from "../release.ts";

export const releaseCommand: CommandSpec = {
  name: "release",
  summary: "roll the agent to a baked base folder or a release file; no argument: where the roll stands",
  description: [
    "Waits for the roll to settle (at most 4 minutes, then prints where it stands); exits 1 when the",
    "roll was rolled back.",
  ].join("\n"),
  positionals: [
    {
      name: "target",
      required: false,
      description: "a baked base folder (with base.json) or a release .json file",
    },
  ],
  options: {
    canary: {
      type: "string",
      value: "<percent>",
      description: "share of calls the new base serves while judged, 0-100",
    },
    "no-wait": { type: "boolean", description: "return once the roll has begun" },
  },
  json: true,
  examples: ["faas release /tmp/bases/<version> --canary 10", "faas release --json"],
  async run(line, ctx) {
    const ep = ctx.endpoints();
    const target = line.args.target;
    const canary = stringOption(line, "canary");
    if (!target) {
      if (canary !== undefined || line.options["no-wait"]) {
        throw new CliError("--canary and --no-wait go with a release: faas release <dir>|<release.json>");
      }
      const { json } = await adminRequest(ep, "GET", "/v1/release");
      print(json as unknown as RolloutStatus, line.json);
      return 0;
    }
    let canaryPercent: number | undefined;
    if (canary !== undefined) {
      canaryPercent = Number(canary);
      if (canary.trim() === "" || !Number.isFinite(canaryPercent))
        throw new CliError("--canary needs a percentage, 0-100");
    }
    const release = await releaseFromArg(target, canaryPercent === undefined ? {} : { canaryPercent });
    const wait = line.options["no-wait"] !== true;
    const { json } = await adminRequest(ep, "POST", `/v1/release${wait ? "?wait=1" : ""}`, {
      bytes: Buffer.from(JSON.stringify(release)),
      type: "application/json",
    });
    const status = json as unknown as RolloutStatus;
    print(status, line.json);
    return status.state === "rolled-back" ? 1 : 0;
  },
};

export function print(status: RolloutStatus, json: boolean): void {
  if (json) printJson(status);
  else console.log(describeStatus(status));
}
