/**
 * What the agent prints when the host is not ready: one line per problem, except that every missing
 * Debian package is named in one line with the one command that installs them all.
 */
import type { PreflightProblem } from "./driver.ts";

/** The one command that installs these Debian packages (sudo unless the agent already runs as root). */
export function aptInstallCommand(packages: readonly string[], isRoot: boolean): string {
  return `${isRoot ? "" : "sudo "}apt-get install -y ${[...new Set(packages)].join(" ")}`;
}

export function preflightLines(problems: readonly PreflightProblem[], isRoot: boolean): string[] {
  const byPackage = problems.filter((p) => p.packages?.length);
  const lines = problems.filter((p) => !p.packages?.length).map((p) => `${p.what}. Fix: ${p.fix}`);
  if (byPackage.length > 0) {
    const packages = byPackage.flatMap((p) => p.packages ?? []);
    lines.unshift(
      `${byPackage.map((p) => p.what).join("; ")}. Install them all with: ${aptInstallCommand(packages, isRoot)}`,
    );
  }
  return lines;
}
