import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../host-agent/sandbox/firecracker/config.ts";
import { canonicalJson, listFiles, sha256File, sha256Files, sha256Text } from "../hash.ts";
import { linuxRecipe } from "../linux/recipe.ts";
import { osvRecipe } from "../osv/recipe.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import {
  firecrackerBakePlan,
  firecrackerBinary,
  type GuestRecipe,
  guestNetworkOf,
  jailerBinary,
  VM_ARTIFACTS,
} from "./firecracker-plan.ts";
import { FIRECRACKER_PIN, LINUX_KERNEL_PIN, NODE_PIN, OSV_PIN } from "./pins.ts";
import type { BakeJob } from "./pipeline.ts";
import { type Plan, runPlan } from "./plan.ts";

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
  readonly popfCheckSeconds?: number;
  /** Dry run: write nothing into workDir (the bundle is hashed from a temporary build). */
  readonly dryRun?: boolean;
  readonly log?: (line: string) => void;
}

export interface FirecrackerJob {
  readonly job: BakeJob;
  readonly driverConfig: FirecrackerDriverConfig;
  /** The builder-host plan that fills imageDir. */
  planFor(imageDir: string): Plan;
}

/** The files whose content defines a recipe: any change to them is a new base version. */
async function recipeFiles(repoDir: string, guest: "osv" | "linux"): Promise<string[]> {
  const dirs = [`guest-images/${guest}`, "guest-images/bake", "guest-images/code-disk"];
  const files: string[] = [path.join(repoDir, "guest-images/hash.ts")];
  for (const dir of dirs) files.push(...(await listFiles(path.join(repoDir, dir))));
  return files.filter((f) => !f.endsWith(".md")).sort();
}

export async function firecrackerBakeJob(options: FirecrackerJobOptions): Promise<FirecrackerJob> {
  const { version, arch } = FIRECRACKER_PIN;
  const fcBin = firecrackerBinary(options.workDir, version, arch);
  const driverConfig = parseFirecrackerDriverConfig({
    ...options.driverConfig,
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
    node: sha256Text(canonicalJson(NODE_PIN)),
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
    machine: sha256Text(
      canonicalJson({
        limits: driverConfig.limits,
        network: driverConfig.network,
        guestPort: driverConfig.guestPort,
      }),
    ),
    runtime: bundleHash,
    recipe: await sha256Files(options.repoDir, await recipeFiles(options.repoDir, options.guest)),
  };
  const job: BakeJob = {
    driver: "firecracker",
    guest: options.guest,
    inputs,
    kernelArgs,
    firecrackerVersion: version,
    network,
    async build(dir) {
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
