/**
 * /healthz gated on instance starts (review S2-9): 503 until one instance of the serving base has
 * started (restored and passed init), 503 again after N starts in a row failed, 200 once a start
 * succeeds; draining still wins. The rule alone, then a whole agent over HTTP with a failing driver
 * double and a fake clock, then a real agent with the process sandbox (a good base and a broken one).
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { request } from "undici";
import { type RunningAgent, startAgent } from "../../host-agent/agent.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { healthVerdict, ServingState } from "../../host-agent/http/serving-state.ts";
import type { StartHealth } from "../../host-agent/pool/instance-source.ts";
import { startTestAgent, type TestAgent, untilNoStarts } from "../helpers/agent.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";
import { requireJailHost } from "../helpers/host.ts";
import { captureLog } from "../helpers/log-capture.ts";
import { waitFor } from "../helpers/wait.ts";

const starts = (over: Partial<StartHealth> = {}): StartHealth => ({
  baseVersion: "b1",
  started: 0,
  consecutiveFailures: 0,
  lastError: undefined,
  startsAhead: true,
  ...over,
});

async function health(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(`${url}/healthz`);
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, unknown> };
}

describe("health gating on instance starts", () => {
  describe("the rule", () => {
    it("is 503 starting before the first start, 200 after it, 503 failing after N failures in a row", () => {
      assert.deepEqual(healthVerdict(false, starts()), {
        ok: false,
        body: { status: "starting", reason: "no instance of base b1 has started yet" },
      });
      assert.deepEqual(healthVerdict(false, starts({ started: 1 })), { ok: true, body: { status: "ok" } });
      assert.equal(
        healthVerdict(false, starts({ started: 5, consecutiveFailures: 2, lastError: "x" }), 3).ok,
        true,
      );
      assert.deepEqual(
        healthVerdict(false, starts({ started: 5, consecutiveFailures: 3, lastError: "no kvm" }), 3),
        {
          ok: false,
          body: {
            status: "failing",
            reason: "the last 3 instance starts of base b1 failed (limit 3): no kvm",
          },
        },
      );
      assert.equal(healthVerdict(false, starts({ consecutiveFailures: 1 }), 1).body.status, "failing");
    });

    it("keeps draining first, and does not wait for starts a pool with no generics never makes", () => {
      assert.deepEqual(healthVerdict(true, starts({ started: 1 })).body, { status: "draining" });
      assert.equal(healthVerdict(false, starts({ startsAhead: false })).ok, true);
      assert.equal(healthVerdict(false, starts({ startsAhead: false, consecutiveFailures: 3 })).ok, false);
      assert.equal(healthVerdict(false, undefined).ok, true, "no start source: only draining counts");
      assert.throws(() => new ServingState({ startFailureLimit: 0 }), /at least 1/);
    });
  });

  describe("a whole agent with a driver double whose starts fail", () => {
    let stateDir: string;
    let agent: RunningAgent | undefined;

    beforeEach(async () => {
      stateDir = await mkdtemp(path.join(tmpdir(), "faas-health-"));
    });
    afterEach(async () => {
      await agent?.stop();
      agent = undefined;
      await rm(stateDir, { recursive: true, force: true });
    });

    it("fails /healthz until a start succeeds, after N failures, and recovers when starts work again", async () => {
      const clock = new FakeClock();
      const driver = new FakeDriver();
      driver.failStarts = true;
      const config = loadAgentConfig({
        PORT: "0",
        ADMIN_PORT: "0",
        FAAS_STATE_DIR: stateDir,
        FAAS_POOL_GENERIC: "1",
        FAAS_HEALTH_START_FAILURES: "2",
      });
      const a = await startAgent(config, {
        clock,
        driver,
        base: { version: "v1", driver: "process", dir: "/bases/v1" },
        log: captureLog().log,
      });
      agent = a;
      // The first start failed at once: not started yet, one failure.
      await waitFor("the first failed start", () => a.rollout.startHealth().consecutiveFailures === 1);
      const starting = await health(a.dataUrl);
      assert.equal(starting.status, 503);
      assert.equal(starting.body["status"], "starting");
      assert.match(
        String(starting.body["reason"]),
        /no instance of base v1 has started yet \(1 failed: fake start failure\)/,
      );

      // The refill retries with backoff: the second failure passes the limit of 2.
      clock.advance(30_000);
      await waitFor("the second failed start", () => a.rollout.startHealth().consecutiveFailures === 2);
      assert.deepEqual(await health(a.dataUrl), {
        status: 503,
        body: {
          status: "failing",
          reason: "the last 2 instance starts of base v1 failed (limit 2): fake start failure",
        },
      });

      driver.failStarts = false;
      clock.advance(30_000);
      await waitFor("a start to succeed", () => a.rollout.startHealth().started === 1);
      assert.deepEqual(await health(a.dataUrl), { status: 200, body: { status: "ok" } });

      // Draining still answers draining.
      a.serving.startDraining();
      assert.deepEqual(await health(a.dataUrl), { status: 503, body: { status: "draining" } });
    });
  });

  describe("a real agent with the process sandbox", () => {
    let agent: TestAgent | undefined;

    before(function () {
      requireJailHost(this);
    });
    afterEach(async () => {
      if (agent) {
        await untilNoStarts(agent);
        await agent.close();
      }
      agent = undefined;
    });

    it("answers 200 only once a generic instance of its base has started", async () => {
      agent = await startTestAgent({ FAAS_POOL_GENERIC: "1" });
      const a = agent;
      const seen: number[] = [];
      for (;;) {
        const h = await health(a.dataUrl);
        seen.push(h.status);
        if (h.status === 200) break;
        assert.equal(h.body["status"], "starting");
        await new Promise((r) => setTimeout(r, 20));
      }
      const pool = (await a.admin("GET", "/v1/pool")).json as { instances: { generic: number } };
      assert.ok(pool.instances.generic >= 1, "a generic instance is up when /healthz says ok");
      assert.ok(a.rollout.startHealth().started >= 1);
    });

    it("fails /healthz with the reason when its base's instances cannot start", async () => {
      agent = await startTestAgent(
        { FAAS_POOL_GENERIC: "1", FAAS_HEALTH_START_FAILURES: "2" },
        { base: { version: "0badba5e0badba5e0badba5e", driver: "process", dir: "/nonexistent/base" } },
      );
      const a = agent;
      await waitFor("two failed starts", () => a.rollout.startHealth().consecutiveFailures >= 2, 20_000);
      const h = await health(a.dataUrl);
      assert.equal(h.status, 503);
      assert.equal(h.body["status"], "failing");
      assert.match(
        String(h.body["reason"]),
        /instance starts of base 0badba5e0badba5e0badba5e failed \(limit 2\): \S/,
      );
    });
  });
});
