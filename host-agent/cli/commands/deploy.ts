/** `faas deploy <dir>`: bundle a function's folder and deploy it through the admin API. */
import path from "node:path";
import { adminRequest, type Endpoints } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption } from "../command.ts";
import { packFunction } from "../pack.ts";

/** What `PUT /v1/functions/<name>` answers. */
export interface DeployAnswer {
  function: { name: string; revision: number; codeHash: string };
  load: { style: string };
}

export async function deployFolder(ep: Endpoints, dir: string, name: string): Promise<DeployAnswer> {
  const bytes = await packFunction(dir);
  const { json } = await adminRequest(ep, "PUT", `/v1/functions/${encodeURIComponent(name)}`, {
    bytes,
    type: "application/gzip",
  });
  return json as unknown as DeployAnswer;
}

/** A function name from its folder's name (the agent checks the name rule and says what it allows). */
export function defaultName(dir: string): string {
  return path
    .basename(path.resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-");
}

export const deployCommand: CommandSpec = {
  name: "deploy",
  summary: "bundle a folder's entry with esbuild and deploy it (a redeploy replaces the code)",
  description: [
    'The entry is package.json\'s "source" or "main", else index.ts, index.mts, index.js, index.mjs,',
    "index.cjs, src/index.ts or src/index.js; it and everything it imports become one file.",
  ].join("\n"),
  positionals: [{ name: "dir", required: true, description: "the function's folder" }],
  options: {
    name: {
      type: "string",
      value: "<name>",
      description: "the function's name (default: the folder's name, lower-cased)",
    },
  },
  json: true,
  examples: ["faas deploy examples/hello-world", "faas deploy ./my-fn --name api --json"],
  async run(line, ctx) {
    const dir = line.args.dir!;
    const name = stringOption(line, "name") ?? defaultName(dir);
    const ep = ctx.endpoints();
    const out = await deployFolder(ep, dir, name);
    if (line.json) {
      printJson({ ...out, url: `${ep.dataUrl}/${out.function.name}` });
      return 0;
    }
    console.log(
      `deployed ${out.function.name} (revision ${out.function.revision}, ${out.load.style}, code ${out.function.codeHash.slice(0, 12)})`,
    );
    console.log(`  ${ep.dataUrl}/${out.function.name}`);
    return 0;
  },
};
