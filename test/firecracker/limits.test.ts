import assert from "node:assert/strict";
import {
  firecrackerLimitsSchema,
  parseFirecrackerDriverConfig,
} from "../../contracts/firecracker-driver-config.ts";
import type { SandboxLimits } from "../../host-agent/sandbox/driver.ts";
import {
  cgroupSettings,
  resourceLimits,
  toRateLimiter,
} from "../../host-agent/sandbox/firecracker/limits.ts";

const instance: SandboxLimits = {
  memoryMiB: 256,
  cpuPercent: 50,
  pids: 64,
  tmpMiB: 16,
  openFiles: 512,
  fileSizeMiB: 8,
};

describe("firecracker limits from config", () => {
  it("maps cpuPercent, memory and io to cgroup v2 settings", () => {
    const limits = firecrackerLimitsSchema.parse({
      memMiB: 256,
      vmmOverheadMiB: 32,
      io: [{ device: "259:0", rbps: 10_000_000, wiops: 500 }],
    });
    assert.deepEqual(cgroupSettings(limits, instance), [
      "cpu.max=50000 100000",
      `memory.max=${288 * 1024 * 1024}`,
      "io.max=259:0 rbps=10000000 wiops=500",
    ]);
  });

  it("never caps the cgroup below the baked guest memory", () => {
    const limits = firecrackerLimitsSchema.parse({ memMiB: 1024, vmmOverheadMiB: 0 });
    assert.ok(cgroupSettings(limits, instance).includes(`memory.max=${1024 * 1024 * 1024}`));
  });

  it("maps rlimits and token buckets to the jailer's and the API's shapes", () => {
    assert.deepEqual(resourceLimits(instance), [`fsize=${8 * 1024 * 1024}`, "no-file=512"]);
    assert.deepEqual(toRateLimiter({ ops: { size: 100, refillTimeMs: 1000, oneTimeBurst: 10 } }), {
      ops: { size: 100, refill_time: 1000, one_time_burst: 10 },
    });
    assert.equal(toRateLimiter(undefined), undefined);
  });

  it("rejects invalid values with the key path", () => {
    assert.throws(
      () => parseFirecrackerDriverConfig({ limits: { vcpus: 3 } }),
      /limits\.vcpus: Firecracker accepts 1 or an even/,
    );
    assert.throws(
      () => parseFirecrackerDriverConfig({ limits: { io: [{ device: "sda" }] } }),
      /limits\.io\.0\.device/,
    );
    assert.throws(() => parseFirecrackerDriverConfig({ limits: { codeDisk: {} } }), /limits\.codeDisk/);
    assert.throws(
      () => parseFirecrackerDriverConfig({ network: { guestAddress: "300.1.1.1" } }),
      /network\.guestAddress/,
    );
  });

  it("fills defaults for an empty config", () => {
    const config = parseFirecrackerDriverConfig({});
    assert.equal(config.guestPort, 8123);
    assert.equal(config.network.tapName, "tap0");
    assert.equal(config.limits.vcpus, 1);
  });
});
