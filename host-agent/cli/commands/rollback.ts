/** `faas rollback`: abandon the roll in flight, or roll back to the previous base. */

import type { RolloutStatus } from "../../release/rollout.ts";
import { adminRequest } from "../admin-client.ts";
import type { CommandSpec } from "../command.ts";
import { print } from "./release.ts";

export const rollbackCommand: CommandSpec = {
  name: "rollback",
  summary: "abandon the roll in flight, or roll back to the previous base",
  description:
    "After a completed roll it rolls to the previous release; `faas rollback` again rolls forward.",
  positionals: [],
  options: {
    "no-wait": { type: "boolean", description: "return once the rollback has begun" },
  },
  json: true,
  examples: ["faas rollback"],
  async run(line, ctx) {
    const wait = line.options["no-wait"] !== true;
    const { json } = await adminRequest(
      ctx.endpoints(),
      "POST",
      `/v1/release/rollback${wait ? "?wait=1" : ""}`,
      {
        bytes: Buffer.alloc(0),
        type: "application/json",
      },
    );
    print(json as unknown as RolloutStatus, line.json);
    return 0;
  },
};
