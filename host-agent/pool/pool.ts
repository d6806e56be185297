/**
 * The warm pool. Generic instances (started from the base, no code yet) wait ready; the first call to a
 * function specializes one (attach code, load); later calls reuse idle specialized instances; one call at
 * a time per instance. Starts are bounded; a call that finds no instance waits in a queue until its
 * deadline. Idle specialized instances stop after a TTL; generics are refilled in the background.
 */
import type { LoadResponse } from "../../guest-images/runtime/protocol.ts";
import type { Clock, TimerHandle } from "../clock.ts";
import { GuestClient, GuestError } from "../guest/client.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type {
  BaseImage,
  SandboxDriver,
  SandboxExit,
  SandboxInstance,
  SandboxLimits,
} from "../sandbox/driver.ts";
import type { InstanceSource } from "./instance-source.ts";

export interface PoolConfig {
  /** Generic instances kept started and idle. */
  readonly genericTarget: number;
  /** Instances of every kind on this host, at most. */
  readonly maxInstances: number;
  /** Instance starts in flight, at most. */
  readonly maxStarting: number;
  /** A specialized instance idle this long is stopped. */
  readonly idleTtlMs: number;
}

export interface FunctionCode {
  readonly name: string;
  readonly codeHash: string;
  readonly entry: string;
  /** Host path of the code, as the driver attaches it. */
  readonly hostPath: string;
}

export type InstanceState = "starting" | "generic" | "specializing" | "idle" | "busy" | "stopping";

export interface PoolInstance {
  readonly id: string;
  readonly sandbox: SandboxInstance;
  readonly client: GuestClient;
  state: InstanceState;
  fn: FunctionCode | undefined;
  calls: number;
  readonly startedAt: number;
  lastUsedAt: number;
  idleTimer: TimerHandle | undefined;
  /** Set when the code it serves was replaced or deleted: stop it when its call ends. */
  retireOnRelease: boolean;
}

export type Acquired = "warm" | "generic" | "cold";

export interface Lease {
  readonly instance: PoolInstance;
  readonly acquired: Acquired;
  readonly waitedMs: number;
}

/** No instance could be had before the call's deadline. */
export class PoolBusyError extends Error {
  override readonly name = "PoolBusyError";
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** The function's module failed to load in a fresh instance. */
export class FunctionLoadError extends Error {
  override readonly name = "FunctionLoadError";
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

interface Waiter {
  readonly fn: FunctionCode;
  readonly deadline: number;
  readonly enqueuedAt: number;
  readonly resolve: (lease: Lease) => void;
  readonly reject: (err: Error) => void;
  timer: TimerHandle | undefined;
  served: boolean;
}

export class Pool implements InstanceSource {
  private readonly instances = new Map<string, PoolInstance>();
  private readonly waiters: Waiter[] = [];
  private starting = 0;
  private startFailures = 0;
  private refillTimer: TimerHandle | undefined;
  private closed = false;

  constructor(private readonly deps: PoolDeps) {}

  /** Starts filling the generic pool (in the background). */
  start(): void {
    this.refill();
  }

  private count(state: InstanceState): number {
    let n = 0;
    for (const i of this.instances.values()) if (i.state === state) n++;
    return n;
  }

  private get live(): number {
    let n = 0;
    for (const i of this.instances.values()) if (i.state !== "stopping") n++;
    return n + this.starting;
  }

  /** Starts one instance; it joins the pool as generic. */
  private async startInstance(): Promise<PoolInstance> {
    const id = this.deps.newInstanceId();
    this.starting++;
    const t0 = this.deps.clock.now();
    let sandbox: SandboxInstance;
    try {
      sandbox = await this.deps.driver.start({ id, base: this.deps.base, limits: this.deps.limits });
    } catch (err) {
      this.starting--;
      this.startFailures++;
      this.deps.metrics.instanceStarts.inc({ result: "failed" });
      this.deps.log.error({ instance: id, err: (err as Error).message }, "instance start failed");
      throw err;
    }
    this.starting--;
    this.startFailures = 0;
    this.deps.metrics.instanceStarts.inc({ result: "ok" });
    this.deps.metrics.instanceStart.observe((this.deps.clock.now() - t0) / 1000);
    const now = this.deps.clock.now();
    const instance: PoolInstance = {
      id,
      sandbox,
      client: this.deps.clientFor?.(sandbox) ?? new GuestClient(sandbox.endpoint),
      state: "generic",
      fn: undefined,
      calls: 0,
      startedAt: now,
      lastUsedAt: now,
      idleTimer: undefined,
      retireOnRelease: false,
    };
    this.instances.set(id, instance);
    void sandbox.exited.then((exit) => this.onGone(instance, exit));
    if (this.closed) void this.stop(instance, "pool closed");
    return instance;
  }

  private onGone(instance: PoolInstance, exit: SandboxExit): void {
    this.clearIdleTimer(instance);
    this.instances.delete(instance.id);
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

  /** Keeps the generic pool at its target, in the background, with backoff while starts fail. */
  private refill(): void {
    if (this.closed || this.refillTimer) return;
    const wanted = this.deps.config.genericTarget - this.count("generic") - this.startingGeneric;
    if (wanted <= 0) return;
    if (this.startFailures > 0) {
      const delay = Math.min(30_000, 100 * 2 ** Math.min(this.startFailures, 9));
      this.refillTimer = this.deps.clock.setTimeout(() => {
        this.refillTimer = undefined;
        this.fillGenerics();
      }, delay);
      return;
    }
    this.fillGenerics();
  }

  private startingGeneric = 0;

  private fillGenerics(): void {
    while (
      !this.closed &&
      this.count("generic") + this.startingGeneric < this.deps.config.genericTarget &&
      this.live < this.deps.config.maxInstances &&
      this.starting < this.deps.config.maxStarting &&
      // Calls waiting come first: they get capacity through pump().
      this.waiters.length === 0
    ) {
      this.startingGeneric++;
      this.startInstance()
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
      if (this.startFailures > 0) break;
    }
  }

  /**
   * An instance for one call of `fn`, by the first path that works: an idle instance of the same code
   * (warm), a generic one specialized now, a new one started now, else a place in the queue until the
   * deadline (absolute, clock ms).
   */
  async acquire(fn: FunctionCode, deadline: number): Promise<Lease> {
    if (this.closed) throw new PoolBusyError("the agent is shutting down", 5);
    const enqueuedAt = this.deps.clock.now();
    const immediate = this.takeWarm(fn);
    if (immediate) return this.lease(immediate, "warm", enqueuedAt);
    if (this.waiters.length === 0) {
      const lease = await this.tryFresh(fn, enqueuedAt);
      if (lease) return lease;
    }
    return this.enqueue(fn, deadline, enqueuedAt);
  }

  private lease(instance: PoolInstance, acquired: Acquired, since: number): Lease {
    this.deps.metrics.poolAcquire.inc({ result: acquired });
    return { instance, acquired, waitedMs: this.deps.clock.now() - since };
  }

  private takeWarm(fn: FunctionCode): PoolInstance | undefined {
    let best: PoolInstance | undefined;
    for (const i of this.instances.values()) {
      if (i.state !== "idle" || i.fn?.name !== fn.name || i.fn.codeHash !== fn.codeHash) continue;
      // Most recently used first: the others age out and stop.
      if (!best || i.lastUsedAt > best.lastUsedAt) best = i;
    }
    if (best) this.markBusy(best);
    return best;
  }

  private markBusy(instance: PoolInstance): void {
    this.clearIdleTimer(instance);
    instance.state = "busy";
    instance.calls++;
    instance.lastUsedAt = this.deps.clock.now();
  }

  /** A generic instance specialized for `fn`, or a new one; undefined when capacity is exhausted now. */
  private async tryFresh(fn: FunctionCode, since: number): Promise<Lease | undefined> {
    const generic = this.takeGeneric();
    if (generic) {
      this.refill();
      await this.specialize(generic, fn);
      return this.lease(generic, "generic", since);
    }
    if (this.starting >= this.deps.config.maxStarting) return undefined;
    if (this.live >= this.deps.config.maxInstances && !this.evictIdleForRoom()) return undefined;
    const fresh = await this.startInstance();
    fresh.state = "specializing";
    await this.specialize(fresh, fn);
    return this.lease(fresh, "cold", since);
  }

  private takeGeneric(): PoolInstance | undefined {
    for (const i of this.instances.values()) {
      if (i.state === "generic") {
        i.state = "specializing";
        return i;
      }
    }
    return undefined;
  }

  /** Stops the least recently used idle specialized instance to make room. */
  private evictIdleForRoom(): boolean {
    let victim: PoolInstance | undefined;
    for (const i of this.instances.values()) {
      if (i.state === "idle" && (!victim || i.lastUsedAt < victim.lastUsedAt)) victim = i;
    }
    if (!victim) return false;
    void this.stop(victim, "room needed for another function");
    return true;
  }

  private async specialize(instance: PoolInstance, fn: FunctionCode): Promise<LoadResponse> {
    instance.state = "specializing";
    instance.fn = fn;
    const t0 = this.deps.clock.now();
    try {
      await instance.sandbox.attachCode({
        functionName: fn.name,
        codeHash: fn.codeHash,
        hostPath: fn.hostPath,
      });
      const loaded = await instance.client.load({ functionName: fn.name, entry: fn.entry });
      this.deps.metrics.specialize.observe((this.deps.clock.now() - t0) / 1000);
      this.markBusy(instance);
      return loaded;
    } catch (err) {
      void this.stop(instance, "specialization failed");
      if (err instanceof GuestError && err.kind === "load") throw new FunctionLoadError(err.message);
      throw err;
    }
  }

  private enqueue(fn: FunctionCode, deadline: number, enqueuedAt: number): Promise<Lease> {
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { fn, deadline, enqueuedAt, resolve, reject, timer: undefined, served: false };
      const remaining = deadline - this.deps.clock.now();
      const fail = () => {
        if (waiter.served) return;
        waiter.served = true;
        this.removeWaiter(waiter);
        reject(
          new PoolBusyError(
            `no instance became free within the call's deadline (${this.live} instances busy or starting, limit ${this.deps.config.maxInstances})`,
            1,
          ),
        );
      };
      if (remaining <= 0) {
        fail();
        return;
      }
      waiter.timer = this.deps.clock.setTimeout(fail, remaining);
      this.waiters.push(waiter);
      this.deps.metrics.queueDepth.set(this.waiters.length);
      this.pump();
    });
  }

  private removeWaiter(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
    if (waiter.timer) this.deps.clock.clearTimeout(waiter.timer);
    this.deps.metrics.queueDepth.set(this.waiters.length);
  }

  /** Serves queued calls, in order, with whatever became available. */
  private pump(): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.served) continue;
      const warm = this.takeWarm(waiter.fn);
      if (warm) {
        this.serve(waiter, warm, "warm");
        continue;
      }
      const canStart =
        this.starting < this.deps.config.maxStarting &&
        (this.live < this.deps.config.maxInstances || this.count("idle") > 0);
      if (this.count("generic") === 0 && !canStart) continue;
      waiter.served = true;
      this.removeWaiter(waiter);
      this.tryFresh(waiter.fn, waiter.enqueuedAt).then(
        (lease) => {
          if (lease) {
            this.deps.metrics.queueWait.observe(lease.waitedMs / 1000);
            waiter.resolve(lease);
          } else {
            // Lost the race for capacity: back in line, keeping its place and deadline.
            waiter.served = false;
            this.waiters.unshift(waiter);
            waiter.timer = this.deps.clock.setTimeout(
              () => {
                if (waiter.served) return;
                waiter.served = true;
                this.removeWaiter(waiter);
                waiter.reject(new PoolBusyError("no instance became free within the call's deadline", 1));
              },
              Math.max(0, waiter.deadline - this.deps.clock.now()),
            );
          }
        },
        (err: Error) => waiter.reject(err),
      );
    }
  }

  private serve(waiter: Waiter, instance: PoolInstance, acquired: Acquired): void {
    waiter.served = true;
    this.removeWaiter(waiter);
    const lease = this.lease(instance, acquired, waiter.enqueuedAt);
    this.deps.metrics.queueWait.observe(lease.waitedMs / 1000);
    waiter.resolve(lease);
  }

  /** Gives an instance back after its call: idle again, or stopped when it failed or was retired. */
  release(lease: Lease, healthy: boolean): void {
    const instance = lease.instance;
    if (instance.state !== "busy") return;
    if (!healthy || instance.retireOnRelease || this.closed) {
      void this.stop(instance, healthy ? "its function was redeployed or deleted" : "its call failed");
      return;
    }
    instance.state = "idle";
    instance.lastUsedAt = this.deps.clock.now();
    const waiter = this.waiters.find(
      (w) => !w.served && w.fn.name === instance.fn?.name && w.fn.codeHash === instance.fn.codeHash,
    );
    if (waiter) {
      this.markBusy(instance);
      this.serve(waiter, instance, "warm");
      return;
    }
    instance.idleTimer = this.deps.clock.setTimeout(() => {
      instance.idleTimer = undefined;
      if (instance.state === "idle") void this.stop(instance, "idle past its TTL");
    }, this.deps.config.idleTtlMs);
    this.pump();
  }

  private clearIdleTimer(instance: PoolInstance): void {
    if (instance.idleTimer) {
      this.deps.clock.clearTimeout(instance.idleTimer);
      instance.idleTimer = undefined;
    }
  }

  /** Ends an instance (on timeouts, failures, TTL, redeploys). */
  async stop(instance: PoolInstance, reason: string): Promise<void> {
    if (instance.state === "stopping") return instance.sandbox.destroy(reason);
    this.clearIdleTimer(instance);
    instance.state = "stopping";
    await instance.sandbox.destroy(reason);
  }

  /**
   * Loads `fn` in an instance now, to prove the module loads (deploys do this) and leave a warm instance
   * behind. Throws FunctionLoadError when the module fails to load.
   */
  async prespecialize(fn: FunctionCode, deadline: number): Promise<LoadResponse> {
    const since = this.deps.clock.now();
    let instance = this.takeGeneric();
    if (instance) this.refill();
    else {
      if (this.live >= this.deps.config.maxInstances && !this.evictIdleForRoom()) {
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
    this.release({ instance, acquired: "generic", waitedMs: this.deps.clock.now() - since }, true);
    return loaded;
  }

  /** Stops instances serving `name` with code other than `keepHash` (all of them when undefined). */
  retireFunction(name: string, keepHash?: string): number {
    let n = 0;
    for (const i of this.instances.values()) {
      if (i.fn?.name !== name || i.fn.codeHash === keepHash) continue;
      n++;
      if (i.state === "idle") void this.stop(i, "its function was redeployed or deleted");
      else i.retireOnRelease = true;
    }
    return n;
  }

  /** What the pool holds now, for GET /v1/pool and the gauges. */
  snapshot() {
    const byState: Record<InstanceState, number> = {
      starting: this.starting,
      generic: 0,
      specializing: 0,
      idle: 0,
      busy: 0,
      stopping: 0,
    };
    const byFunction: Record<string, { idle: number; busy: number }> = {};
    for (const i of this.instances.values()) {
      byState[i.state]++;
      if (i.fn && (i.state === "idle" || i.state === "busy")) {
        const f = byFunction[i.fn.name] ?? { idle: 0, busy: 0 };
        f[i.state]++;
        byFunction[i.fn.name] = f;
      }
    }
    for (const [state, n] of Object.entries(byState)) this.deps.metrics.instances.set({ state }, n);
    return {
      baseVersion: this.deps.base.version,
      driver: this.deps.driver.kind,
      config: this.deps.config,
      instances: byState,
      total: this.live,
      queued: this.waiters.length,
      functions: byFunction,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.refillTimer) this.deps.clock.clearTimeout(this.refillTimer);
    for (const w of [...this.waiters]) {
      w.served = true;
      this.removeWaiter(w);
      w.reject(new PoolBusyError("the agent is shutting down", 5));
    }
    await Promise.all([...this.instances.values()].map((i) => this.stop(i, "agent shutting down")));
  }
}
