import assert from "node:assert/strict";
import pino from "pino";
import { createMetrics } from "../../host-agent/metrics.ts";
import { type FunctionCode, FunctionLoadError, PoolBusyError } from "../../host-agent/pool/lease.ts";
import { Pool, type PoolConfig } from "../../host-agent/pool/pool.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";
import { testPoolConfig } from "../helpers/pool-config.ts";

const LIMITS = { memoryMiB: 128, cpuPercent: 100, pids: 32, tmpMiB: 16, openFiles: 256, fileSizeMiB: 16 };
const BASE = { version: "base-1", driver: "process" as const, dir: "/nowhere" };

function code(name: string, codeHash = `${name}-hash`): FunctionCode {
  return { name, codeHash, entry: "index.js", hostPath: `/code/${codeHash}` };
}

/** Lets queued promise callbacks run. */
const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

function makePool(config: Partial<PoolConfig> = {}) {
  const clock = new FakeClock();
  const driver = new FakeDriver();
  let n = 0;
  const metrics = createMetrics();
  const pool = new Pool({
    driver,
    base: BASE,
    limits: LIMITS,
    config: testPoolConfig(config),
    clock,
    log: pino({ level: "silent" }),
    metrics,
    newInstanceId: () => `i${n++}`,
    clientFor: driver.clientFor,
  });
  return { pool, clock, driver, metrics };
}

describe("warm pool", () => {
  it("starts the generic pool ahead of any call, up to its target", async () => {
    const { pool, driver } = makePool({ genericMin: 2, genericMax: 2 });
    pool.start();
    await settle();
    assert.equal(driver.started.length, 2);
    assert.deepEqual(pool.snapshot().instances.generic, 2);
  });

  it("specializes a generic instance on a function's first call, then reuses it (warm)", async () => {
    const { pool, driver, clock } = makePool({ genericMin: 1, genericMax: 1 });
    pool.start();
    await settle();
    const first = await pool.acquire(code("a"), clock.now() + 1000);
    assert.equal(first.acquired, "generic");
    assert.equal(driver.started[0]!.attached?.codeHash, "a-hash");
    first.end(true);
    const second = await pool.acquire(code("a"), clock.now() + 1000);
    assert.equal(second.acquired, "warm");
    assert.equal(second.instance.id, first.instance.id);
    second.end(true);
    await settle();
    assert.equal(pool.snapshot().instances.generic, 0, "no jail start competes with the first call");
    clock.advance(50);
    await settle();
    assert.equal(
      pool.snapshot().instances.generic,
      1,
      "the generic pool was refilled in the background, just after",
    );
  });

  it("serves one call at a time per instance: a second concurrent call gets another instance", async () => {
    // Calls that take longer than the queue target never wait for a busy instance.
    const { pool, clock } = makePool({ genericMin: 2, genericMax: 2, defaultServiceMs: 1000 });
    pool.start();
    await settle();
    const a = await pool.acquire(code("a"), clock.now() + 1000);
    const b = await pool.acquire(code("a"), clock.now() + 1000);
    assert.notEqual(a.instance.id, b.instance.id);
  });

  it("does not hand out an instance holding other code of the same function (redeploy)", async () => {
    const { pool, clock } = makePool({ genericMin: 1, genericMax: 1 });
    pool.start();
    await settle();
    const old = await pool.acquire(code("a", "v1"), clock.now() + 1000);
    old.end(true);
    const fresh = await pool.acquire(code("a", "v2"), clock.now() + 1000);
    assert.notEqual(fresh.instance.id, old.instance.id);
    assert.equal(pool.retireFunction("a", "v2"), 1);
    await settle();
    assert.equal(
      (old.instance.sandbox as unknown as { destroyedWith: string }).destroyedWith,
      "its function was redeployed or deleted",
    );
  });

  it("stops an idle specialized instance after its TTL, not before", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0, idleTtlMs: 60_000 });
    const lease = await pool.acquire(code("a"), clock.now() + 1000);
    assert.equal(lease.acquired, "cold");
    lease.end(true);
    clock.advance(59_999);
    await settle();
    assert.equal(pool.snapshot().instances.idle, 1);
    clock.advance(1);
    await settle();
    assert.equal(pool.snapshot().instances.idle, 0);
    assert.equal(pool.snapshot().total, 0, "scaled to zero");
  });

  // protection: Pool.stop asks the instance's client for its waiting console lines before destroying it
  it("fetches a stopping instance's waiting console lines before it destroys it", async () => {
    const { pool, clock, driver } = makePool({ genericMin: 0, genericMax: 0, idleTtlMs: 60_000 });
    const lease = await pool.acquire(code("a"), clock.now() + 1000);
    lease.end(true);
    clock.advance(60_000);
    await settle();
    assert.deepEqual(driver.events, [`flush ${lease.instance.id}`, `destroy ${lease.instance.id}`]);
  });

  it("queues a call when every instance is busy and serves it when one is released", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0, maxInstances: 1 });
    const busy = await pool.acquire(code("a"), clock.now() + 5000);
    const waiting = pool.acquire(code("a"), clock.now() + 5000);
    await settle();
    assert.equal(pool.snapshot().queued, 1);
    busy.end(true);
    const lease = await waiting;
    assert.equal(lease.instance.id, busy.instance.id);
    assert.equal(lease.acquired, "warm");
  });

  it("rejects a queued call with PoolBusyError once its deadline passes", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0, maxInstances: 1 });
    await pool.acquire(code("a"), clock.now() + 5000);
    const waiting = pool.acquire(code("b"), clock.now() + 2000);
    await settle();
    clock.advance(2000);
    await assert.rejects(
      waiting,
      (err: unknown) => err instanceof PoolBusyError && err.retryAfterSeconds >= 1,
    );
    assert.equal(pool.snapshot().queued, 0);
  });

  // protection: Pool.freshWithin bounds the start and load of a call's instance by the call's deadline
  it("gives up on a call whose instance is not ready by its deadline, and keeps the instance for the next", async () => {
    const { pool, clock, driver, metrics } = makePool({ genericMin: 0, genericMax: 0, maxInstances: 2 });
    let open!: () => void;
    driver.gate = new Promise((r) => {
      open = r;
    });
    const first = pool.acquire(code("a"), clock.now() + 2000);
    let outcome = "pending";
    first.then(
      () => {
        outcome = "served";
      },
      (err: Error) => {
        outcome = err instanceof PoolBusyError ? `busy: ${err.message}` : `other: ${err.message}`;
      },
    );
    await settle();
    assert.equal(pool.snapshot().instances.starting, 1);
    clock.advance(1999);
    await settle();
    assert.equal(outcome, "pending", "the call waits for its instance until its deadline");
    clock.advance(1);
    await settle();
    assert.match(outcome, /^busy: no instance could be prepared for a within the call's deadline/);
    // The start finishes later: the instance is loaded and kept, and the next call gets it warm.
    driver.gate = undefined;
    open();
    await settle();
    assert.deepEqual(pool.snapshot().functions.a, { idle: 1, busy: 0, specializing: 0 });
    const next = await pool.acquire(code("a"), clock.now() + 2000);
    assert.equal(next.acquired, "warm");
    assert.equal(next.instance.calls, 1, "the call that gave up is not counted on the instance");
    assert.equal(driver.started.length, 1);
    const acquired = (await metrics.poolAcquire.get()).values.map((v) => `${v.labels.result}=${v.value}`);
    assert.deepEqual(acquired, ["warm=1"], "the call that gave up was not counted as served cold");
  });

  it("gives up on a queued call at its deadline even while its instance is being prepared", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 3,
      maxStarting: 1,
    });
    let openFirst!: () => void;
    driver.gate = new Promise((r) => {
      openFirst = r;
    });
    const b = pool.acquire(code("b"), clock.now() + 5000);
    await settle();
    // One start at a time: c queues, and is taken from the queue to a start of its own once b's is done.
    const c = pool.acquire(code("c"), clock.now() + 3000);
    let outcome = "pending";
    c.then(
      () => {
        outcome = "served";
      },
      (err: Error) => {
        outcome = err instanceof PoolBusyError ? `busy: ${err.message}` : `other: ${err.message}`;
      },
    );
    await settle();
    assert.equal(pool.snapshot().queued, 1);
    driver.gate = new Promise(() => {});
    openFirst();
    (await b).end(true);
    await settle();
    assert.equal(pool.snapshot().queued, 0, "c left the queue for a start");
    assert.equal(pool.snapshot().instances.starting, 1);
    clock.advance(3000);
    await settle();
    assert.match(outcome, /^busy: no instance could be prepared for c within the call's deadline/);
  });

  it("makes room for another function by stopping the least recently used idle instance", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0, maxInstances: 2 });
    const a = await pool.acquire(code("a"), clock.now() + 1000);
    a.end(true);
    clock.advance(10);
    const b = await pool.acquire(code("b"), clock.now() + 1000);
    b.end(true);
    const c = await pool.acquire(code("c"), clock.now() + 1000);
    await settle();
    assert.equal(c.acquired, "cold");
    assert.equal(
      (a.instance.sandbox as unknown as { destroyedWith: string }).destroyedWith,
      "room needed for another function",
    );
    assert.equal((b.instance.sandbox as unknown as { destroyedWith?: string }).destroyedWith, undefined);
  });

  it("stops an instance whose call failed instead of reusing it", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0 });
    const lease = await pool.acquire(code("a"), clock.now() + 1000);
    lease.end(false);
    await settle();
    assert.equal(
      (lease.instance.sandbox as unknown as { destroyedWith: string }).destroyedWith,
      "its call failed",
    );
    const next = await pool.acquire(code("a"), clock.now() + 1000);
    assert.notEqual(next.instance.id, lease.instance.id);
  });

  it("turns a module that fails to load into FunctionLoadError and drops the instance", async () => {
    const { pool, clock, driver } = makePool({ genericMin: 1, genericMax: 1 });
    pool.start();
    await settle();
    driver.brokenFunctions.add("bad");
    await assert.rejects(pool.acquire(code("bad"), clock.now() + 1000), FunctionLoadError);
    await settle();
    assert.equal(driver.started[0]!.destroyedWith, "specialization failed");
  });

  it("replaces a generic instance that dies on its own", async () => {
    const { pool, driver } = makePool({ genericMin: 1, genericMax: 1 });
    pool.start();
    await settle();
    driver.started[0]!.crash("segfault");
    await settle();
    assert.equal(driver.started.length, 2);
    assert.equal(pool.snapshot().instances.generic, 1);
  });

  it("backs off refilling while starts fail, then recovers", async () => {
    const { pool, driver, clock } = makePool({ genericMin: 1, genericMax: 1 });
    driver.failStarts = true;
    pool.start();
    await settle();
    assert.equal(pool.snapshot().instances.generic, 0);
    driver.failStarts = false;
    clock.advance(199);
    await settle();
    assert.equal(driver.started.length, 0, "no retry before the backoff delay");
    clock.advance(1);
    await settle();
    assert.equal(pool.snapshot().instances.generic, 1);
  });

  it("never starts more than maxStarting instances at once", async () => {
    const { pool, driver, clock } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxStarting: 2,
      maxInstances: 10,
    });
    let open!: () => void;
    driver.gate = new Promise((r) => {
      open = r;
    });
    const calls = ["a", "b", "c", "d"].map((name) => pool.acquire(code(name), clock.now() + 10_000));
    await settle();
    assert.equal(pool.snapshot().instances.starting, 2);
    driver.gate = undefined;
    open();
    const leases = await Promise.all(calls.slice(0, 2));
    assert.equal(leases.length, 2);
    for (const l of leases) l.end(true);
    const rest = await Promise.all(calls.slice(2));
    assert.equal(rest.length, 2);
  });
});

describe("warm pool policy", () => {
  it("a burst of first calls to one new function shares the instances being prepared instead of starting one each", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 20,
      maxStarting: 20,
    });
    const calls = Array.from({ length: 10 }, () => pool.acquire(code("burst"), clock.now() + 30_000));
    await settle();
    assert.equal(driver.started.length, 1, "one instance is prepared for ten calls of a fast function");
    const served: string[] = [];
    for (const call of calls) {
      const lease = await call;
      served.push(lease.instance.id);
      clock.advance(5);
      lease.end(true);
    }
    assert.equal(new Set(served).size, 1);
  });

  it("starts more instances for a burst once the function is measured slow", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 20,
      maxStarting: 20,
      queueTargetMs: 250,
    });
    // Teach the pool that calls of "slow" take 100 ms: then at most 2 calls may queue behind one instance.
    const first = await pool.acquire(code("slow"), clock.now() + 30_000);
    clock.advance(100);
    first.end(true);
    const busy = await pool.acquire(code("slow"), clock.now() + 30_000);
    assert.equal(busy.instance.id, first.instance.id);
    const calls = Array.from({ length: 6 }, () => pool.acquire(code("slow"), clock.now() + 30_000));
    await settle();
    assert.equal(driver.started.length, 3, "6 queued calls at 2 per instance: 2 more instances, not 6");
    busy.end(true);
    for (const c of calls) (await c).end(true);
  });

  it("keeps one hot function to its share of the host", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 4,
      maxStarting: 4,
      functionShare: 0.5,
      defaultServiceMs: 1000,
    });
    const hot = [
      await pool.acquire(code("hot"), clock.now() + 1000),
      await pool.acquire(code("hot"), clock.now() + 1000),
    ];
    const third = pool.acquire(code("hot"), clock.now() + 1000);
    await settle();
    assert.equal(driver.started.length, 2, "the hot function holds at most half of 4 instances");
    const other = await pool.acquire(code("other"), clock.now() + 1000);
    assert.equal(other.acquired, "cold", "another function still gets an instance");
    hot[0]!.end(true);
    assert.equal(
      (await third).instance.id,
      hot[0]!.instance.id,
      "the hot function's extra call waited for its own",
    );
  });

  it("derives the host's capacity from the memory budget", async () => {
    const { pool, clock } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 10,
      memoryBudgetMiB: 256,
      instanceMemoryMiB: 128,
      defaultServiceMs: 1000,
    });
    await pool.acquire(code("a"), clock.now() + 1000);
    await pool.acquire(code("b"), clock.now() + 1000);
    const third = pool.acquire(code("c"), clock.now() + 500);
    await settle();
    clock.advance(500);
    await assert.rejects(third, PoolBusyError);
    assert.deepEqual(pool.snapshot().targets, { generic: 0, capacity: 2, functionMax: 2 });
  });

  it("grows the generic pool with the measured miss rate and start time, within its bounds", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 1,
      genericMax: 6,
      maxInstances: 20,
      maxStarting: 20,
      headroom: 0,
    });
    pool.start();
    await settle();
    assert.equal(pool.snapshot().targets.generic, 1);
    // 40 first calls to distinct functions within one second, starts measured at 0 ms by the fake clock:
    // teach a start time by delaying the fake starts with the clock.
    for (let i = 0; i < 40; i++) {
      const lease = await pool.acquire(code(`f${i}`), clock.now() + 1000);
      lease.end(true);
    }
    for (let i = 0; i < 20; i++) pool.traffic.startMs.add(1000);
    const target = pool.snapshot().targets.generic;
    // 40 misses over a 10 s window = 4/s; start time averaged towards 1 s: target grows above the minimum.
    assert.ok(target > 1 && target <= 6, `generic target ${target}`);
    assert.ok(driver.started.length > 1);
  });

  it("prewarms another specialized instance when a function's load needs it", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 1,
      genericMax: 3,
      maxInstances: 10,
      maxStarting: 10,
      headroom: 1,
    });
    pool.start();
    await settle();
    // One call teaches a 100 ms service time; then 20 arrivals a second need 2 instances (4 with headroom 1).
    const first = await pool.acquire(code("busy"), clock.now() + 1000);
    clock.advance(100);
    first.end(true);
    pool.traffic.fn("busy").arrivals.record(clock.now(), 200);
    for (let i = 0; i < 3; i++) {
      const lease = await pool.acquire(code("busy"), clock.now() + 1000);
      lease.end(true);
      await settle();
    }
    const fns = pool.snapshot().functions as Record<string, { idle: number }>;
    assert.ok(
      (fns.busy?.idle ?? 0) >= 2,
      `prewarmed instances: ${JSON.stringify(fns.busy)} of ${driver.started.length} started`,
    );
  });
});

describe("warm pool, functions that allow concurrent calls", () => {
  const shared = (name: string, concurrency: number): FunctionCode => ({ ...code(name), concurrency });

  it("packs calls onto one instance up to the function's concurrency, then takes another", async () => {
    const { pool, clock } = makePool({ genericMin: 2, genericMax: 2, defaultServiceMs: 1000 });
    pool.start();
    await settle();
    const leases = [];
    for (let i = 0; i < 3; i++) leases.push(await pool.acquire(shared("a", 3), clock.now() + 1000));
    assert.equal(new Set(leases.map((l) => l.instance.id)).size, 1, "three calls share one instance");
    assert.deepEqual(
      leases.map((l) => l.acquired),
      ["generic", "warm", "warm"],
    );
    const fourth = await pool.acquire(shared("a", 3), clock.now() + 1000);
    assert.notEqual(fourth.instance.id, leases[0]!.instance.id, "the fourth call needs another instance");
    leases[0]!.end(true);
    const fifth = await pool.acquire(shared("a", 3), clock.now() + 1000);
    assert.equal(fifth.instance.id, leases[0]!.instance.id, "a freed place is taken before an idle instance");
    assert.equal(pool.snapshot().instances.busy, 2);
    assert.equal(pool.snapshot().callsInFlight, 4, "three calls on one instance, one on the other");
  });

  it("serves the calls queued behind a burst's first start from that one instance", async () => {
    const { pool, clock, driver } = makePool({
      genericMin: 0,
      genericMax: 0,
      maxInstances: 20,
      maxStarting: 20,
    });
    const calls = Array.from({ length: 8 }, () => pool.acquire(shared("burst", 8), clock.now() + 30_000));
    const leases = await Promise.all(calls);
    assert.equal(driver.started.length, 1, "one instance for eight calls that fit in it at once");
    assert.equal(new Set(leases.map((l) => l.instance.id)).size, 1);
    for (const l of leases) l.end(true);
  });

  it("stops an instance with a failed call only once its other calls ended, giving it no new call", async () => {
    const { pool, clock } = makePool({ genericMin: 0, genericMax: 0 });
    const a = await pool.acquire(shared("a", 2), clock.now() + 1000);
    const b = await pool.acquire(shared("a", 2), clock.now() + 1000);
    assert.equal(b.instance.id, a.instance.id);
    const sandbox = a.instance.sandbox as unknown as { destroyedWith: string | undefined };
    a.end(false);
    await settle();
    assert.equal(sandbox.destroyedWith, undefined, "the other call still runs in it");
    const c = await pool.acquire(shared("a", 2), clock.now() + 1000);
    assert.notEqual(c.instance.id, a.instance.id, "a retiring instance takes no new call, nor makes it wait");
    b.end(true);
    await settle();
    assert.equal(sandbox.destroyedWith, "its call failed");
    c.end(true);
  });
});
