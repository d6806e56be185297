/**
 * The warm pool of one base version. Generic instances (started from the base, no code yet) wait ready;
 * a function's first call specializes one (attach code, load); later calls reuse idle specialized
 * instances; one call at a time per instance, or up to a function's `concurrency` where it allows
 * more (its calls are packed onto the instances already serving it). How many of each it keeps comes
 * from what it measures (policy.ts): misses and start times size the generic pool, each function's arrival rate and service
 * time its specialized instances, within the host's memory budget and each function's share. Starts are
 * bounded; calls that find nothing wait in a queue until their deadline; a burst of first calls to one
 * function waits for the instances already being prepared instead of each starting its own. Idle
 * specialized instances stop after a TTL (scale to zero); generics refill in the background.
 */
import type { LoadResponse } from "../../contracts/guest-protocol.ts";
import type { Clock, TimerHandle } from "../clock.ts";
import { type GuestClient, GuestError } from "../guest/client.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type {
  BaseImage,
  SandboxDriver,
  SandboxExit,
  SandboxInstance,
  SandboxLimits,
} from "../sandbox/driver.ts";
import { InstanceTable, type PoolInstance } from "./instance.ts";
import type { InstanceSource, StartHealth } from "./instance-source.ts";
import { InstanceStarter } from "./instance-starter.ts";
import {
  type Acquired,
  type FunctionCode,
  FunctionLoadError,
  functionVersion,
  PoolBusyError,
} from "./lease.ts";
import {
  callsPerInstanceInQueue,
  capacity,
  functionMax,
  functionTarget,
  genericTarget,
  type PolicyConfig,
} from "./policy.ts";
import { PoolLease } from "./pool-lease.ts";
import { poolReport } from "./pool-report.ts";
import { TrafficStats } from "./traffic.ts";
import { type Waiter, WaitQueue } from "./wait-queue.ts";

/** How long after taking a generic instance its replacement starts (the call is served first). */
const REFILL_DELAY_MS = 50;

/** How long a stopping instance may take to hand over its waiting console lines. */
const CONSOLE_FLUSH_MS = 250;

export interface PoolConfig extends PolicyConfig {
  /** Instance starts in flight, at most (admission). */
  readonly maxStarting: number;
  /** A specialized instance idle this long is stopped. */
  readonly idleTtlMs: number;
}

export interface PoolDeps {
  readonly driver: SandboxDriver;
  readonly base: BaseImage;
  readonly limits: SandboxLimits;
  readonly config: PoolConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly newInstanceId: () => string;
  readonly clientFor?: (sandbox: SandboxInstance) => GuestClient;
}

export class Pool implements InstanceSource {
  private readonly instances = new InstanceTable();
  private readonly queue: WaitQueue;
  readonly traffic = new TrafficStats();
  private readonly starter: InstanceStarter;
  private startingGeneric = 0;
  /** Cold starts in flight, by the function they are for (they have no instance entry yet). */
  private readonly startingFor = new Map<string, number>();
  private refillTimer: TimerHandle | undefined;
  private refillSoonTimer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly deps: PoolDeps) {
    this.queue = new WaitQueue(deps.clock, deps.metrics, () => this.busyError());
    this.starter = new InstanceStarter(deps, this.traffic);
  }

  /** Starts filling the generic pool (in the background). */
  start(): void {
    this.refill();
  }

  get base(): BaseImage {
    return this.deps.base;
  }

  /** Instances alive or starting (those being stopped no longer count). */
  private get live(): number {
    return this.instances.alive() + this.starter.inFlight;
  }

  private get capacity(): number {
    return capacity(this.deps.config);
  }

  private functionCounts(name: string) {
    return this.instances.functionCounts(name, this.startingFor.get(name) ?? 0);
  }

  private currentGenericTarget(): number {
    const now = this.deps.clock.now();
    return genericTarget(this.deps.config, this.traffic.misses.rate(now), this.traffic.startMs.get());
  }

  // --- Starting and losing instances -------------------------------------------------------------

  /** Starts one instance; it joins the pool as generic. `background`: a refill no call waits for. */
  private async startInstance(background = false): Promise<PoolInstance> {
    const instance = await this.starter.start(background);
    this.instances.add(instance);
    void instance.sandbox.exited.then((exit) => this.onGone(instance, exit));
    if (this.closed) void this.stop(instance, "pool closed");
    return instance;
  }

  private onGone(instance: PoolInstance, exit: SandboxExit): void {
    this.clearIdleTimer(instance);
    this.instances.delete(instance);
    void instance.client.close();
    this.deps.metrics.instanceExits.inc({ cause: exit.cause });
    if (exit.cause === "exited") {
      this.deps.log.warn(
        { instance: instance.id, fn: instance.fn?.name, state: instance.state },
        `instance died: ${exit.reason}`,
      );
    }
    if (!this.closed) {
      this.refill();
      this.pump();
    }
  }

  /** A refill a moment from now, once the call that took a generic instance has been served. */
  private refillSoon(): void {
    if (this.refillSoonTimer || this.closed) return;
    this.refillSoonTimer = this.deps.clock.setTimeout(() => {
      this.refillSoonTimer = undefined;
      this.refill();
    }, REFILL_DELAY_MS);
  }

  /** Keeps the generic pool at its target, in the background, with backoff while starts fail. */
  private refill(): void {
    if (this.closed || this.refillTimer) return;
    if (this.currentGenericTarget() - this.instances.count("generic") - this.startingGeneric <= 0) return;
    if (this.starter.failedInARow > 0) {
      const delay = Math.min(30_000, 100 * 2 ** Math.min(this.starter.failedInARow, 9));
      this.refillTimer = this.deps.clock.setTimeout(() => {
        this.refillTimer = undefined;
        this.fillGenerics();
      }, delay);
      return;
    }
    this.fillGenerics();
  }

  private fillGenerics(): void {
    const target = this.currentGenericTarget();
    while (
      !this.closed &&
      this.instances.count("generic") + this.startingGeneric < target &&
      this.live < this.capacity &&
      this.starter.inFlight < this.deps.config.maxStarting &&
      // Calls waiting come first: they get capacity through pump().
      this.queue.length === 0
    ) {
      this.startingGeneric++;
      this.startInstance(true)
        .then(
          () => {
            this.startingGeneric--;
            this.pump();
            this.refill();
          },
          () => {
            this.startingGeneric--;
            this.refill();
          },
        )
        .catch(() => undefined);
      if (this.starter.failedInARow > 0) break;
    }
  }

  // --- Acquiring ---------------------------------------------------------------------------------

  /**
   * An instance for one call of `fn`, by the first path that works: an idle instance of the same code
   * (warm), a generic one specialized now, a new one started now, else a place in the queue until the
   * deadline (absolute, clock ms).
   */
  async acquire(fn: FunctionCode, deadline: number): Promise<PoolLease> {
    if (this.closed) throw new PoolBusyError("the agent is shutting down", 5);
    const now = this.deps.clock.now();
    this.traffic.arrivals.record(now);
    this.traffic.fn(fn.name).arrivals.record(now);
    const warm = this.takeWarm(fn);
    if (warm) return this.lease(warm, "warm", now);
    this.traffic.misses.record(now);
    if (!this.queue.hasUnserved() && !this.shouldWait(fn, this.queue.queuedFor(fn.name))) {
      const lease = await this.freshWithin(fn, now, deadline);
      if (lease) return lease;
    }
    return this.enqueue(fn, deadline, now);
  }

  /**
   * True when a call, with `ahead` calls of its function already queued, is better served by waiting
   * for that function's busy or preparing instances than by preparing another one.
   */
  private shouldWait(fn: FunctionCode, ahead: number): boolean {
    const c = this.functionCounts(fn.name);
    if (c.total >= functionMax(this.deps.config)) return true;
    // A retiring instance never takes the call: waiting for it would only wait for it to stop.
    const inFlight = c.busy - c.retiring + c.specializing;
    if (inFlight === 0) return false;
    const perInstance = callsPerInstanceInQueue(this.deps.config, this.traffic.fn(fn.name).serviceMs.get());
    // An instance that serves several calls at once takes that many in each turn, and one being
    // prepared takes that many as soon as it is ready (with concurrency 1, just the call it is for).
    const k = fn.concurrency ?? 1;
    return ahead < inFlight * perInstance * k + c.specializing * (k - 1);
  }

  /** A lease for a call; counted in the acquire metric unless its caller may still give up on it. */
  private lease(instance: PoolInstance, acquired: Acquired, since: number, counted = true): PoolLease {
    if (counted) this.deps.metrics.poolAcquire.inc({ result: acquired });
    const at = this.deps.clock.now();
    return new PoolLease(instance, acquired, at - since, at, this.deps.clock, (lease, healthy) =>
      this.release(lease, healthy),
    );
  }

  private takeWarm(fn: FunctionCode): PoolInstance | undefined {
    const best = this.instances.availableFor(fn);
    if (best) this.markBusy(best, fn);
    return best;
  }

  /** One more call on `instance`, for `fn` (whose concurrency, as this call gives it, bounds its calls). */
  private markBusy(instance: PoolInstance, fn: FunctionCode): void {
    this.clearIdleTimer(instance);
    instance.state = "busy";
    instance.calls++;
    instance.inFlight++;
    instance.concurrency = fn.concurrency ?? 1;
    instance.lastUsedAt = this.deps.clock.now();
  }

  /** A generic instance specialized for `fn`, or a new one; undefined when capacity is exhausted now. */
  private async tryFresh(fn: FunctionCode, since: number): Promise<PoolLease | undefined> {
    if (this.functionCounts(fn.name).total >= functionMax(this.deps.config)) return undefined;
    const generic = this.instances.claimGeneric(fn);
    if (generic) {
      try {
        await this.specialize(generic, fn);
      } finally {
        // Refill shortly after, not during: on a small host a jail start would slow this call down.
        this.refillSoon();
      }
      this.claimSpecialized(generic, fn);
      return this.lease(generic, "generic", since, false);
    }
    if (this.starter.inFlight >= this.deps.config.maxStarting) return undefined;
    if (this.live >= this.capacity && !this.evictIdleForRoom()) return undefined;
    this.startingFor.set(fn.name, (this.startingFor.get(fn.name) ?? 0) + 1);
    let fresh: PoolInstance;
    try {
      fresh = await this.startInstance();
      fresh.state = "specializing";
      fresh.fn = fn;
    } finally {
      const left = (this.startingFor.get(fn.name) ?? 1) - 1;
      if (left > 0) this.startingFor.set(fn.name, left);
      else this.startingFor.delete(fn.name);
    }
    await this.specialize(fresh, fn);
    this.claimSpecialized(fresh, fn);
    return this.lease(fresh, "cold", since, false);
  }

  /**
   * tryFresh for a call that gives up at `deadline`: a start or load that takes longer does not hold the
   * call past it. The instance it prepares is kept, warm for the function's next call.
   */
  private freshWithin(fn: FunctionCode, since: number, deadline: number): Promise<PoolLease | undefined> {
    const fresh = this.tryFresh(fn, since);
    return new Promise((resolve, reject) => {
      let gaveUp = false;
      const timer = this.deps.clock.setTimeout(
        () => {
          gaveUp = true;
          reject(
            new PoolBusyError(
              `no instance could be prepared for ${fn.name} within the call's deadline (an instance start or module load took longer)`,
              1,
            ),
          );
        },
        Math.max(0, deadline - this.deps.clock.now()),
      );
      fresh.then(
        (lease) => {
          this.deps.clock.clearTimeout(timer);
          if (gaveUp) {
            if (lease) this.handBack(lease);
            return;
          }
          if (lease) this.deps.metrics.poolAcquire.inc({ result: lease.acquired });
          resolve(lease);
        },
        (err: Error) => {
          this.deps.clock.clearTimeout(timer);
          if (!gaveUp) reject(err);
        },
      );
    });
  }

  /** An instance prepared for a call that gave up before it was ready: idle, for the next call. */
  private handBack(lease: PoolLease): void {
    const instance = lease.instance;
    if (instance.state !== "busy") return;
    instance.calls--;
    instance.inFlight--;
    // Calls queued for it while it was being prepared may already be on it.
    if (instance.inFlight > 0) return;
    if (this.closed || instance.retireOnRelease) {
      void this.stop(instance, "its call gave up before it was ready");
      return;
    }
    this.parkSpecialized(instance);
  }

  /** Hands a just-specialized instance to its call, unless it was stopped meanwhile (agent closing). */
  private claimSpecialized(instance: PoolInstance, fn: FunctionCode): void {
    if (instance.state !== "specializing") {
      throw new PoolBusyError(`instance ${instance.id} was stopped while it was being prepared`, 1);
    }
    this.markBusy(instance, fn);
    // Room for more: calls of its function queued while it was prepared join it now.
    if (instance.inFlight < instance.concurrency) this.pump();
  }

  /** Stops the least recently used idle specialized instance to make room. */
  private evictIdleForRoom(): boolean {
    const victim = this.instances.evictionVictim();
    if (!victim) return false;
    void this.stop(victim, "room needed for another function");
    return true;
  }

  /** Gives `instance` the function's code. On success it is left "specializing" for the caller to place. */
  private async specialize(instance: PoolInstance, fn: FunctionCode): Promise<LoadResponse> {
    instance.state = "specializing";
    instance.fn = fn;
    const t0 = this.deps.clock.now();
    try {
      // Both before any of the function's code runs, at once (neither needs the other): the code, and
      // the function's memory instead of the base's.
      const memoryMiB = fn.settings?.memoryMiB;
      await Promise.all([
        instance.sandbox.attachCode({
          functionName: fn.name,
          codeHash: fn.codeHash,
          hostPath: fn.hostPath,
        }),
        memoryMiB === undefined ? undefined : instance.sandbox.limitMemory?.(memoryMiB),
      ]);
      // Also before the code runs: an instance starts with no network, and gets its way out only now.
      if (fn.egress) {
        if (!instance.sandbox.openEgress)
          throw new Error(`the ${this.deps.driver.kind} sandbox has no per-function egress`);
        await instance.sandbox.openEgress();
      }
      const loaded = await instance.client.load({ ...fn.settings, functionName: fn.name, entry: fn.entry });
      const ms = this.deps.clock.now() - t0;
      this.deps.metrics.specialize.observe(ms / 1000);
      this.traffic.specializeMs.add(ms);
      return loaded;
    } catch (err) {
      void this.stop(instance, "specialization failed");
      if (err instanceof GuestError && err.kind === "load") throw new FunctionLoadError(err.message);
      throw err;
    }
  }

  // --- The wait queue ----------------------------------------------------------------------------

  private enqueue(fn: FunctionCode, deadline: number, enqueuedAt: number): Promise<PoolLease> {
    return new Promise((resolve, reject) => {
      if (deadline <= this.deps.clock.now()) {
        reject(this.busyError());
        return;
      }
      this.queue.add({ fn, deadline, enqueuedAt, resolve, reject, timer: undefined, served: false });
      this.pump();
    });
  }

  private busyError(): PoolBusyError {
    return new PoolBusyError(
      `no instance became free within the call's deadline (${this.live} instances busy or starting, capacity ${this.capacity}, ${this.queue.length} calls queued)`,
      1,
    );
  }

  /** Serves queued calls, in order, with whatever became available. */
  private pump(): void {
    const aheadOf = new Map<string, number>();
    for (const waiter of this.queue.inOrder()) {
      if (waiter.served) continue;
      const name = waiter.fn.name;
      const ahead = aheadOf.get(name) ?? 0;
      aheadOf.set(name, ahead + 1);
      const warm = this.takeWarm(waiter.fn);
      if (warm) {
        this.serve(waiter, warm, "warm");
        continue;
      }
      if (this.shouldWait(waiter.fn, ahead)) continue;
      const canStart =
        this.starter.inFlight < this.deps.config.maxStarting &&
        (this.live < this.capacity || this.instances.count("idle") > 0);
      if (this.instances.count("generic") === 0 && !canStart) continue;
      this.queue.take(waiter);
      this.freshWithin(waiter.fn, waiter.enqueuedAt, waiter.deadline).then(
        (lease) => {
          if (lease) {
            this.deps.metrics.queueWait.observe(lease.waitedMs / 1000);
            waiter.resolve(lease);
            return;
          }
          // Lost the race for capacity: back in line, keeping its place and deadline.
          this.queue.putBack(waiter);
        },
        (err: Error) => waiter.reject(err),
      );
    }
  }

  private serve(waiter: Waiter, instance: PoolInstance, acquired: Acquired): void {
    this.queue.take(waiter);
    const lease = this.lease(instance, acquired, waiter.enqueuedAt);
    this.deps.metrics.queueWait.observe(lease.waitedMs / 1000);
    waiter.resolve(lease);
  }

  // --- Giving back, idling, stopping -------------------------------------------------------------

  /**
   * A call's instance back (lease.end): idle again once its last call ended, or, when a call failed or
   * its code was retired, taking no new call and stopped when its last call ends. With concurrency 1
   * that is at once: the failed call's instance is stopped under it, as before concurrency existed.
   */
  private release(lease: PoolLease, healthy: boolean): void {
    const instance = lease.instance;
    if (instance.state !== "busy") return;
    instance.inFlight--;
    const now = this.deps.clock.now();
    if (instance.fn && healthy) this.traffic.fn(instance.fn.name).serviceMs.add(now - lease.at);
    if (!healthy && !instance.retireOnRelease) {
      instance.retireOnRelease = true;
      instance.retireReason = "its call failed";
    }
    if (instance.retireOnRelease || this.closed) {
      if (instance.inFlight <= 0)
        void this.stop(instance, instance.retireReason ?? "its function was redeployed or deleted");
      return;
    }
    if (instance.inFlight <= 0) instance.state = "idle";
    instance.lastUsedAt = now;
    const waiter = this.queue.firstFor(instance.fn!);
    if (waiter && instance.inFlight < (waiter.fn.concurrency ?? 1)) {
      this.markBusy(instance, waiter.fn);
      this.serve(waiter, instance, "warm");
      return;
    }
    if (instance.state === "busy") return;
    this.armIdleTimer(instance);
    this.prewarm(instance.fn!);
    this.pump();
  }

  private armIdleTimer(instance: PoolInstance): void {
    instance.idleTimer = this.deps.clock.setTimeout(() => {
      instance.idleTimer = undefined;
      if (instance.state === "idle") void this.stop(instance, "idle past its TTL");
    }, this.deps.config.idleTtlMs);
  }

  /**
   * Specializes a spare generic instance for `fn` in the background when its measured load needs more
   * instances than it has, so a ramp finds warm instances instead of queueing.
   */
  private prewarm(fn: FunctionCode): void {
    const t = this.traffic.fn(fn.name);
    const target = functionTarget(
      this.deps.config,
      t.arrivals.rate(this.deps.clock.now()),
      t.serviceMs.get(),
    );
    // Each instance serves `concurrency` calls at once: that many fewer instances for the same load.
    if (this.functionCounts(fn.name).total >= Math.ceil(target / (fn.concurrency ?? 1))) return;
    const generic = this.instances.claimGeneric(fn);
    if (!generic) return;
    this.refill();
    this.specialize(generic, fn).then(
      () => {
        if (generic.state !== "specializing") return;
        this.deps.metrics.poolAcquire.inc({ result: "prewarmed" });
        this.parkSpecialized(generic);
      },
      () => undefined,
    );
  }

  private clearIdleTimer(instance: PoolInstance): void {
    if (instance.idleTimer) {
      this.deps.clock.clearTimeout(instance.idleTimer);
      instance.idleTimer = undefined;
    }
  }

  /** Ends an instance (on timeouts, failures, TTL, redeploys). */
  private async stop(instance: PoolInstance, reason: string): Promise<void> {
    if (instance.state === "stopping") return instance.sandbox.destroy(reason);
    this.clearIdleTimer(instance);
    instance.state = "stopping";
    // A microVM's last console lines (a timed-out call's above all) wait in the guest until fetched.
    await instance.client.flushConsole(CONSOLE_FLUSH_MS);
    await instance.sandbox.destroy(reason);
  }

  /**
   * Loads `fn` in an instance now, to prove the module loads (deploys do this) and leave a warm instance
   * behind. Throws FunctionLoadError when the module fails to load.
   */
  async prespecialize(fn: FunctionCode, deadline: number): Promise<LoadResponse> {
    let instance = this.instances.claimGeneric(fn);
    if (instance) this.refill();
    else {
      if (this.live >= this.capacity && !this.evictIdleForRoom()) {
        throw new PoolBusyError("every instance is busy: the deploy could not be verified", 1);
      }
      instance = await this.startInstance();
    }
    if (this.deps.clock.now() > deadline) {
      void this.stop(instance, "deploy deadline passed");
      throw new PoolBusyError("the deploy could not be verified before its deadline", 1);
    }
    const loaded = await this.specialize(instance, fn);
    this.deps.metrics.poolAcquire.inc({ result: "prespecialized" });
    if (instance.state === "specializing") this.parkSpecialized(instance);
    return loaded;
  }

  /** A just-specialized instance with no call waiting for it: idle under its TTL, offered to the queue. */
  private parkSpecialized(instance: PoolInstance): void {
    instance.state = "idle";
    instance.lastUsedAt = this.deps.clock.now();
    this.armIdleTimer(instance);
    this.pump();
  }

  /**
   * Stops instances serving `name` in a version other than `keepHash` (all of them when undefined): a
   * code hash, or functionVersion() of the code and settings the function now has.
   */
  retireFunction(name: string, keepHash?: string): number {
    let n = 0;
    for (const i of this.instances.values()) {
      if (i.fn?.name !== name || i.state === "stopping") continue;
      if (keepHash !== undefined && (functionVersion(i.fn) === keepHash || i.fn.codeHash === keepHash))
        continue;
      n++;
      if (i.state === "idle") void this.stop(i, "its function was redeployed or deleted");
      else i.retireOnRelease = true;
    }
    return n;
  }

  // --- Reporting and closing ---------------------------------------------------------------------

  startHealth(): StartHealth {
    return {
      baseVersion: this.deps.base.version,
      started: this.starter.succeeded,
      consecutiveFailures: this.starter.failedInARow,
      lastError: this.starter.lastError,
      startsAhead: this.deps.config.genericMin > 0,
    };
  }

  /** Memory the pool's instances use now, where the driver measures it. */
  async memoryInUse(): Promise<number> {
    let sum = 0;
    for (const i of this.instances.values()) sum += (await i.sandbox.memoryBytes?.().catch(() => 0)) ?? 0;
    return sum;
  }

  /** What the pool holds, measures and aims for now, for GET /v1/pool and the gauges. */
  snapshot() {
    const now = this.deps.clock.now();
    this.traffic.prune(now);
    return poolReport(
      {
        now,
        baseVersion: this.deps.base.version,
        driverKind: this.deps.driver.kind,
        config: this.deps.config,
        instances: this.instances.values(),
        starting: this.starter.inFlight,
        live: this.live,
        capacity: this.capacity,
        queued: this.queue.length,
        genericTarget: this.currentGenericTarget(),
        traffic: this.traffic,
      },
      this.deps.metrics,
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) this.deps.clock.clearTimeout(this.refillTimer);
    if (this.refillSoonTimer) this.deps.clock.clearTimeout(this.refillSoonTimer);
    this.queue.rejectAll(() => new PoolBusyError("the agent is shutting down", 5));
    await Promise.all([...this.instances.values()].map((i) => this.stop(i, "agent shutting down")));
  }
}
