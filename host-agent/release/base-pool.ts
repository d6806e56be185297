/**
 * One base version's pool inside a roll, and what the roll counts of it: leases out, acquires in
 * flight, instance starts that worked or failed (through a driver wrapper, so each base's failures are
 * its own), calls judged and failed. Draining stops new use and closes the pool once every lease it
 * handed out is back, or after the drain timeout.
 */
import type { Clock, TimerHandle } from "../clock.ts";
import type { GuestClient } from "../guest/client.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { FunctionCode } from "../pool/lease.ts";
import { Pool, type PoolConfig } from "../pool/pool.ts";
import type { PoolLease } from "../pool/pool-lease.ts";
import type { BaseImage, SandboxDriver, SandboxInstance, SandboxLimits } from "../sandbox/driver.ts";
import type { Release } from "./release.ts";

export interface BasePoolDeps {
  readonly driver: SandboxDriver;
  readonly limits: SandboxLimits;
  /** The agent's pool config; the release's `pool` overrides parts of it. */
  readonly poolConfig: PoolConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly newInstanceId: () => string;
  readonly clientFor?: (sandbox: SandboxInstance) => GuestClient;
  /** Calls in flight on a draining pool get this long to finish before it is closed anyway. */
  readonly drainTimeoutMs: number;
}

export class BasePool {
  readonly config: PoolConfig;
  readonly pool: Pool;
  /** Leases handed out and not yet ended. */
  leases = 0;
  /** acquire/prespecialize calls in flight. */
  acquiring = 0;
  startsOk = 0;
  startFailures = 0;
  lastStartError: string | undefined;
  /** Calls judged on this base during its roll, and how many failed. */
  calls = 0;
  errors = 0;
  draining = false;
  closed = false;
  private drainTimer: TimerHandle | undefined;
  private readonly onClosed: () => void;

  constructor(
    readonly release: Release,
    readonly base: BaseImage,
    private readonly deps: BasePoolDeps,
    hooks: {
      /** After every instance start of this pool, whether it worked or not. */
      readonly startSettled: () => void;
      /** When the pool has been closed (drained or not). */
      readonly closed: () => void;
    },
  ) {
    const merged: PoolConfig = { ...deps.poolConfig, ...release.pool };
    this.config = { ...merged, genericMax: Math.max(merged.genericMin, merged.genericMax) };
    this.onClosed = hooks.closed;
    const driver = deps.driver;
    const counted: SandboxDriver = {
      kind: driver.kind,
      preflight: () => driver.preflight(),
      init: async () => {},
      close: async () => {},
      start: async (spec) => {
        try {
          const sandbox = await driver.start(spec);
          this.startsOk++;
          return sandbox;
        } catch (err) {
          this.startFailures++;
          this.lastStartError = (err as Error).message;
          throw err;
        } finally {
          hooks.startSettled();
        }
      },
    };
    this.pool = new Pool({
      driver: counted,
      base,
      limits: deps.limits,
      config: this.config,
      clock: deps.clock,
      log: deps.log.child({ base: base.version }),
      metrics: deps.metrics,
      newInstanceId: deps.newInstanceId,
      ...(deps.clientFor ? { clientFor: deps.clientFor } : {}),
    });
  }

  /** A lease from this pool, counted until it ends (the caller hooks the end). */
  async acquire(fn: FunctionCode, deadline: number): Promise<PoolLease> {
    return this.using(async () => {
      const lease = await this.pool.acquire(fn, deadline);
      this.leases++;
      return lease;
    });
  }

  /** Runs `op` counted as an acquire in flight: the pool does not close under it. */
  async using<T>(op: () => Promise<T>): Promise<T> {
    this.acquiring++;
    try {
      return await op();
    } finally {
      this.acquiring--;
      this.closeIfDrained();
    }
  }

  /** Stops routing here; closes the pool once every lease it handed out is back. */
  drain(why: string): void {
    if (this.draining) return;
    this.draining = true;
    this.deps.log.info({ base: this.base.version, leases: this.leases, why }, "pool draining");
    this.drainTimer = this.deps.clock.setTimeout(() => {
      this.drainTimer = undefined;
      this.deps.log.warn(
        { base: this.base.version, leases: this.leases },
        "pool still busy after the drain timeout: closing it",
      );
      this.close();
    }, this.deps.drainTimeoutMs);
    this.closeIfDrained();
  }

  closeIfDrained(): void {
    if (this.draining && this.leases === 0 && this.acquiring === 0) this.close();
  }

  /** Closes the pool now (once). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.drainTimer) this.deps.clock.clearTimeout(this.drainTimer);
    this.onClosed();
    void this.pool.close().then(() => this.deps.log.info({ base: this.base.version }, "pool closed"));
  }

  /** Closes the pool at agent shutdown, waiting for its instances to stop. */
  shutdown(): Promise<void> {
    if (this.drainTimer) this.deps.clock.clearTimeout(this.drainTimer);
    this.closed = true;
    return this.pool.close();
  }
}
