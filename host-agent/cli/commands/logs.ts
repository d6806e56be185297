/** `faas logs <name>`: a function's last console lines, kept in the agent's memory. */
import { adminRequest } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption } from "../command.ts";

interface LogLine {
  time: string;
  level: string;
  rid: string | null;
  msg: string;
}

export const logsCommand: CommandSpec = {
  name: "logs",
  summary: "the function's last console lines, oldest first, with their request ids",
  description: "The agent keeps 500 lines or 64 KiB per function, in memory, since it started.",
  positionals: [{ name: "name", required: true, description: "the function's name" }],
  options: {
    limit: {
      type: "string",
      value: "<n>",
      description: "how many lines, 1 to 500 (default 100; the agent checks it)",
    },
  },
  json: true,
  examples: ["faas logs hello-world --limit 20"],
  async run(line, ctx) {
    const name = line.args.name!;
    const limit = stringOption(line, "limit") ?? "100";
    const { json } = await adminRequest(
      ctx.endpoints(),
      "GET",
      `/v1/functions/${encodeURIComponent(name)}/logs?limit=${encodeURIComponent(limit)}`,
    );
    if (line.json) {
      printJson(json);
      return 0;
    }
    const lines = json.lines as LogLine[];
    if (lines.length === 0) console.log(`no console output from ${name} since the agent started`);
    for (const l of lines) console.log(`${l.time} ${l.level.padEnd(5)} ${l.rid ?? "-"}  ${l.msg}`);
    return 0;
  },
};
