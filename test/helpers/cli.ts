/** Runs the faas command in this process against a test agent, with what it printed on stdout. */
import { main } from "../../host-agent/cli/cli.ts";
import type { TestAgent } from "./agent.ts";

const ENDPOINT_VARIABLES = ["FAAS_ADMIN_URL", "FAAS_URL", "FAAS_ADMIN_TOKEN"] as const;

export async function runCli(agent: TestAgent, argv: string[]): Promise<{ code: number; printed: string[] }> {
  const saved = Object.fromEntries(ENDPOINT_VARIABLES.map((k) => [k, process.env[k]]));
  const printed: string[] = [];
  const log = console.log;
  Object.assign(process.env, {
    FAAS_ADMIN_URL: agent.adminUrl,
    FAAS_URL: agent.dataUrl,
    FAAS_ADMIN_TOKEN: agent.adminToken,
  });
  console.log = (...args: unknown[]) => {
    printed.push(args.join(" "));
  };
  try {
    return { code: await main(argv), printed };
  } finally {
    console.log = log;
    for (const k of ENDPOINT_VARIABLES) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}
