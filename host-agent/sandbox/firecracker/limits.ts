import { z } from "zod";
import type { SandboxLimits } from "../driver.ts";
import type { RateLimiter, TokenBucket } from "./api-types.ts";

/** Firecracker token bucket, in the units of the bucket it fills (bytes or operations). */
export const tokenBucketSchema = z.object({
  size: z.int().min(0),
  refillTimeMs: z.int().min(0),
  oneTimeBurst: z.int().min(0).optional(),
});

export const rateLimiterSchema = z
  .object({ bandwidth: tokenBucketSchema.optional(), ops: tokenBucketSchema.optional() })
  .refine((r) => r.bandwidth !== undefined || r.ops !== undefined, {
    message: "give at least one of bandwidth or ops",
  });

/** One cgroup v2 io.max line: the block device (whole disk, "major:minor") and its budgets. */
export const ioLimitSchema = z.object({
  device: z.string().regex(/^\d+:\d+$/, "a whole-disk block device as major:minor, e.g. 259:0"),
  rbps: z.int().positive().optional(),
  wbps: z.int().positive().optional(),
  riops: z.int().positive().optional(),
  wiops: z.int().positive().optional(),
});

/** Limits every microVM gets, from the agent config; per-instance numbers come from SandboxLimits. */
export const firecrackerLimitsSchema = z.object({
  /** vCPUs of the baked machine (Firecracker accepts 1 or an even number up to 32). */
  vcpus: z
    .int()
    .min(1)
    .max(32)
    .refine((n) => n === 1 || n % 2 === 0, { message: "Firecracker accepts 1 or an even vCPU count" })
    .default(1),
  /** Guest memory of the baked machine; fixed by the snapshot, so restores all get this much. */
  memMiB: z.int().min(32).default(256),
  /** cgroup cpu.max period; the quota is the period times SandboxLimits.cpuPercent / 100. */
  cpuPeriodUs: z.int().min(1_000).max(1_000_000).default(100_000),
  /** Added to the guest memory for memory.max: the VMM's own pages and the page cache it touches. */
  vmmOverheadMiB: z.int().min(0).default(32),
  io: z.array(ioLimitSchema).default([]),
  codeDisk: rateLimiterSchema.optional(),
  rootDisk: rateLimiterSchema.optional(),
  networkRx: rateLimiterSchema.optional(),
  networkTx: rateLimiterSchema.optional(),
});

export type TokenBucketConfig = z.infer<typeof tokenBucketSchema>;
export type RateLimiterConfig = z.infer<typeof rateLimiterSchema>;
export type FirecrackerLimits = z.infer<typeof firecrackerLimitsSchema>;

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
