/** The driver's preflight: the doctor's host checks, failures turned into PreflightProblems. */
import { type DoctorConfig, type DoctorDeps, runDoctor } from "../../doctor/checks.ts";
import type { PreflightProblem } from "../driver.ts";

export async function firecrackerPreflight(
  deps: Omit<DoctorDeps, "config"> & { config: DoctorConfig },
): Promise<PreflightProblem[]> {
  const report = await runDoctor(deps);
  return report.checks
    .filter((c) => !c.ok)
    .map((c) => ({ what: `${c.name}: ${c.detail}`, fix: c.fix ?? "see `faas doctor`", fatal: c.fatal }));
}
