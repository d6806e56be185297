/**
 * faas: start the local platform, write, deploy, invoke, list and remove functions, roll base images.
 * This module reads which command a line names and runs it; each command is its own module in
 * commands/, with its arguments and options declared there (command.ts reads them with parseArgs).
 */
import { CliError, endpointsFromEnv } from "./admin-client.ts";
import {
  type Bakes,
  type CliContext,
  type CommandSpec,
  commandHelp,
  parseLine,
  UsageError,
  usageLine,
} from "./command.ts";
import { buildCommand } from "./commands/build.ts";
import { configCommand } from "./commands/config.ts";
import { deployCommand } from "./commands/deploy.ts";
import { doctorCommand } from "./commands/doctor.ts";
import { initCommand } from "./commands/init.ts";
import { invokeCommand } from "./commands/invoke.ts";
import { logsCommand } from "./commands/logs.ts";
import { lsCommand } from "./commands/ls.ts";
import { releaseCommand } from "./commands/release.ts";
import { rmCommand } from "./commands/rm.ts";
import { rollbackCommand } from "./commands/rollback.ts";
import { startCommand } from "./commands/start.ts";
import { PackError } from "./pack.ts";

/** In the order `faas help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  startCommand,
  initCommand,
  deployCommand,
  configCommand,
  invokeCommand,
  lsCommand,
  logsCommand,
  rmCommand,
  buildCommand,
  releaseCommand,
  rollbackCommand,
  doctorCommand,
];

function commandNamed(name: string): CommandSpec | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "usage: faas <command> [arguments] [options]",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "`faas <command> --help` or `faas help <command>`: what a command takes. Options go anywhere on",
    "the line; --json prints a command's result as one JSON document, for scripts.",
    "exit codes: 0 done, 1 failed, 2 the command line is wrong, 3 this host is not ready (faas start).",
    "environment: FAAS_URL, FAAS_ADMIN_URL, FAAS_ADMIN_TOKEN, FAAS_STATE_DIR, PORT, ADMIN_PORT",
    "  FAAS_DRIVER=firecracker FAAS_VMM=qemu [FAAS_VMM_ACCELERATOR=tcg|kvm|auto] faas start: microVMs on QEMU",
  ].join("\n");
}

/** The guest image bakes, imported here only: command modules get them through the context. */
async function loadBakes(): Promise<Bakes> {
  const { bakeProcessBase, processBaseNode } = await import("../../guest-images/process/bake.ts");
  const { parseNodeMajor } = await import("../../guest-images/node/pinned-node.ts");
  type PinnedMajor = ReturnType<typeof parseNodeMajor>;
  return {
    // The major was read by parseNodeMajor, so it is a pinned one.
    bakeProcessBase: (out, { nodeMajor, ...rest }) =>
      bakeProcessBase(out, { ...rest, ...(nodeMajor ? { nodeMajor: nodeMajor as PinnedMajor } : {}) }),
    processBaseNode: (log) => processBaseNode(undefined, log),
    parseNodeMajor,
  };
}

export interface MainOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Where a long-running command hands its clean stop for when stdout's reader has gone. */
  readonly onBrokenPipe?: (stop: () => void) => void;
}

/** Splits the line into the command's name and its own part; options may come before the name. */
function splitLine(argv: readonly string[]): { name: string | undefined; rest: string[] } {
  const i = argv.findIndex((a) => !a.startsWith("-"));
  if (i < 0) return { name: undefined, rest: [...argv] };
  return { name: argv[i], rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
}

function usageFailure(err: UsageError): number {
  if (err.command) {
    console.error(`faas ${err.command.name}: ${err.message}`);
    console.error(`usage: ${usageLine(err.command)} (faas ${err.command.name} --help for more)`);
  } else {
    console.error(`faas: ${err.message} (faas help lists the commands)`);
  }
  return 2;
}

export async function main(argv: string[], options: MainOptions = {}): Promise<number> {
  const env = options.env ?? process.env;
  const { name, rest } = splitLine(argv);
  if (name === undefined) {
    // `faas`, `faas --help`, `faas -h`: the overview (a bare `faas` is a usage error).
    const asked = rest.some((a) => a === "--help" || a === "-h");
    if (!asked && rest.length > 0) return usageFailure(new UsageError(`no command in "${rest.join(" ")}"`));
    console[asked ? "log" : "error"](overview());
    return asked ? 0 : 2;
  }
  if (name === "help") {
    const [topic, ...extra] = rest.filter((a) => a !== "--help" && a !== "-h");
    if (topic === undefined) {
      console.log(overview());
      return 0;
    }
    const cmd = commandNamed(topic);
    if (!cmd || extra.length > 0) return usageFailure(unknownCommand(topic, extra));
    console.log(commandHelp(cmd));
    return 0;
  }
  const cmd = commandNamed(name);
  if (!cmd) return usageFailure(unknownCommand(name, []));
  let line: ReturnType<typeof parseLine>;
  try {
    line = parseLine(cmd, rest);
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(err);
    throw err;
  }
  if (line.help) {
    console.log(commandHelp(cmd));
    return 0;
  }
  const ctx: CliContext = {
    env,
    endpoints: () => endpointsFromEnv(env),
    progress: (l) => (line.json ? console.error(l) : console.log(l)),
    bakes: loadBakes,
    onBrokenPipe: options.onBrokenPipe ?? (() => {}),
  };
  try {
    return await cmd.run(line, ctx);
  } catch (err) {
    if (err instanceof UsageError) return usageFailure(err);
    if (err instanceof CliError || err instanceof PackError || (err as Error).name === "PinnedNodeError") {
      console.error(`faas: ${(err as Error).message}`);
      return 1;
    }
    if ((err as Error).name === "ConfigError" || (err as Error).name === "HostManifestError") {
      console.error(`faas: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
}

function unknownCommand(name: string, extra: readonly string[]): UsageError {
  if (extra.length > 0)
    return new UsageError(`faas help takes one command: got ${[name, ...extra].join(" ")}`);
  return new UsageError(`unknown command "${name}": choose one of ${COMMANDS.map((c) => c.name).join(", ")}`);
}
