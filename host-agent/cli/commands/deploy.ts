/** `faas deploy <dir>`: bundle a function's folder and deploy it through the admin API. */
import path from "node:path";
import type { FunctionConfigPatch } from "../../../contracts/function-config.ts";
import {
  adminRequest,
  CliError,
  configPatchOf,
  deployConfigHeaders,
  type Endpoints,
} from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption, stringsOption } from "../command.ts";
import { heaviestParts, type PackOptions, packFunctionWithList } from "../pack.ts";

/** What `PUT /v1/functions/<name>` answers. */
export interface DeployAnswer {
  function: { name: string; revision: number; codeHash: string };
  load: { style: string };
}

export async function deployFolder(
  ep: Endpoints,
  dir: string,
  name: string,
  config?: FunctionConfigPatch,
  options: PackOptions = {},
): Promise<DeployAnswer> {
  const { bytes, sizes } = await packFunctionWithList(dir, options);
  const { json } = await adminRequest(ep, "PUT", `/v1/functions/${encodeURIComponent(name)}`, {
    bytes,
    type: "application/gzip",
    headers: deployConfigHeaders(config),
  }).catch((err: Error) => {
    if (err instanceof CliError && /failed \(413\)/.test(err.message)) {
      throw new CliError(
        `${err.message}; heaviest parts: ${heaviestParts(sizes)} (leave out what the function does not need with a .faasignore)`,
      );
    }
    throw err;
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
  summary: "ship a folder (its files, TypeScript compiled, production node_modules) and deploy it",
  description: [
    "A redeploy replaces the code. A .faasignore (gitignore rules) or package.json's files say what stays",
    'out. The entry is package.json\'s "faas": {"handler": "src/lambda.handler"} or --handler, else',
    '"main", else index.js/index.mjs/index.cjs (TypeScript is compiled next to its source first).',
  ].join("\n"),
  positionals: [{ name: "dir", required: true, description: "the function's folder" }],
  options: {
    name: {
      type: "string",
      value: "<name>",
      description: "the function's name (default: the folder's name, lower-cased)",
    },
    handler: {
      type: "string",
      value: "<file.export>",
      description: "a Lambda handler name, e.g. src/lambda.handler (default: package.json's faas.handler)",
    },
    env: {
      type: "string",
      multiple: true,
      value: "<NAME=value>",
      description: "an environment variable of the function (repeat for more; listed by name only)",
    },
    secret: {
      type: "string",
      multiple: true,
      value: "<NAME=value>",
      description: "a secret, stored apart from the code and never shown (repeat for more)",
    },
    memory: {
      type: "string",
      value: "<MiB>",
      description: "the instance memory, from 128 to the host's instance memory",
    },
    timeout: {
      type: "string",
      value: "<seconds>",
      description: "the call deadline, from 1 s to the host's call timeout",
    },
    egress: {
      type: "boolean",
      description:
        "let the function open connections out (NAT to the host's uplink, DNS); default: no network",
    },
    concurrency: {
      type: "string",
      value: "<calls>",
      description: "calls one instance serves at once, from 1 (the default) to 100; they share its memory",
    },
  },
  json: true,
  examples: [
    "faas deploy examples/hello-world",
    "faas deploy ./my-fn --name api --json",
    "faas deploy ./my-fn --env STAGE=prod --secret API_KEY=... --memory 256 --timeout 10",
    "faas deploy ./my-fn --egress",
  ],
  async run(line, ctx) {
    const dir = line.args.dir!;
    const name = stringOption(line, "name") ?? defaultName(dir);
    const ep = ctx.endpoints();
    const config = configPatchOf({
      env: stringsOption(line, "env"),
      secrets: stringsOption(line, "secret"),
      memory: stringOption(line, "memory"),
      timeout: stringOption(line, "timeout"),
      egress: line.options.egress === true,
      concurrency: stringOption(line, "concurrency"),
    });
    const handler = stringOption(line, "handler");
    const out = await deployFolder(ep, dir, name, config, handler ? { handler } : {});
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
