/**
 * One instance as the pool keeps it, and the table of all of them with the questions the pool's
 * decisions ask of it (how many in a state, which idle one serves a function, which one to evict).
 * Private to pool/: the planes reach an instance only through a Lease.
 */
import type { TimerHandle } from "../clock.ts";
import type { GuestClient } from "../guest/client.ts";
import type { SandboxInstance } from "../sandbox/driver.ts";
import { type FunctionCode, functionVersion } from "./lease.ts";

export type InstanceState = "starting" | "generic" | "specializing" | "idle" | "busy" | "stopping";

export interface PoolInstance {
  readonly id: string;
  readonly sandbox: SandboxInstance;
  readonly client: GuestClient;
  state: InstanceState;
  fn: FunctionCode | undefined;
  calls: number;
  /** Calls it serves now: up to its function's concurrency (1 unless the function allows more). */
  inFlight: number;
  /** The concurrency of the function it serves, as the latest call gave it. */
  concurrency: number;
  readonly startedAt: number;
  lastUsedAt: number;
  idleTimer: TimerHandle | undefined;
  /**
   * Set when the code it serves was replaced or deleted, or one of its calls failed: it takes no new
   * call and is stopped when its last call in flight ends (`retireReason` says why).
   */
  retireOnRelease: boolean;
  retireReason?: string;
}

export interface FunctionCounts {
  idle: number;
  busy: number;
  /** Of the busy ones, those taking no new call (a call failed, or their code was replaced). */
  retiring: number;
  specializing: number;
  total: number;
}

export class InstanceTable {
  private readonly byId = new Map<string, PoolInstance>();

  add(instance: PoolInstance): void {
    this.byId.set(instance.id, instance);
  }

  delete(instance: PoolInstance): void {
    this.byId.delete(instance.id);
  }

  values(): IterableIterator<PoolInstance> {
    return this.byId.values();
  }

  count(state: InstanceState): number {
    let n = 0;
    for (const i of this.byId.values()) if (i.state === state) n++;
    return n;
  }

  /** Instances not being stopped (those being stopped no longer count). */
  alive(): number {
    let n = 0;
    for (const i of this.byId.values()) if (i.state !== "stopping") n++;
    return n;
  }

  /** Instances holding (or being given) `name`'s code, by state; `starting` cold starts are added in. */
  functionCounts(name: string, starting: number): FunctionCounts {
    const c = { idle: 0, busy: 0, retiring: 0, specializing: starting, total: starting };
    for (const i of this.byId.values()) {
      if (i.fn?.name !== name) continue;
      if (i.state === "idle") c.idle++;
      else if (i.state === "busy") {
        c.busy++;
        if (i.retireOnRelease) c.retiring++;
      } else if (i.state === "specializing") c.specializing++;
      else continue;
      c.total++;
    }
    return c;
  }

  /**
   * The instance that can take one more call of exactly `fn`'s code: one already serving it below its
   * concurrency first, the busiest of those (calls are packed, so spare instances idle out), else the
   * idle one most recently used (the others age out). A retiring instance takes none.
   */
  availableFor(fn: FunctionCode): PoolInstance | undefined {
    const limit = fn.concurrency ?? 1;
    let best: PoolInstance | undefined;
    for (const i of this.byId.values()) {
      if (i.state !== "idle" && i.state !== "busy") continue;
      if (i.retireOnRelease || i.fn?.name !== fn.name || functionVersion(i.fn) !== functionVersion(fn))
        continue;
      if (i.state === "busy") {
        if (i.inFlight < limit && (!best || best.state === "idle" || i.inFlight > best.inFlight)) best = i;
      } else if (!best || (best.state === "idle" && i.lastUsedAt > best.lastUsedAt)) best = i;
    }
    return best;
  }

  /** Claims a generic instance for `fn` when given (so it counts as being prepared for it). */
  claimGeneric(fn?: FunctionCode): PoolInstance | undefined {
    for (const i of this.byId.values()) {
      if (i.state === "generic") {
        i.state = "specializing";
        i.fn = fn;
        return i;
      }
    }
    return undefined;
  }

  /** The least recently used idle specialized instance: the one to stop when room is needed. */
  evictionVictim(): PoolInstance | undefined {
    let victim: PoolInstance | undefined;
    for (const i of this.byId.values()) {
      if (i.state === "idle" && (!victim || i.lastUsedAt < victim.lastUsedAt)) victim = i;
    }
    return victim;
  }
}
