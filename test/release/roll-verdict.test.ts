import assert from "node:assert/strict";
import { rolloutSchema } from "../../host-agent/release/release.ts";
import { type CandidateCounts, rollVerdict } from "../../host-agent/release/roll-verdict.ts";

const policy = rolloutSchema.parse({ canaryPercent: 10, minCalls: 20, errorRateThreshold: 0.05 });
const counts = (c: Partial<CandidateCounts>): CandidateCounts => ({
  baseVersion: "v2",
  genericMin: 2,
  startsOk: 0,
  startFailures: 0,
  lastStartError: undefined,
  calls: 0,
  errors: 0,
  ...c,
});

describe("the roll's verdict (release/roll-verdict.ts)", () => {
  it("waits while the new pool warms, and moves calls over once it has its generic instances", () => {
    assert.deepEqual(rollVerdict("warming", policy, counts({ startsOk: 1 })), { verdict: "continue" });
    assert.deepEqual(rollVerdict("warming", policy, counts({ startsOk: 2 })), { verdict: "warmed" });
  });

  it("promotes a canary after minCalls calls within the error rate, not before", () => {
    assert.deepEqual(rollVerdict("canary", policy, counts({ calls: 19 })), { verdict: "continue" });
    assert.deepEqual(rollVerdict("canary", policy, counts({ calls: 20, errors: 1 })), { verdict: "promote" });
  });

  it("abandons at the start-failure threshold, naming the count and the last error", () => {
    assert.deepEqual(
      rollVerdict("warming", policy, counts({ startFailures: 3, lastStartError: "bwrap: no" })),
      { verdict: "abandon", reason: "3 instance starts of base v2 failed (threshold 3): bwrap: no" },
    );
  });

  it("abandons over the error rate, and early once the failures make the rate hopeless", () => {
    assert.deepEqual(rollVerdict("canary", policy, counts({ calls: 20, errors: 2 })), {
      verdict: "abandon",
      reason: "2 of 20 calls on base v2 failed (error rate 0.100 > threshold 0.05)",
    });
    // 2 errors > 0.05 * 20: no number of further good calls can bring 2 errors in 3 calls back under.
    assert.equal(rollVerdict("canary", policy, counts({ calls: 3, errors: 2 })).verdict, "abandon");
    assert.equal(rollVerdict("canary", policy, counts({ calls: 3, errors: 1 })).verdict, "continue");
  });
});
