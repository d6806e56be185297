/**
 * What the HTTP planes need from the pool: leases for calls, verification of deploys, retirement of old
 * code, a picture of the state. One Pool implements it; a base-image rollout holding several pools (one
 * per base version) implements it too, and the planes never know which they talk to.
 */
import type { LoadResponse } from "../../contracts/guest-protocol.ts";
import type { FunctionCode, Lease } from "./lease.ts";

export interface PoolPicture {
  /** Specialized instances per function. */
  readonly functions: Record<string, { idle: number; busy: number }>;
  readonly [key: string]: unknown;
}

/** What the serving pool's instance starts (restores, with /_faas/init) have done so far: health gating. */
export interface StartHealth {
  readonly baseVersion: string;
  /** Starts that succeeded since the pool began. */
  readonly started: number;
  /** Starts that failed since the last one that succeeded. */
  readonly consecutiveFailures: number;
  readonly lastError: string | undefined;
  /** False when the pool keeps no generic instance ahead (genericMin 0): nothing starts until a call. */
  readonly startsAhead: boolean;
}

export interface InstanceSource {
  /**
   * An instance for one call of `fn` before `deadline` (clock ms); PoolBusyError when none can be had.
   * The caller forwards the call through the lease and ends it (an unhealthy instance is stopped).
   */
  acquire(fn: FunctionCode, deadline: number): Promise<Lease>;
  /** Loads `fn` in a fresh instance to prove it loads (FunctionLoadError when it does not). */
  prespecialize(fn: FunctionCode, deadline: number): Promise<LoadResponse>;
  /** Stops instances of `name` holding code other than `keepHash` (all when undefined). */
  retireFunction(name: string, keepHash?: string): number;
  snapshot(): PoolPicture;
  /** How the serving pool's starts are going (absent: the source does not say, and is not gated). */
  startHealth?(): StartHealth;
  /** Memory the instances use now, bytes, where the sandbox can measure it. */
  memoryInUse?(): Promise<number>;
  close(): Promise<void>;
}
