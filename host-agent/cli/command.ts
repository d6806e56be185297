/**
 * What one `faas` command is (its arguments, options and run function) and how its part of the command
 * line is read: node:util parseArgs tokens, checked against the command's own option table, so options
 * go anywhere on the line and every mistake is named with what is allowed instead.
 */
import { parseArgs } from "node:util";
import type { Endpoints } from "./admin-client.ts";

/** A command line that cannot be read: exit code 2, with the command's usage line. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  constructor(
    message: string,
    /** The command whose usage is shown after the message; none for the top level. */
    readonly command?: CommandSpec,
  ) {
    super(message);
  }
}

export interface OptionSpec {
  readonly type: "string" | "boolean";
  /** The value's placeholder in help, e.g. `<name>` (string options only). */
  readonly value?: string;
  readonly short?: string;
  /** A string option that may be given more than once (`--env A=1 --env B=2`): its values in order. */
  readonly multiple?: boolean;
  readonly description: string;
}

export interface PositionalSpec {
  readonly name: string;
  readonly required: boolean;
  readonly description: string;
}

export interface ParsedLine {
  /** Positionals by the names of the command's PositionalSpecs; absent optional ones are undefined. */
  readonly args: Readonly<Record<string, string | undefined>>;
  readonly options: Readonly<Record<string, string | readonly string[] | boolean | undefined>>;
  readonly json: boolean;
}

/** What a command may use besides its parsed line; cli.ts builds it, tests can hand in another. */
export interface CliContext {
  readonly env: NodeJS.ProcessEnv;
  /** Where the agent's planes are, and the admin token (from the environment or the state dir). */
  readonly endpoints: () => Endpoints;
  /** A line of progress: stdout for people, stderr under --json so stdout stays one JSON document. */
  readonly progress: (line: string) => void;
  /** The guest image bakes the CLI drives, loaded on first use (they pull in esbuild and the runtime). */
  readonly bakes: () => Promise<Bakes>;
  /** Called with a function that ends a long-running command cleanly when stdout's reader goes away. */
  readonly onBrokenPipe: (stop: () => void) => void;
}

/** A process sandbox base as `faas build` reports it. */
export interface BakedBase {
  readonly version: string;
  readonly nodeVersion: string;
  readonly runtimeBuild: string;
  readonly dir: string;
}

/**
 * The parts of guest-images/ the CLI runs, handed in by cli.ts (the one CLI module that imports that
 * part), so the command modules stay inside host-agent/.
 */
export interface Bakes {
  bakeProcessBase(
    outRoot: string,
    options: { nodeMajor?: number; runtimeVariant?: string; log?: (line: string) => void },
  ): Promise<BakedBase>;
  /** Fetches (once) the node the process base pins; the first start shows its progress. */
  processBaseNode(log: (line: string) => void): Promise<unknown>;
  /** A pinned Node major from its text, or an error naming the pinned ones. */
  parseNodeMajor(text: string): number;
}

export interface CommandSpec {
  readonly name: string;
  /** One line for `faas help`. */
  readonly summary: string;
  /** Paragraphs for `faas help <command>`, after the usage line. */
  readonly description?: string;
  readonly positionals: readonly PositionalSpec[];
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Whether the command prints data that `--json` prints as one JSON document instead. */
  readonly json: boolean;
  /** Lines of examples for its help. */
  readonly examples?: readonly string[];
  run(line: ParsedLine, ctx: CliContext): Promise<number>;
}

const HELP_OPTION: OptionSpec = { type: "boolean", short: "h", description: "show this help" };
const JSON_OPTION: OptionSpec = { type: "boolean", description: "print the result as one JSON document" };

/** Every option the command accepts, --json and --help included. */
export function optionsOf(cmd: CommandSpec): Record<string, OptionSpec> {
  return { ...cmd.options, ...(cmd.json ? { json: JSON_OPTION } : {}), help: HELP_OPTION };
}

function optionLabel(name: string, spec: OptionSpec): string {
  const long = `--${name}${spec.type === "string" ? ` ${spec.value ?? "<value>"}` : ""}${spec.multiple ? " ..." : ""}`;
  return spec.short ? `-${spec.short}, ${long}` : long;
}

export function usageLine(cmd: CommandSpec): string {
  const args = cmd.positionals.map((p) => (p.required ? `<${p.name}>` : `[<${p.name}>]`));
  const opts = Object.entries(cmd.options).map(([name, spec]) => `[${optionLabel(name, spec)}]`);
  return ["faas", cmd.name, ...args, ...opts, ...(cmd.json ? ["[--json]"] : [])].join(" ");
}

function table(rows: Array<[string, string]>): string[] {
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}

export function commandHelp(cmd: CommandSpec): string {
  const lines = [`usage: ${usageLine(cmd)}`, "", cmd.summary];
  if (cmd.description) lines.push("", cmd.description);
  if (cmd.positionals.length > 0) {
    lines.push("", "arguments:", ...table(cmd.positionals.map((p) => [`<${p.name}>`, p.description])));
  }
  const options = Object.entries(optionsOf(cmd)).map(
    ([name, spec]) => [optionLabel(name, spec), spec.description] as [string, string],
  );
  lines.push("", "options (anywhere on the line):", ...table(options));
  if (cmd.examples?.length) lines.push("", "examples:", ...cmd.examples.map((e) => `  ${e}`));
  return lines.join("\n");
}

function allowedOptions(cmd: CommandSpec): string {
  return Object.entries(optionsOf(cmd))
    .map(([name, spec]) => optionLabel(name, spec))
    .join(", ");
}

/**
 * Reads the command's part of the line. parseArgs runs non-strict with tokens so that this, not
 * parseArgs, words every error: which option or argument is wrong, and what the command takes.
 */
export function parseLine(cmd: CommandSpec, argv: readonly string[]): ParsedLine & { help: boolean } {
  const options = optionsOf(cmd);
  const { tokens } = parseArgs({
    args: [...argv],
    options: Object.fromEntries(
      Object.entries(options).map(([name, spec]) => [
        name,
        spec.short ? { type: spec.type, short: spec.short } : { type: spec.type },
      ]),
    ),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values: Record<string, string | string[] | boolean | undefined> = {};
  const positionals: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") {
      positionals.push(token.value);
      continue;
    }
    if (token.kind !== "option") continue;
    const spec = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    if (!spec) {
      throw new UsageError(
        `unknown option ${token.rawName}: allowed are ${allowedOptions(cmd)}` +
          (/^-\d/.test(token.rawName) ? ` (a value starting with "-" goes after "--")` : ""),
        cmd,
      );
    }
    const shown = `--${token.name}`;
    if (spec.type === "boolean") {
      if (token.inlineValue) throw new UsageError(`${shown} takes no value`, cmd);
      values[token.name] = true;
      continue;
    }
    // `--name --json` is a forgotten value, not a name starting with dashes (`--name=--x` says it is).
    if (token.value === undefined || (!token.inlineValue && token.value.startsWith("--"))) {
      throw new UsageError(`${shown} needs a value`, cmd);
    }
    if (!spec.multiple) {
      values[token.name] = token.value;
      continue;
    }
    const earlier = values[token.name];
    values[token.name] = [...(Array.isArray(earlier) ? earlier : []), token.value];
  }
  const help = values.help === true;
  const args: Record<string, string | undefined> = {};
  if (!help) {
    const missing = cmd.positionals.filter((p, i) => p.required && positionals[i] === undefined);
    if (missing.length > 0) {
      throw new UsageError(`missing ${missing.map((p) => `<${p.name}>`).join(" and ")}`, cmd);
    }
    if (positionals.length > cmd.positionals.length) {
      const extra = positionals.slice(cmd.positionals.length);
      const takes =
        cmd.positionals.length === 0
          ? "no arguments"
          : `at most ${cmd.positionals.map((p) => `<${p.name}>`).join(" ")}`;
      throw new UsageError(
        `unexpected argument${extra.length > 1 ? "s" : ""} ${extra.map((a) => JSON.stringify(a)).join(" ")}: it takes ${takes}`,
        cmd,
      );
    }
    cmd.positionals.forEach((p, i) => {
      args[p.name] = positionals[i];
    });
  }
  return { args, options: values, json: values.json === true, help };
}

/** Prints a value for scripts: one JSON document on stdout. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** A string option's value, or undefined when it was not given. */
export function stringOption(line: ParsedLine, name: string): string | undefined {
  const value = line.options[name];
  return typeof value === "string" ? value : undefined;
}

/** Every value of a `multiple` option, in the order given; none when it was not given. */
export function stringsOption(line: ParsedLine, name: string): readonly string[] {
  const value = line.options[name];
  return Array.isArray(value) ? value : [];
}
