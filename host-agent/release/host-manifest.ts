/**
 * The release manifest an AWS host boots from (published in SSM by the Pulumi stack, copied to a file by
 * the boot script): which base image the host runs and the pool and VM settings of the release. The agent
 * reads it at start (FAAS_RELEASE_MANIFEST) and turns it into its own settings; variables set in the
 * environment win, so an operator can still override one on a host.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { describeZodIssues } from "../../contracts/zod-errors.ts";
import type { FirecrackerLimits } from "../sandbox/firecracker/limits.ts";

const positive = z.int().positive();

/** One path segment (the base's folder is <bases dir>/<version>), never . or .. */
export const BASE_VERSION_LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** What the agent uses from the manifest; fields it does not use (artifact keys, hashes) pass unchecked. */
export const hostManifestSchema = z.object({
  schemaVersion: z.literal(1),
  releaseVersion: z.string().min(1),
  baseImageVersion: z
    .string()
    .regex(BASE_VERSION_LABEL, "a version label: letters, digits, . _ -, starting with a letter or digit"),
  config: z.object({
    pool: z.object({
      minIdle: z.int().min(0),
      maxInstances: positive,
      idleTtlSeconds: positive,
      maxConcurrentRestores: positive,
      memoryBudgetMiB: positive,
    }),
    vm: z.object({
      vcpus: positive,
      memoryMiB: positive,
      cpuMaxPercent: positive,
      diskBandwidthBytesPerSecond: positive,
      diskOpsPerSecond: positive,
      netBandwidthBytesPerSecond: positive,
    }),
    limits: z.object({ callTimeoutMs: positive, payloadLimitBytes: positive }),
  }),
});

export type HostManifest = z.infer<typeof hostManifestSchema>;

export class HostManifestError extends Error {
  override readonly name = "HostManifestError";
}

export function parseHostManifest(input: unknown, source: string): HostManifest {
  const parsed = hostManifestSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const lines = describeZodIssues(parsed.error.issues, { root: "(manifest)" }).map((line) => `  ${line}`);
  throw new HostManifestError(`invalid release manifest ${source}:\n${lines.join("\n")}`);
}

export async function readHostManifest(file: string): Promise<HostManifest> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new HostManifestError(`cannot read the release manifest ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new HostManifestError(`the release manifest ${file} is not JSON`);
  }
  return parseHostManifest(json, file);
}

/** Where the boot script puts the base image of a version: <basesDir>/<baseImageVersion>. */
export function manifestBaseDir(manifest: HostManifest, basesDir: string): string {
  return path.join(basesDir, manifest.baseImageVersion);
}

/** The agent variables the manifest sets (as strings, the way the environment carries them). */
export function agentEnvFromManifest(manifest: HostManifest, basesDir: string): Record<string, string> {
  const { pool, vm, limits } = manifest.config;
  return {
    FAAS_BASE_DIR: manifestBaseDir(manifest, basesDir),
    FAAS_POOL_GENERIC: String(pool.minIdle),
    FAAS_POOL_MAX_INSTANCES: String(pool.maxInstances),
    FAAS_POOL_MAX_STARTING: String(pool.maxConcurrentRestores),
    FAAS_MEMORY_BUDGET_MIB: String(pool.memoryBudgetMiB),
    FAAS_IDLE_TTL_MS: String(pool.idleTtlSeconds * 1000),
    FAAS_INSTANCE_MEMORY_MIB: String(vm.memoryMiB),
    FAAS_INSTANCE_CPU_PERCENT: String(vm.cpuMaxPercent),
    FAAS_CALL_TIMEOUT_MS: String(limits.callTimeoutMs),
    FAAS_MAX_BODY_BYTES: String(limits.payloadLimitBytes),
  };
}

/** The VM shape and Firecracker rate limiters of the release (buckets refill once a second). */
export function firecrackerLimitsFromManifest(manifest: HostManifest): Partial<FirecrackerLimits> {
  const { vm } = manifest.config;
  const perSecond = (size: number) => ({ size, refillTimeMs: 1000 });
  return {
    vcpus: vm.vcpus,
    memMiB: vm.memoryMiB,
    codeDisk: { bandwidth: perSecond(vm.diskBandwidthBytesPerSecond), ops: perSecond(vm.diskOpsPerSecond) },
    networkRx: { bandwidth: perSecond(vm.netBandwidthBytesPerSecond) },
    networkTx: { bandwidth: perSecond(vm.netBandwidthBytesPerSecond) },
  };
}

/**
 * The VM shape the release asks for, in the base manifest's terms (machine.vcpus, machine.memMiB). A
 * restored VM keeps its snapshot's machine, so the agent refuses a base that fixes another shape.
 */
export function releaseMachine(manifest: HostManifest): { vcpus: number; memMiB: number } {
  return { vcpus: manifest.config.vm.vcpus, memMiB: manifest.config.vm.memoryMiB };
}

/** The environment with the manifest's settings under it: a variable already set keeps its value. */
export function withManifestDefaults(
  env: NodeJS.ProcessEnv,
  manifest: HostManifest,
  basesDir: string,
): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...agentEnvFromManifest(manifest, basesDir) };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") merged[k] = v;
  return merged;
}
