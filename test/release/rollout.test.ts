/**
 * The roll's decisions with a fake driver and a fake clock: which pool serves which call, when the old
 * pool closes, and when the new base is judged bad and dropped.
 */
import assert from "node:assert/strict";
import pino from "pino";
import { createMetrics } from "../../host-agent/metrics.ts";
import type { FunctionCode } from "../../host-agent/pool/lease.ts";
import type { PoolLease as Lease } from "../../host-agent/pool/pool-lease.ts";
import { driverProbe } from "../../host-agent/release/base-check.ts";
import { parseRelease, type Release, ReleaseError } from "../../host-agent/release/release.ts";
import { Rollout, type RolloutDeps } from "../../host-agent/release/rollout.ts";
import type { BaseImage } from "../../host-agent/sandbox/driver.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeDriver, type FakeInstance } from "../helpers/fake-driver.ts";
import { testPoolConfig } from "../helpers/pool-config.ts";

const LIMITS = { memoryMiB: 128, cpuPercent: 100, pids: 32, tmpMiB: 16, openFiles: 256, fileSizeMiB: 16 };

const base = (version: string): BaseImage => ({ version, driver: "process", dir: `/bases/${version}` });

function release(version: string, rollout: Record<string, unknown> = {}): Release {
  return parseRelease({ baseVersion: version, baseDir: `/bases/${version}`, rollout });
}

function code(name: string): FunctionCode {
  return { name, codeHash: `${name}-hash`, entry: "index.js", hostPath: `/code/${name}` };
}

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

/** A random that replays a fixed cycle, so the canary's share is exact. */
function cycle(values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

function makeRollout(opts: Partial<RolloutDeps> = {}) {
  const clock = new FakeClock();
  const driver = new FakeDriver();
  let n = 0;
  const newInstanceId = () => `i${n++}`;
  const rejected = new Set<string>();
  const rollout = new Rollout(
    {
      driver,
      limits: LIMITS,
      poolConfig: testPoolConfig({ genericMin: 1, genericMax: 1 }),
      clock,
      log: pino({ level: "silent" }),
      metrics: createMetrics(),
      newInstanceId,
      clientFor: driver.clientFor,
      random: () => 0,
      checkBase: async (r) => {
        if (rejected.has(r.baseVersion)) throw new ReleaseError("baseDir", "not a baked base");
        return base(r.baseVersion);
      },
      probeBase: driverProbe({ driver, limits: LIMITS, newInstanceId, clientFor: driver.clientFor }),
      warmupTimeoutMs: 10_000,
      drainTimeoutMs: 30_000,
      ...opts,
    },
    { release: release("v1"), base: base("v1") },
  );
  rollout.start();
  return { rollout, clock, driver, rejected };
}

const baseOf = (lease: Lease) => (lease.instance.sandbox as FakeInstance).base.version;

describe("base rollout (fake driver)", () => {
  it("rolls all at once: new calls go to the new base, a call in flight finishes, then the old pool closes", async () => {
    const { rollout, clock, driver } = makeRollout();
    await settle();
    const inFlight = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(inFlight), "v1");

    await rollout.begin(release("v2"));
    const status = await rollout.settled();
    assert.equal(status.state, "completed");
    assert.equal(status.current.baseVersion, "v2");
    assert.equal(status.previous?.baseVersion, "v1");
    assert.equal(status.lastRoll?.outcome, "completed");

    const next = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(next), "v2");
    next.end(true);

    // The old pool waits for its lease: its busy instance is still alive.
    const v1Instance = inFlight.instance.sandbox as FakeInstance;
    assert.equal(v1Instance.destroyedWith, undefined);
    inFlight.end(true);
    await settle();
    assert.ok(v1Instance.destroyedWith, "the old instance stops once its call is done");
    assert.deepEqual(
      driver.alive.map((i) => i.base.version).filter((v) => v === "v1"),
      [],
      "every v1 instance is gone",
    );
    const picture = rollout.snapshot() as unknown as { pools: Array<{ role: string }> };
    assert.deepEqual(
      picture.pools.map((p) => p.role),
      ["current"],
    );
    await rollout.close();
  });

  it("sends the canary share of calls to the new base, then promotes it after minCalls", async () => {
    // Every 4th draw is below 0.25: exactly a quarter of calls go to the canary.
    const { rollout, clock } = makeRollout({ random: cycle([0.1, 0.5, 0.7, 0.9]) });
    await settle();
    await rollout.begin(release("v2", { canaryPercent: 25, minCalls: 3 }));
    await settle();
    assert.equal(rollout.status().phase, "canary");
    const served: string[] = [];
    for (let i = 0; i < 8; i++) {
      const lease = await rollout.acquire(code("a"), clock.now() + 1000);
      served.push(baseOf(lease));
      lease.end(true);
    }
    assert.deepEqual(served, ["v2", "v1", "v1", "v1", "v2", "v1", "v1", "v1"]);
    assert.equal(rollout.status().state, "rolling");
    // The 9th call is the canary's third: minCalls reached with no error, the new base takes over.
    const lease = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(lease), "v2");
    lease.end(true);
    const status = await rollout.settled();
    assert.equal(status.state, "completed");
    assert.equal(status.current.baseVersion, "v2");
    assert.equal(status.lastRoll?.callsDuring, 9, "calls answered while the roll ran");
    await rollout.close();
  });

  it("rolls back by itself when the canary's error rate passes the threshold", async () => {
    const { rollout, clock, driver } = makeRollout({ random: () => 0 });
    await settle();
    await rollout.begin(release("v2", { canaryPercent: 50, minCalls: 10, errorRateThreshold: 0.2 }));
    await settle();
    // Three failed calls out of at most ten already put the rate past 0.2.
    for (let i = 0; i < 3; i++) {
      const lease = await rollout.acquire(code("a"), clock.now() + 1000);
      assert.equal(baseOf(lease), "v2");
      lease.end(false);
      await settle();
    }
    const status = await rollout.settled();
    assert.equal(status.state, "rolled-back");
    assert.match(
      status.reason ?? "",
      /3 of 3 calls on base v2 failed \(error rate 1\.000 > threshold 0\.2\)/,
    );
    assert.equal(status.current.baseVersion, "v1");
    const lease = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(lease), "v1", "the old base serves again");
    lease.end(true);
    await settle();
    assert.deepEqual(
      driver.alive.filter((i) => i.base.version === "v2"),
      [],
      "the new pool is closed",
    );
    await rollout.close();
  });

  it("rolls back when the new base's instance starts fail past the threshold, and calls keep working", async () => {
    const { rollout, clock, driver } = makeRollout({ probeBase: async () => undefined });
    await settle();
    driver.failingBases.add("v2");
    await rollout.begin(release("v2", { startFailureThreshold: 3 }));
    await settle();
    assert.equal(rollout.status().phase, "warming");
    // Calls are served by v1 meanwhile.
    const lease = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(lease), "v1");
    lease.end(true);
    // The pool retries with backoff (timers): three failures in all.
    for (let i = 0; i < 5 && rollout.status().state === "rolling"; i++) {
      clock.advance(1000);
      await settle();
    }
    const status = await rollout.settled();
    assert.equal(status.state, "rolled-back");
    assert.match(
      status.reason ?? "",
      /3 instance starts of base v2 failed \(threshold 3\): base v2 does not start/,
    );
    await rollout.close();
  });

  it("rolls back when the probe instance of the new base does not start", async () => {
    const { rollout, driver } = makeRollout();
    await settle();
    driver.failingBases.add("v2");
    await rollout.begin(release("v2"));
    const status = await rollout.settled();
    assert.equal(status.state, "rolled-back");
    assert.match(
      status.reason ?? "",
      /an instance of base v2 failed its start check: base v2 does not start/,
    );
    await rollout.close();
  });

  it("gives up when the new pool does not warm within the timeout", async () => {
    const { rollout, clock, driver } = makeRollout({ probeBase: async () => undefined });
    await settle();
    let open!: () => void;
    driver.gate = new Promise((r) => {
      open = r;
    });
    await rollout.begin(release("v2"));
    await settle();
    clock.advance(10_000);
    const status = await rollout.settled();
    assert.equal(status.state, "rolled-back");
    assert.match(status.reason ?? "", /started 0 of 1 instances within 10000 ms/);
    open();
    await rollout.close();
  });

  it("serves a call on the current base when the canary cannot, and counts it against the canary", async () => {
    const { rollout, clock, driver } = makeRollout({ random: () => 0 });
    await settle();
    await rollout.begin(release("v2", { canaryPercent: 50, minCalls: 100, startFailureThreshold: 5 }));
    await settle();
    driver.failingBases.add("v2");
    const first = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(first), "v2", "the canary's warm generic");
    // The v2 pool must start a new instance for a second concurrent call, and cannot.
    const second = await rollout.acquire(code("b"), clock.now() + 1000);
    assert.equal(baseOf(second), "v1");
    const progress = rollout.status().progress!;
    assert.equal(progress.errors, 1);
    assert.ok(progress.startFailures >= 1);
    first.end(true);
    second.end(true);
    await rollout.close();
  });

  it("rolls back by hand: during a roll it abandons it, after a roll it rolls to the previous release", async () => {
    const { rollout, clock } = makeRollout({ random: () => 0.99 });
    await settle();
    await rollout.begin(release("v2", { canaryPercent: 10 }));
    await settle();
    assert.equal(rollout.status().phase, "canary");
    await rollout.rollback();
    let status = rollout.status();
    assert.equal(status.state, "rolled-back");
    assert.equal(status.reason, "manual rollback");
    assert.equal(status.current.baseVersion, "v1");
    await assert.rejects(
      rollout.rollback(),
      /the roll to base v2 was already rolled back \(manual rollback\); base v1 serves/,
      "nothing is rolled back twice",
    );

    await rollout.begin(release("v2"));
    status = await rollout.settled();
    assert.equal(status.current.baseVersion, "v2");
    await rollout.rollback();
    status = await rollout.settled();
    assert.equal(status.state, "rolled-back");
    assert.equal(status.current.baseVersion, "v1");
    assert.equal(status.previous?.baseVersion, "v2", "the release left is kept, to roll forward again");
    assert.equal(status.lastRoll?.kind, "rollback");
    await rollout.rollback();
    assert.equal(
      (await rollout.settled()).current.baseVersion,
      "v2",
      "rolling back a rollback rolls forward",
    );
    await rollout.rollback();
    assert.equal((await rollout.settled()).current.baseVersion, "v1");
    const lease = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.equal(baseOf(lease), "v1");
    lease.end(true);
    await rollout.close();
  });

  it("refuses a release whose base check fails, a second roll in flight, and a rollback with nothing before", async () => {
    const { rollout, rejected } = makeRollout({ probeBase: () => new Promise(() => undefined) });
    await settle();
    await assert.rejects(rollout.rollback(), /nothing to roll back to: base v1 is the only release/);
    rejected.add("bad");
    await assert.rejects(rollout.begin(release("bad")), /baseDir: not a baked base/);
    assert.equal(rollout.status().state, "stable", "a rejected release changes nothing");
    await rollout.begin(release("v2"));
    await assert.rejects(rollout.begin(release("v3")), /a roll to base v2 is in progress \(probing\)/);
    await rollout.close();
  });

  it("retires a function's old code in every pool, and reports every pool", async () => {
    const { rollout, clock } = makeRollout({ random: cycle([0, 0.9]) });
    await settle();
    await rollout.begin(release("v2", { canaryPercent: 50, minCalls: 100 }));
    await settle();
    const a = await rollout.acquire(code("a"), clock.now() + 1000);
    const b = await rollout.acquire(code("a"), clock.now() + 1000);
    assert.deepEqual([baseOf(a), baseOf(b)].sort(), ["v1", "v2"]);
    const picture = rollout.snapshot() as unknown as {
      functions: Record<string, { busy: number }>;
      pools: Array<{ role: string; baseVersion: string }>;
    };
    assert.equal(picture.functions.a?.busy, 2);
    assert.deepEqual(
      picture.pools.map((p) => `${p.role}:${p.baseVersion}`),
      ["current:v1", "candidate:v2"],
    );
    assert.equal(rollout.retireFunction("a", "other-hash"), 2);
    a.end(true);
    b.end(true);
    await settle();
    assert.equal(a.instance.state, "stopping");
    assert.equal(b.instance.state, "stopping");
    await rollout.close();
  });
});
