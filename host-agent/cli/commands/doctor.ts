/** `faas doctor [config.json]`: check this host for the firecracker driver, one line per check. */
import { CliError } from "../admin-client.ts";
import { type CommandSpec, printJson } from "../command.ts";

export const doctorCommand: CommandSpec = {
  name: "doctor",
  summary: "check this host for the firecracker driver (KVM, binaries, cgroups, kernel, tun, nft, disk)",
  description: [
    "With a Firecracker driver config (a fleet host's /etc/snapfaas/firecracker.json) it checks what the",
    "agent's preflight checks, binary hashes included. Exits 1 when a check fails.",
  ].join("\n"),
  positionals: [
    { name: "config.json", required: false, description: "the doctor's config, or a driver config file" },
  ],
  options: {},
  json: true,
  examples: ["faas doctor", "faas doctor /etc/snapfaas/firecracker.json --json"],
  async run(line) {
    const { doctorMain } = await import("../../doctor/main.ts");
    const configPath = line.args["config.json"];
    let result: Awaited<ReturnType<typeof doctorMain>>;
    try {
      result = await doctorMain(configPath ? [configPath] : []);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // An unreadable file, bad JSON or a config that fails its schema: say which file and why.
      if (e.code || e instanceof SyntaxError || e.name === "ZodError" || e.name === "ConfigError")
        throw new CliError(`${configPath}: ${e.message}`);
      throw err;
    }
    if (line.json) printJson({ ok: result.report.ok, checks: result.report.checks });
    else for (const l of result.report.lines) console.log(l);
    return result.exitCode;
  },
};
