/** `faas rm <name>`: delete a function. */
import { adminRequest } from "../admin-client.ts";
import { type CommandSpec, printJson } from "../command.ts";

export const rmCommand: CommandSpec = {
  name: "rm",
  summary: "delete a function (its instances finish the call they serve, then stop)",
  positionals: [{ name: "name", required: true, description: "the function's name" }],
  options: {},
  json: true,
  examples: ["faas rm hello-world"],
  async run(line, ctx) {
    const name = line.args.name!;
    const { json } = await adminRequest(
      ctx.endpoints(),
      "DELETE",
      `/v1/functions/${encodeURIComponent(name)}`,
    );
    if (line.json) printJson(json);
    else console.log(`deleted ${name}`);
    return 0;
  },
};
