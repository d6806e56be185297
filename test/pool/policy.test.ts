import assert from "node:assert/strict";
import {
  callsPerInstanceInQueue,
  capacity,
  functionMax,
  functionTarget,
  genericTarget,
  type PolicyConfig,
} from "../../host-agent/pool/policy.ts";
import { MovingAverage, RateMeter } from "../../host-agent/pool/traffic.ts";

const C: PolicyConfig = {
  genericMin: 2,
  genericMax: 10,
  maxInstances: 64,
  memoryBudgetMiB: 4096,
  instanceMemoryMiB: 256,
  functionShare: 0.5,
  headroom: 0.5,
  queueTargetMs: 250,
  defaultServiceMs: 25,
  defaultStartMs: 250,
};

describe("pool sizing policy", () => {
  it("bounds capacity by the memory budget and the configured maximum", () => {
    assert.equal(capacity(C), 16, "4096 MiB / 256 MiB");
    assert.equal(capacity({ ...C, maxInstances: 8 }), 8);
    assert.equal(capacity({ ...C, memoryBudgetMiB: 100 }), 1, "at least one instance");
    assert.equal(functionMax(C), 8);
  });

  it("sizes the generic pool by Little's law on misses and start time, within min and max", () => {
    assert.equal(genericTarget(C, 0, undefined), 2, "idle host: the minimum");
    // 20 misses/s x 0.4 s start x 1.5 headroom = 12, capped at 10.
    assert.equal(genericTarget(C, 20, 400), 10);
    // 4/s x 0.5 s x 1.5 = 3.
    assert.equal(genericTarget(C, 4, 500), 3);
    assert.equal(genericTarget({ ...C, memoryBudgetMiB: 512 }, 20, 400), 2, "never more than capacity");
  });

  it("sizes a function's instances by its rate and service time, capped by its share", () => {
    assert.equal(functionTarget(C, 0, 10), 0, "no traffic: scale to zero");
    assert.equal(functionTarget(C, 100, 10), 2, "100/s x 10 ms x 1.5 = 1.5 -> 2");
    assert.equal(functionTarget(C, 1000, 100), 8, "150 needed, share caps at 8");
  });

  it("lets calls queue behind an instance only while they fit in the queue target", () => {
    assert.equal(callsPerInstanceInQueue(C, 1), 250);
    assert.equal(callsPerInstanceInQueue(C, undefined), 10);
    assert.equal(callsPerInstanceInQueue(C, 300), 0, "slower than the target: no queueing");
  });
});

describe("traffic measurement", () => {
  it("counts arrivals per second over a sliding window", () => {
    const m = new RateMeter(10);
    const t0 = 1_000_000;
    for (let i = 0; i < 50; i++) m.record(t0 + i * 10);
    assert.equal(m.rate(t0 + 500), 5, "50 calls over a 10 s window");
    assert.equal(m.rate(t0 + 9_999), 5);
    assert.equal(m.rate(t0 + 10_500), 0, "forgotten after the window");
    assert.ok(m.idle(t0 + 20_000));
  });

  it("averages with more weight on recent samples", () => {
    const a = new MovingAverage(0.5);
    assert.equal(a.get(), undefined);
    a.add(10);
    a.add(20);
    assert.equal(a.get(), 15);
  });
});
