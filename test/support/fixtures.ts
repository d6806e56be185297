import type { PoolSettings } from "../../components/config.ts";

/** Pool settings with small, distinct numbers, so a test can tell where each value went. */
export const poolSettings: PoolSettings = {
  pool: {
    minIdle: 2,
    maxInstances: 32,
    idleTtlSeconds: 120,
    maxConcurrentRestores: 4,
    memoryBudgetMiB: 8192,
  },
  vm: {
    vcpus: 1,
    memoryMiB: 256,
    cpuMaxPercent: 100,
    ioReadBytesPerSecond: 1000,
    ioWriteBytesPerSecond: 1000,
    diskBandwidthBytesPerSecond: 1000,
    diskOpsPerSecond: 100,
    netBandwidthBytesPerSecond: 1000,
  },
  limits: { callTimeoutMs: 5000, payloadLimitBytes: 65536 },
};
