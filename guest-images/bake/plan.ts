import { access, constants } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";

/** What a step needs from the machine it runs on; such steps only run on a builder host. */
export type Need = "internet" | "kvm" | "root";

export interface PlanStep {
  /** Short kebab-case name, unique within a plan. */
  readonly step: string;
  readonly argv: readonly string[];
  readonly needs: readonly Need[];
  /** Working directory, relative to the plan's work directory ("." when omitted). */
  readonly cwd?: string;
  /** Started and left running (Firecracker itself); stopped when the plan ends, whatever happens. */
  readonly background?: boolean;
  /** One line on why the step exists, printed in the dry run. */
  readonly why?: string;
}

export interface Plan {
  readonly title: string;
  /** Directory every relative cwd resolves against. */
  readonly workDir: string;
  readonly steps: readonly PlanStep[];
}

/** Quotes one argument for a POSIX shell, so a printed plan can be pasted and run. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'"'"'`)}'`;
}

/** The dry-run text: one commented block per step, each command ready to paste into a shell. */
export function formatPlan(plan: Plan): string {
  const lines = [`# ${plan.title}`, `# work directory: ${plan.workDir}`];
  for (const s of plan.steps) {
    const needs = s.needs.length > 0 ? ` [needs: ${s.needs.join(", ")}]` : "";
    lines.push("", `# ${s.step}${needs}${s.background ? " [background]" : ""}${s.why ? ` - ${s.why}` : ""}`);
    const command = s.argv.map(shellQuote).join(" ");
    const inDir = s.cwd && s.cwd !== "." ? `(cd ${shellQuote(s.cwd)} && ${command})` : command;
    lines.push(s.background ? `${inDir} &` : inDir);
  }
  return `${lines.join("\n")}\n`;
}

export class PlanError extends Error {
  override readonly name = "PlanError";
}

/** What this machine lacks for a plan: one sentence per missing need, empty when it can run. */
export async function missingNeeds(plan: Plan): Promise<string[]> {
  const needs = new Set(plan.steps.flatMap((s) => s.needs));
  const missing: string[] = [];
  if (needs.has("kvm")) {
    const ok = await access("/dev/kvm", constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!ok) missing.push("kvm: /dev/kvm is missing or not read-writable");
  }
  if (needs.has("root") && process.getuid?.() !== 0)
    missing.push("root: steps create taps and install packages");
  return missing;
}

/**
 * Runs a plan step by step on a builder host, stopping at the first failure. Background steps are
 * stopped (SIGTERM, then SIGKILL) when the plan ends, so a failed bake leaves no Firecracker behind.
 */
export interface RunPlanOptions {
  /** Returns why a step is left out (logged), or undefined to run it. Skipped steps' needs are not checked. */
  readonly skip?: (step: PlanStep) => string | undefined;
}

export async function runPlan(
  plan: Plan,
  log: (line: string) => void = console.error,
  options: RunPlanOptions = {},
): Promise<void> {
  const skipped = new Map<string, string>();
  for (const s of plan.steps) {
    const why = options.skip?.(s);
    if (why !== undefined) skipped.set(s.step, why);
  }
  const runnable = { ...plan, steps: plan.steps.filter((s) => !skipped.has(s.step)) };
  const missing = await missingNeeds(runnable);
  if (missing.length > 0) {
    throw new PlanError(
      `${plan.title} cannot run on this machine (${missing.join("; ")}): run it on a builder host, or use --dry-run`,
    );
  }
  const background: ResultPromise[] = [];
  try {
    for (const s of plan.steps) {
      const why = skipped.get(s.step);
      if (why !== undefined) {
        log(`bake: ${s.step} skipped (${why})`);
        continue;
      }
      log(`bake: ${s.step}`);
      const [file, ...args] = s.argv;
      if (!file) throw new PlanError(`step ${s.step} has an empty command`);
      const cwd = path.resolve(plan.workDir, s.cwd ?? ".");
      if (s.background) {
        const child = execa(file, args, {
          cwd,
          stdio: ["ignore", "inherit", "inherit"],
          reject: false,
          forceKillAfterDelay: 5000,
        });
        background.push(child);
        continue;
      }
      const result = await execa(file, args, { cwd, stdio: ["ignore", "inherit", "inherit"], reject: false });
      if (result.exitCode !== 0) {
        throw new PlanError(
          `step ${s.step} failed (exit ${result.exitCode ?? result.signal}): ${result.command}`,
        );
      }
    }
  } finally {
    for (const child of background) {
      child.kill("SIGTERM");
      await child;
    }
  }
}
