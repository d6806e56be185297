/** What the process sandbox needs on the host, each missing piece with the exact command that fixes it. */
import { accessSync, constants } from "node:fs";
import path from "node:path";
import type { PreflightProblem } from "../driver.ts";
import type { CgroupMode } from "./cgroups.ts";

export function findOnPath(name: string, pathEnv = process.env.PATH ?? ""): string | undefined {
  for (const dir of pathEnv.split(":").concat(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here.
    }
  }
  return undefined;
}

export interface HostFacts {
  readonly isRoot: boolean;
  readonly cgroups: CgroupMode;
  readonly has: (tool: string) => boolean;
  /** Whether the installed bwrap knows --disable-userns (0.8 and newer); undefined when not checked. */
  readonly bwrapDisablesUserns?: boolean;
}

/** Whether `bwrap --help` lists --disable-userns. */
export function bwrapDisablesUserns(helpText: string): boolean {
  return helpText.includes("--disable-userns");
}

export function processSandboxProblems(facts: HostFacts): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  if (!facts.has("bwrap")) {
    problems.push({
      what: "bubblewrap (bwrap) is not installed",
      fix: "sudo apt-get install -y bubblewrap",
      fatal: true,
    });
  }
  if (facts.has("bwrap") && facts.bwrapDisablesUserns === false) {
    problems.push({
      what: "bubblewrap is older than 0.8: function code can create nested user namespaces inside its jail",
      fix: "install bubblewrap 0.8 or newer (Debian 12, Ubuntu 24.04)",
      fatal: false,
    });
  }
  for (const tool of ["prlimit", "setpriv"]) {
    if (!facts.has(tool)) {
      problems.push({
        what: `${tool} (util-linux) is not installed`,
        fix: "sudo apt-get install -y util-linux",
        fatal: true,
      });
    }
  }
  if (!facts.isRoot) {
    problems.push({
      what: "the agent is not running as root: no cgroup limits and no per-instance uid (user namespaces only)",
      fix: "sudo -E npm start",
      fatal: false,
    });
  } else if (facts.cgroups.version === 0) {
    problems.push({
      what: `no usable cgroups (${facts.cgroups.why}): instances run without memory, CPU and pids limits`,
      fix: "mount cgroup v2 with the cpu, memory and pids controllers enabled",
      fatal: false,
    });
  }
  return problems;
}
