/** `faas invoke <name> <Class.method> [params]`: one JSON-RPC call on the data plane. */
import { request } from "undici";
import { CliError } from "../admin-client.ts";
import { type CommandSpec, printJson } from "../command.ts";

export const invokeCommand: CommandSpec = {
  name: "invoke",
  summary: "call a class method of a function over JSON-RPC and print its result",
  description: [
    "params is a JSON array of the method's arguments (a single JSON value is one argument).",
    "Exits 1 when the method answers a JSON-RPC error; --json prints the whole JSON-RPC answer.",
  ].join("\n"),
  positionals: [
    { name: "name", required: true, description: "the function's name" },
    { name: "Class.method", required: true, description: "the exported class and its method" },
    { name: "params", required: false, description: "a JSON array, e.g. '[\"Ada\", 3]' (default [])" },
  ],
  options: {},
  json: true,
  examples: [
    "faas invoke hello-world HelloWorldService.helloWorld",
    `faas invoke hello-world HelloWorldService.hello '["Ada", "faas"]'`,
  ],
  async run(line, ctx) {
    const name = line.args.name!;
    const method = line.args["Class.method"]!;
    const rawParams = line.args.params;
    let params: unknown = [];
    if (rawParams !== undefined) {
      try {
        params = JSON.parse(rawParams);
      } catch (err) {
        throw new CliError(`params must be a JSON array, e.g. '["Ada", 3]': ${(err as Error).message}`);
      }
      if (!Array.isArray(params)) params = [params];
    }
    const ep = ctx.endpoints();
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${ep.dataUrl}/${encodeURIComponent(name)}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
      });
    } catch (err) {
      throw new CliError(
        `cannot reach the agent at ${ep.dataUrl}: ${(err as Error).message} (is \`npm start\` running?)`,
      );
    }
    const text = await res.body.text();
    let body: { result?: unknown; error?: { message?: string; code?: unknown } | null };
    try {
      body = JSON.parse(text);
    } catch {
      throw new CliError(`${res.statusCode}: ${text}`);
    }
    if (line.json) {
      printJson(body);
      return body.error ? 1 : 0;
    }
    if (body.error) {
      console.error(`error ${body.error.code ?? res.statusCode}: ${body.error.message ?? text}`);
      return 1;
    }
    console.log(JSON.stringify(body.result, null, 2));
    return 0;
  },
};
