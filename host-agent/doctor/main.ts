/**
 * Entry for `faas doctor`: `node --import tsx host-agent/doctor/main.ts [config.json]`.
 * The optional JSON file holds the doctor config (paths, pinned version and checksums, snapshot dir),
 * or is the Firecracker driver's config (a host's /etc/snapfaas/firecracker.json, with a `doctor` part):
 * then the doctor checks what the agent's preflight checks.
 * Exits 1 when any check fails.
 */
import { readFile } from "node:fs/promises";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { execaRunner } from "../sandbox/command-runner.ts";
import { doctorConfigOf } from "../sandbox/firecracker/doctor-config.ts";
import { type DoctorReport, doctorConfigSchema, runDoctor } from "./checks.ts";
import { hostFs } from "./host-fs.ts";

export async function doctorMain(
  argv: readonly string[],
): Promise<{ report: DoctorReport; exitCode: number }> {
  const configPath = argv[0];
  const raw: unknown = configPath ? JSON.parse(await readFile(configPath, "utf8")) : {};
  const isDriverConfig = typeof raw === "object" && raw !== null && "doctor" in raw;
  const config = isDriverConfig
    ? doctorConfigOf(parseFirecrackerDriverConfig(raw))
    : doctorConfigSchema.parse(raw);
  const report = await runDoctor({ fs: hostFs, exec: execaRunner, config });
  return { report, exitCode: report.ok ? 0 : 1 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { report, exitCode } = await doctorMain(process.argv.slice(2));
  for (const line of report.lines) console.log(line);
  process.exitCode = exitCode;
}
