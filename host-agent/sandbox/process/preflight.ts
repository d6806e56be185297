/** What the process sandbox needs on the host, each missing piece with the exact command that fixes it. */
import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import type { PreflightProblem } from "../driver.ts";
import { aptInstallCommand } from "../preflight-report.ts";
import { type CgroupMode, detectCgroups } from "./cgroups.ts";

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
  /** Folders the jails' uids must reach, each with the first folder on its way they cannot search. */
  readonly jailFolders?: readonly JailFolder[];
}

/** A folder every jail reads below: the state folder (instance folders), the base folder (the root). */
export interface JailFolder {
  readonly what: "state folder" | "base folder";
  /** The setting that chooses another one. */
  readonly variable: "FAAS_STATE_DIR" | "FAAS_BASE_DIR";
  readonly dir: string;
  readonly blockedAt: string | undefined;
}

/** The Debian package that provides each host tool the process sandbox runs. */
export const PROCESS_SANDBOX_TOOLS: ReadonlyArray<{ readonly tool: string; readonly debianPackage: string }> =
  [
    { tool: "bwrap", debianPackage: "bubblewrap" },
    { tool: "prlimit", debianPackage: "util-linux" },
    { tool: "setpriv", debianPackage: "util-linux" },
  ];

/**
 * The first folder above `dir` (and `dir` itself with `fromSelf`; existing ones only: the agent
 * creates the rest with o+x) that other users cannot search; a jail's uid reaches nothing below it.
 */
export function firstUnsearchableAncestor(
  dir: string,
  modeOf: (folder: string) => number | undefined,
  fromSelf = false,
): string | undefined {
  const start = path.resolve(dir);
  for (let d = fromSelf ? start : path.dirname(start); ; d = path.dirname(d)) {
    const mode = modeOf(d);
    if (mode !== undefined && (mode & 0o001) === 0) return d;
    if (d === path.dirname(d)) return undefined;
  }
}

/** Whether `bwrap --help` lists --disable-userns. */
export function bwrapDisablesUserns(helpText: string): boolean {
  return helpText.includes("--disable-userns");
}

export function processSandboxProblems(facts: HostFacts): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  const missing = PROCESS_SANDBOX_TOOLS.filter(({ tool }) => !facts.has(tool));
  for (const { tool, debianPackage } of missing) {
    const packages = [debianPackage];
    problems.push({
      what:
        tool === "bwrap"
          ? "bubblewrap (bwrap) is not installed"
          : `${tool} (${debianPackage}) is not installed`,
      fix: aptInstallCommand(packages, facts.isRoot),
      fatal: true,
      packages,
    });
  }
  if (facts.has("bwrap") && facts.bwrapDisablesUserns === false) {
    problems.push({
      what: "bubblewrap is older than 0.8: function code can create nested user namespaces inside its jail",
      fix: "install bubblewrap 0.8 or newer (Debian 12, Ubuntu 24.04)",
      fatal: false,
    });
  }
  // As root each jail runs as its own uid, which must be able to walk down to its instance folder
  // and to the base's root.
  for (const { what, variable, dir, blockedAt } of facts.isRoot ? (facts.jailFolders ?? []) : []) {
    if (!blockedAt) continue;
    problems.push({
      what: `the jails cannot reach the ${what} ${dir}: ${blockedAt} is not searchable by other users`,
      fix: `chmod o+x ${blockedAt}, or set ${variable} to a folder under /var/lib`,
      fatal: true,
    });
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

/** Inspects this host for the process sandbox; changes nothing. */
export async function inspectProcessHost(folders: {
  readonly stateDir: string;
  readonly baseDir?: string | undefined;
}): Promise<PreflightProblem[]> {
  const bwrap = findOnPath("bwrap");
  const help = bwrap ? await execa(bwrap, ["--help"], { reject: false }) : undefined;
  return processSandboxProblems({
    isRoot: process.getuid?.() === 0,
    cgroups: detectCgroups(),
    has: (tool) => findOnPath(tool) !== undefined,
    ...(help ? { bwrapDisablesUserns: bwrapDisablesUserns(`${help.stdout}\n${help.stderr}`) } : {}),
    jailFolders: jailFolderFacts(folders),
  });
}

/** HostFacts' jailFolders, read from the real filesystem. */
export function jailFolderFacts(folders: {
  readonly stateDir: string;
  readonly baseDir?: string | undefined;
}): JailFolder[] {
  const modeOf = (d: string) => {
    try {
      return statSync(d).mode;
    } catch {
      return undefined;
    }
  };
  const facts: JailFolder[] = [
    {
      what: "state folder",
      variable: "FAAS_STATE_DIR",
      dir: path.resolve(folders.stateDir),
      // The agent makes the state folder itself 0711.
      blockedAt: firstUnsearchableAncestor(folders.stateDir, modeOf),
    },
  ];
  if (folders.baseDir) {
    facts.push({
      what: "base folder",
      variable: "FAAS_BASE_DIR",
      dir: path.resolve(folders.baseDir),
      blockedAt: firstUnsearchableAncestor(folders.baseDir, modeOf, true),
    });
  }
  return facts;
}
