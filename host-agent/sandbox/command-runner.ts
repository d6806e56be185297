import { execa } from "execa";

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a host command (ip, nft, ...) and rejects with its stderr when it fails. Injected for tests. */
export type CommandRunner = (
  file: string,
  args: readonly string[],
  options?: { input?: string },
) => Promise<CommandResult>;

export class CommandError extends Error {
  override readonly name = "CommandError";
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(
      `${command} failed${exitCode === undefined ? "" : ` (exit ${exitCode})`}: ${stderr.trim() || "(no output)"}`,
    );
  }
}

export const execaRunner: CommandRunner = async (file, args, options) => {
  const result = await execa(file, args, { input: options?.input, reject: false, timeout: 30_000 });
  if (result.failed) {
    throw new CommandError(
      [file, ...args].join(" "),
      result.exitCode,
      String(result.stderr || result.message),
    );
  }
  return { stdout: String(result.stdout), stderr: String(result.stderr) };
};
