/** `faas ls`: the deployed functions. */
import { adminRequest } from "../admin-client.ts";
import { type CommandSpec, printJson } from "../command.ts";

interface Listed {
  name: string;
  revision: number;
  codeHash: string;
  deployedAt: string;
}

export const lsCommand: CommandSpec = {
  name: "ls",
  summary: "list deployed functions: name, revision, code hash, when deployed",
  description:
    '--json prints the admin API\'s answer, {"functions": [...]}, with every field of each function.',
  positionals: [],
  options: {},
  json: true,
  examples: ["faas ls", "faas ls --json | jq -r '.functions[].name'"],
  async run(line, ctx) {
    const { json } = await adminRequest(ctx.endpoints(), "GET", "/v1/functions");
    if (line.json) {
      printJson(json);
      return 0;
    }
    const fns = json.functions as Listed[];
    if (fns.length === 0) console.log("no functions deployed");
    for (const f of fns)
      console.log(
        `${f.name.padEnd(30)} rev ${String(f.revision).padEnd(4)} ${f.codeHash.slice(0, 12)}  ${f.deployedAt}`,
      );
    return 0;
  },
};
