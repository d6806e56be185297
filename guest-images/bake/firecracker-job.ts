import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { computeBaseVersion } from "../../contracts/base-manifest.ts";
import { canonicalJson } from "../../contracts/canonical-json.ts";
import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../contracts/firecracker-driver-config.ts";
import { FIRECRACKER_PIN } from "../../contracts/firecracker-release.ts";
import { AMI_ID } from "../../contracts/host-ami.ts";
import { sha256File, sha256Files, sha256Text } from "../hash.ts";
import { linuxRecipe } from "../linux/recipe.ts";
import { osvRecipe } from "../osv/recipe.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import {
  firecrackerBakePlan,
  firecrackerBinary,
  type GuestRecipe,
  guestNetworkOf,
  jailerBinary,
  snapshotNetworkOf,
  VM_ARTIFACTS,
} from "./firecracker-plan.ts";
import { LINUX_KERNEL_PIN, NODE_MAJOR_FOR_BASE, NODE_PINS, OSV_PIN } from "./pins.ts";
import type { BakeJob } from "./pipeline.ts";
import { type Plan, type PlanStep, runPlan } from "./plan.ts";
import { bakeSourceFiles } from "./sources.ts";

export interface FirecrackerJobOptions {
  readonly guest: "osv" | "linux";
  /** Scratch directory for downloads and checkouts on the builder host. */
  readonly workDir: string;
  /** Checkout of this repository. */
  readonly repoDir: string;
  /**
   * A prebuilt guest runtime bundle (one CommonJS file). When absent the job bundles
   * guest-images/runtime itself into WORK/runtime/runtime.js (esbuild; deterministic).
   */
  readonly runtimeBundle?: string;
  /**
   * Driver config fields for the bake boot (network, limits, chroot...), as in the agent's config.
   * The binaries are always the pinned release fetched by the plan.
   */
  readonly driverConfig?: Record<string, unknown>;
  /** The VM shape the snapshot fixes (the stack's `vm`): every restore gets exactly this. */
  readonly machine?: BakeMachine;
  /**
   * The AMI of the hosts that will restore this base: the host kernel shapes what a snapshot
   * restores on, so a new AMI is a new base version. Absent for a bake made outside a stack.
   */
  readonly hostAmi?: string;
  readonly popfCheckSeconds?: number;
  /** Dry run: write nothing into workDir (the bundle is hashed from a temporary build). */
  readonly dryRun?: boolean;
  /**
   * Rehearsal: run every step that needs neither KVM nor the internet (the bake's own fetch scripts
   * run too, against the mirror their environment names), skip the rest, and stand in a labelled
   * placeholder for each VM artifact a skipped step would have made. For testing the seam between
   * the stack and the builder, never for a base that is published.
   */
  readonly rehearse?: boolean;
  readonly log?: (line: string) => void;
}

/** vCPUs and guest memory of the baked machine. */
export interface BakeMachine {
  readonly vcpus: number;
  readonly memMiB: number;
}

export interface FirecrackerJob {
  readonly job: BakeJob;
  readonly driverConfig: FirecrackerDriverConfig;
  /** The builder-host plan that fills imageDir. */
  planFor(imageDir: string): Plan;
}

export async function firecrackerBakeJob(options: FirecrackerJobOptions): Promise<FirecrackerJob> {
  const { version, arch } = FIRECRACKER_PIN;
  if (options.hostAmi !== undefined && !AMI_ID.test(options.hostAmi)) {
    throw new Error(`host AMI "${options.hostAmi}" is not an AMI id (ami- and 8 to 17 hex digits)`);
  }
  const fcBin = firecrackerBinary(options.workDir, version, arch);
  const given = options.driverConfig ?? {};
  const givenLimits = typeof given.limits === "object" && given.limits !== null ? given.limits : {};
  const driverConfig = parseFirecrackerDriverConfig({
    ...given,
    ...(options.machine
      ? { limits: { ...givenLimits, vcpus: options.machine.vcpus, memMiB: options.machine.memMiB } }
      : {}),
    firecrackerPath: fcBin,
    jailerPath: jailerBinary(options.workDir, version, arch),
  });
  const network = guestNetworkOf(driverConfig);
  const { bundlePath: runtimeBundle, bundleHash } = await runtimeBundleFor(options);
  const recipeFor = (imageDir: string): GuestRecipe =>
    options.guest === "osv"
      ? osvRecipe({
          workDir: options.workDir,
          imageDir,
          repoDir: options.repoDir,
          runtimeBundle,
          firecrackerBin: fcBin,
          network,
          guestPort: driverConfig.guestPort,
          ...(options.popfCheckSeconds !== undefined ? { popfCheckSeconds: options.popfCheckSeconds } : {}),
        })
      : linuxRecipe({
          workDir: options.workDir,
          imageDir,
          repoDir: options.repoDir,
          runtimeBundle,
          firecrackerVersion: version,
          network,
          guestPort: driverConfig.guestPort,
        });
  const planFor = (imageDir: string): Plan =>
    firecrackerBakePlan({
      recipe: recipeFor(imageDir),
      workDir: options.workDir,
      imageDir,
      repoDir: options.repoDir,
      firecracker: {
        version,
        arch,
        ...(FIRECRACKER_PIN.tgzSha256 ? { tgzSha256: FIRECRACKER_PIN.tgzSha256 } : {}),
      },
      driverConfig,
    });

  const kernelArgs = recipeFor("/image").kernelArgs;
  const inputs: Record<string, string> = {
    firecracker: sha256Text(canonicalJson(FIRECRACKER_PIN)),
    node: sha256Text(canonicalJson(NODE_PINS[NODE_MAJOR_FOR_BASE[options.guest]])),
    ...(options.guest === "osv"
      ? { osv: sha256Text(canonicalJson(OSV_PIN)) }
      : {
          "linux-kernel": sha256Text(
            canonicalJson({
              package: LINUX_KERNEL_PIN.package,
              version: LINUX_KERNEL_PIN.version,
              sha256: LINUX_KERNEL_PIN.debSha256,
              firecrackerConfigSha256: LINUX_KERNEL_PIN.firecrackerConfigSha256,
            }),
          ),
        }),
    "kernel-args": sha256Text(kernelArgs),
    // What the snapshot fixes: vCPUs, memory, NIC and addresses, the runtime's port.
    machine: sha256Text(canonicalJson(machineInput(driverConfig))),
    runtime: bundleHash,
    // Every file the bake reads (and the stack ships): the recipes, the bake, the firecracker driver
    // that boots and snapshots the guest, the hello-world the fresh base must serve, and the npm files
    // its tools are installed from. So the shipped tarball changes exactly when the version does.
    recipe: await sha256Files(
      options.repoDir,
      (await bakeSourceFiles(options.repoDir)).map((f) => path.join(options.repoDir, f)),
    ),
    ...(options.hostAmi === undefined ? {} : { "host-ami": sha256Text(options.hostAmi) }),
  };
  const job: BakeJob = {
    driver: "firecracker",
    guest: options.guest,
    inputs,
    kernelArgs,
    firecrackerVersion: version,
    network,
    machine: { vcpus: driverConfig.limits.vcpus, memMiB: driverConfig.limits.memMiB },
    async build(dir) {
      if (options.rehearse) {
        await rehearsePlan(planFor(dir), dir, options.log ?? (() => {}));
        return;
      }
      await runPlan(planFor(dir), options.log);
      // The driver's bake prints one line and exits 0 where it cannot run: never publish a base without a snapshot.
      for (const name of Object.values(VM_ARTIFACTS)) {
        const ok = await stat(path.join(dir, name)).then(
          (s) => s.isFile(),
          () => false,
        );
        if (!ok) throw new Error(`the bake left no ${name} in ${dir}: see the bake-snapshot step's output`);
      }
    },
  };
  return { job, driverConfig, planFor };
}

function machineInput(config: FirecrackerDriverConfig) {
  return {
    vcpus: config.limits.vcpus,
    memMiB: config.limits.memMiB,
    network: snapshotNetworkOf(config),
    guestPort: config.guestPort,
  };
}

/**
 * The base version a bake with these options produces, computed without building anything: what the
 * stack gives hosts as their base, known at `pulumi preview`, equal to what the builder bakes.
 */
export async function firecrackerBaseVersion(
  options: Omit<FirecrackerJobOptions, "dryRun" | "rehearse" | "log" | "workDir"> & { workDir?: string },
): Promise<string> {
  const fc = await firecrackerBakeJob({
    ...options,
    workDir: options.workDir ?? path.join(tmpdir(), "snapfaas-bake-version"),
    dryRun: true,
  });
  return computeBaseVersion(fc.job.inputs);
}

/**
 * Fetches a rehearsal runs anyway: the Firecracker script honours a local mirror
 * (SNAPFAAS_FIRECRACKER_RELEASES), and the pinned Node comes from the cache when it is there
 * (guest-images/node: checked against the pinned sha512 either way).
 */
const MIRRORABLE_FETCHES = ["guest-images/bake/fetch-firecracker.sh", "guest-images/node/fetch-cli.ts"];

/** Why a rehearsal skips a step, or undefined when it runs it. */
export function rehearsalSkip(step: PlanStep): string | undefined {
  if (step.needs.includes("kvm")) return "needs KVM";
  const mirrored = MIRRORABLE_FETCHES.some((script) => step.argv.some((arg) => arg.endsWith(script)));
  if (step.needs.includes("internet") && !mirrored) return "needs the internet";
  return undefined;
}

async function rehearsePlan(plan: Plan, imageDir: string, log: (line: string) => void): Promise<void> {
  const skipped = new Set<string>();
  await runPlan(plan, log, {
    skip: (step) => {
      const why = rehearsalSkip(step);
      if (why) skipped.add(step.step);
      return why;
    },
  });
  for (const name of Object.values(VM_ARTIFACTS)) {
    const file = path.join(imageDir, name);
    const made = await stat(file).then(
      (s) => s.isFile(),
      () => false,
    );
    if (made) continue;
    await writeFile(
      file,
      `rehearsal placeholder: ${name} is made by a skipped step (${[...skipped].join(", ")})\n`,
    );
    log(`bake: rehearsal placeholder for ${name}`);
  }
}

/** The runtime bundle the image will carry, and its sha256 (the "runtime" input). */
async function runtimeBundleFor(
  options: FirecrackerJobOptions,
): Promise<{ bundlePath: string; bundleHash: string }> {
  if (options.runtimeBundle !== undefined) {
    const exists = await stat(options.runtimeBundle).then(
      (s) => s.isFile(),
      () => false,
    );
    if (!exists) throw new Error(`runtime bundle ${options.runtimeBundle} not found`);
    return { bundlePath: options.runtimeBundle, bundleHash: await sha256File(options.runtimeBundle) };
  }
  const bundleDir = path.join(options.workDir, "runtime");
  if (!options.dryRun) {
    const built = await bundleStampedRuntime(bundleDir);
    return { bundlePath: built.bundlePath, bundleHash: built.bundleHash };
  }
  const scratch = await mkdtemp(path.join(tmpdir(), "runtime-bundle-"));
  try {
    const built = await bundleStampedRuntime(scratch);
    return { bundlePath: path.join(bundleDir, "runtime.js"), bundleHash: built.bundleHash };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
