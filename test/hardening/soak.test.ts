/**
 * The soak in short: 12 seconds of mixed load with redeploys and deploy+delete cycles against a real
 * agent (child process). The ten-minute run is `node --import tsx bench/soak.ts --minutes 10`.
 */
import assert from "node:assert/strict";
import { runSoak } from "../../bench/soak.ts";
import { requireJailHost } from "../helpers/host.ts";

describe("hardening: soak (short)", function () {
  this.timeout(90_000);

  before(function () {
    requireJailHost(this);
  });

  // protection: everything above at once; the RSS bound catches a leak per call or per deploy
  it("serves 12 s of mixed load with deploys in between: 0 errors, agent memory bounded", async () => {
    const report = await runSoak({ durationMs: 12_000, concurrency: 6, deployEveryMs: 2000, warmupMs: 4000 });
    assert.equal(report.callErrors, 0, report.errorSamples.join("\n"));
    assert.equal(report.deployErrors, 0, report.errorSamples.join("\n"));
    assert.ok(report.calls > 100, `served ${report.calls} calls`);
    assert.ok(report.deploys >= 4, `ran ${report.deploys} deploy steps`);
    assert.ok(report.rssMiB.growth < 48, `agent RSS grew ${report.rssMiB.growth} MiB after warm-up`);
  });
});
