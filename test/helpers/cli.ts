/** Runs the faas command in this process, with what it printed on stdout and on stderr. */
import { main } from "../../host-agent/cli/cli.ts";
import type { TestAgent } from "./agent.ts";

const ENDPOINT_VARIABLES = ["FAAS_ADMIN_URL", "FAAS_URL", "FAAS_ADMIN_TOKEN"] as const;

export interface CliRun {
  readonly code: number;
  /** Lines on stdout. */
  readonly printed: string[];
  /** Lines on stderr. */
  readonly errors: string[];
}

/** The faas command against a test agent (or none: then no agent's endpoints are set). */
export async function runCli(agent: TestAgent | undefined, argv: string[]): Promise<CliRun> {
  const saved = Object.fromEntries(ENDPOINT_VARIABLES.map((k) => [k, process.env[k]]));
  const printed: string[] = [];
  const errors: string[] = [];
  const { log, error } = console;
  if (agent) {
    Object.assign(process.env, {
      FAAS_ADMIN_URL: agent.adminUrl,
      FAAS_URL: agent.dataUrl,
      FAAS_ADMIN_TOKEN: agent.adminToken,
    });
  }
  console.log = (...args: unknown[]) => {
    printed.push(...args.join(" ").split("\n"));
  };
  console.error = (...args: unknown[]) => {
    errors.push(...args.join(" ").split("\n"));
  };
  try {
    return { code: await main(argv), printed, errors };
  } finally {
    console.log = log;
    console.error = error;
    for (const k of ENDPOINT_VARIABLES) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}
