/**
 * Starts one instance of the pool's base (the driver's start, then a guest client on its endpoint) and
 * keeps the record of how starts go: in flight, succeeded, failed in a row and why. The pool's health
 * gate and refill backoff read that record; the pool decides when to start.
 */
import type { Clock } from "../clock.ts";
import { GuestClient } from "../guest/client.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { BaseImage, SandboxDriver, SandboxInstance, SandboxLimits } from "../sandbox/driver.ts";
import type { PoolInstance } from "./instance.ts";
import type { TrafficStats } from "./traffic.ts";

export interface InstanceStarterDeps {
  readonly driver: SandboxDriver;
  readonly base: BaseImage;
  readonly limits: SandboxLimits;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly newInstanceId: () => string;
  readonly clientFor?: (sandbox: SandboxInstance) => GuestClient;
}

export class InstanceStarter {
  /** Starts in flight. */
  inFlight = 0;
  /** Starts that succeeded since the pool began. */
  succeeded = 0;
  /** Starts that failed since the last one that succeeded. */
  failedInARow = 0;
  lastError: string | undefined;

  constructor(
    private readonly deps: InstanceStarterDeps,
    private readonly traffic: TrafficStats,
  ) {}

  /**
   * A new generic instance (not yet in any table); rejects with the driver's error. `background`: no
   * call waits for it (a refill), so the driver may start it at a lower CPU share.
   */
  async start(background: boolean): Promise<PoolInstance> {
    const id = this.deps.newInstanceId();
    this.inFlight++;
    const t0 = this.deps.clock.now();
    let sandbox: SandboxInstance;
    try {
      sandbox = await this.deps.driver.start({
        id,
        base: this.deps.base,
        limits: this.deps.limits,
        ...(background ? { background } : {}),
      });
    } catch (err) {
      this.inFlight--;
      this.failedInARow++;
      this.lastError = (err as Error).message;
      this.deps.metrics.instanceStarts.inc({ result: "failed" });
      this.deps.log.error({ instance: id, err: (err as Error).message }, "instance start failed");
      throw err;
    }
    this.inFlight--;
    this.failedInARow = 0;
    this.succeeded++;
    const now = this.deps.clock.now();
    this.deps.metrics.instanceStarts.inc({ result: "ok" });
    this.deps.metrics.instanceStart.observe((now - t0) / 1000);
    this.traffic.startMs.add(now - t0);
    return {
      id,
      sandbox,
      client: this.deps.clientFor?.(sandbox) ?? new GuestClient(sandbox.endpoint),
      state: "generic",
      fn: undefined,
      calls: 0,
      inFlight: 0,
      concurrency: 1,
      startedAt: now,
      lastUsedAt: now,
      idleTimer: undefined,
      retireOnRelease: false,
    };
  }
}
