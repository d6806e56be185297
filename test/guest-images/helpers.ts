import { execa } from "execa";

/** True when cmd can be started; some tools exit non-zero on -version, so only "not found" counts as missing. */
export async function hasCommand(cmd: string, args: string[] = ["--version"]): Promise<boolean> {
  const result = await execa(cmd, args, { reject: false });
  return result.exitCode !== undefined;
}
