import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { canonicalJson, listFiles, sha256File, sha256Files, sha256Text } from "../hash.ts";
import { linuxRecipe } from "../linux/recipe.ts";
import { osvRecipe } from "../osv/recipe.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import {
  DEFAULT_GUEST_NETWORK,
  firecrackerBakePlan,
  firecrackerBinary,
  type GuestNetwork,
  type GuestRecipe,
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
  readonly network?: GuestNetwork;
  readonly memMiB?: number;
  readonly vcpus?: number;
  readonly popfCheckSeconds?: number;
  /** Dry run: write nothing into workDir (the bundle is hashed from a temporary build). */
  readonly dryRun?: boolean;
  readonly log?: (line: string) => void;
}

export interface FirecrackerJob {
  readonly job: BakeJob;
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
  const network = options.network ?? DEFAULT_GUEST_NETWORK;
  const memMiB = options.memMiB ?? 256;
  const vcpus = options.vcpus ?? 1;
  const fcBin = firecrackerBinary(options.workDir, FIRECRACKER_PIN.version, FIRECRACKER_PIN.arch);
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
          ...(options.popfCheckSeconds !== undefined ? { popfCheckSeconds: options.popfCheckSeconds } : {}),
        })
      : linuxRecipe({
          workDir: options.workDir,
          imageDir,
          repoDir: options.repoDir,
          runtimeBundle,
          firecrackerVersion: FIRECRACKER_PIN.version,
          network,
        });
  const planFor = (imageDir: string): Plan =>
    firecrackerBakePlan({
      recipe: recipeFor(imageDir),
      workDir: options.workDir,
      imageDir,
      repoDir: options.repoDir,
      firecracker: {
        version: FIRECRACKER_PIN.version,
        arch: FIRECRACKER_PIN.arch,
        ...(FIRECRACKER_PIN.tgzSha256 ? { tgzSha256: FIRECRACKER_PIN.tgzSha256 } : {}),
      },
      network,
      memMiB,
      vcpus,
    });

  const kernelArgs = recipeFor("/image").kernelArgs;
  const inputs: Record<string, string> = {
    firecracker: sha256Text(canonicalJson(FIRECRACKER_PIN)),
    node: sha256Text(canonicalJson(NODE_PIN)),
    ...(options.guest === "osv"
      ? { osv: sha256Text(canonicalJson(OSV_PIN)) }
      : {
          "linux-kernel": sha256Text(
            canonicalJson({ version: LINUX_KERNEL_PIN.version, url: LINUX_KERNEL_PIN.tarball }),
          ),
        }),
    "kernel-args": sha256Text(kernelArgs),
    machine: sha256Text(canonicalJson({ memMiB, vcpus, network })),
    runtime: bundleHash,
    recipe: await sha256Files(options.repoDir, await recipeFiles(options.repoDir, options.guest)),
  };
  const job: BakeJob = {
    driver: "firecracker",
    guest: options.guest,
    inputs,
    kernelArgs,
    firecrackerVersion: FIRECRACKER_PIN.version,
    network,
    async build(dir) {
      await runPlan(planFor(dir), options.log);
    },
  };
  return { job, planFor };
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
