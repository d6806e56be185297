/**
 * The release manifest an AWS host boots from (published in SSM by the Pulumi stack, copied to a file by
 * the boot script; its schema is contracts/release-manifest.ts): which base image the host runs and the
 * pool and VM settings of the release. The agent reads it at start (FAAS_RELEASE_MANIFEST) and turns it
 * into its own settings; variables set in the environment win, so an operator can still override one on
 * a host.
 */
import { readFile } from "node:fs/promises";
import type { FirecrackerLimits } from "../../contracts/firecracker-driver-config.ts";
import { baseDirOf, type ReleaseManifest, releaseManifestSchema } from "../../contracts/release-manifest.ts";
import { describeZodIssues } from "../../contracts/zod-errors.ts";

export class HostManifestError extends Error {
  override readonly name = "HostManifestError";
}

export function parseHostManifest(input: unknown, source: string): ReleaseManifest {
  const parsed = releaseManifestSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const lines = describeZodIssues(parsed.error.issues, { root: "(manifest)" }).map((line) => `  ${line}`);
  throw new HostManifestError(`invalid release manifest ${source}:\n${lines.join("\n")}`);
}

export async function readHostManifest(file: string): Promise<ReleaseManifest> {
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

/** The agent variables the manifest sets (as strings, the way the environment carries them). */
export function agentEnvFromManifest(manifest: ReleaseManifest, basesDir: string): Record<string, string> {
  const { pool, vm, limits } = manifest.config;
  return {
    FAAS_BASE_DIR: baseDirOf(basesDir, manifest.baseImageVersion),
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
export function firecrackerLimitsFromManifest(manifest: ReleaseManifest): Partial<FirecrackerLimits> {
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
export function releaseMachine(manifest: ReleaseManifest): { vcpus: number; memMiB: number } {
  return { vcpus: manifest.config.vm.vcpus, memMiB: manifest.config.vm.memoryMiB };
}

/** The environment with the manifest's settings under it: a variable already set keeps its value. */
export function withManifestDefaults(
  env: NodeJS.ProcessEnv,
  manifest: ReleaseManifest,
  basesDir: string,
): NodeJS.ProcessEnv {
  const merged: NodeJS.ProcessEnv = { ...agentEnvFromManifest(manifest, basesDir) };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== "") merged[k] = v;
  return merged;
}
