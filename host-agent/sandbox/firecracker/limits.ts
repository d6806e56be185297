import type {
  FirecrackerLimits,
  RateLimiterConfig,
  TokenBucketConfig,
} from "../../../contracts/firecracker-driver-config.ts";
import type { SandboxLimits } from "../driver.ts";
import type { RateLimiter, TokenBucket } from "./api-types.ts";

function toTokenBucket(bucket: TokenBucketConfig): TokenBucket {
  const out: TokenBucket = { size: bucket.size, refill_time: bucket.refillTimeMs };
  if (bucket.oneTimeBurst !== undefined) out.one_time_burst = bucket.oneTimeBurst;
  return out;
}

/** Maps a configured limiter to the API shape; undefined stays undefined (no limiter sent). */
export function toRateLimiter(config: RateLimiterConfig | undefined): RateLimiter | undefined {
  if (config === undefined) return undefined;
  const out: RateLimiter = {};
  if (config.bandwidth) out.bandwidth = toTokenBucket(config.bandwidth);
  if (config.ops) out.ops = toTokenBucket(config.ops);
  return out;
}

const MiB = 1024 * 1024;

/**
 * cgroup v2 settings handed to the jailer as `--cgroup file=value`. memory.max covers the whole VM
 * (guest memory is VMM memory), so it is at least the baked guest size plus the VMM overhead.
 */
export function cgroupSettings(limits: FirecrackerLimits, instance: SandboxLimits): string[] {
  const quota = Math.max(1_000, Math.round((limits.cpuPeriodUs * instance.cpuPercent) / 100));
  const memoryMiB = Math.max(instance.memoryMiB, limits.memMiB) + limits.vmmOverheadMiB;
  const settings = [`cpu.max=${quota} ${limits.cpuPeriodUs}`, `memory.max=${memoryMiB * MiB}`];
  for (const io of limits.io) {
    const parts = [io.device];
    if (io.rbps !== undefined) parts.push(`rbps=${io.rbps}`);
    if (io.wbps !== undefined) parts.push(`wbps=${io.wbps}`);
    if (io.riops !== undefined) parts.push(`riops=${io.riops}`);
    if (io.wiops !== undefined) parts.push(`wiops=${io.wiops}`);
    if (parts.length > 1) settings.push(`io.max=${parts.join(" ")}`);
  }
  return settings;
}

/** rlimits applied by the jailer to the Firecracker process (`--resource-limit res=value`). */
export function resourceLimits(instance: SandboxLimits): string[] {
  return [`fsize=${instance.fileSizeMiB * MiB}`, `no-file=${instance.openFiles}`];
}
