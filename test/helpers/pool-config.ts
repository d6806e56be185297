import type { PoolConfig } from "../../host-agent/pool/pool.ts";

/** A small pool for tests: 4 instances, a memory budget that never binds, no per-function cap. */
export function testPoolConfig(overrides: Partial<PoolConfig> = {}): PoolConfig {
  return {
    genericMin: 2,
    genericMax: 2,
    maxInstances: 4,
    maxStarting: 2,
    idleTtlMs: 60_000,
    memoryBudgetMiB: 1 << 20,
    instanceMemoryMiB: 128,
    functionShare: 1,
    headroom: 0.5,
    queueTargetMs: 250,
    defaultServiceMs: 25,
    defaultStartMs: 250,
    ...overrides,
  };
}
