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
  readonly startedAt: number;
  lastUsedAt: number;
  idleTimer: TimerHandle | undefined;
  /** Set when the code it serves was replaced or deleted: stop it when its call ends. */
  retireOnRelease: boolean;
}

export interface FunctionCounts {
  idle: number;
  busy: number;
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
    const c = { idle: 0, busy: 0, specializing: starting, total: starting };
    for (const i of this.byId.values()) {
      if (i.fn?.name !== name) continue;
      if (i.state === "idle") c.idle++;
      else if (i.state === "busy") c.busy++;
      else if (i.state === "specializing") c.specializing++;
      else continue;
      c.total++;
    }
    return c;
  }

  /** The idle instance holding exactly `fn`'s code, most recently used first (the others age out). */
  idleFor(fn: FunctionCode): PoolInstance | undefined {
    let best: PoolInstance | undefined;
    for (const i of this.byId.values()) {
      if (i.state !== "idle" || i.fn?.name !== fn.name || functionVersion(i.fn) !== functionVersion(fn))
        continue;
      if (!best || i.lastUsedAt > best.lastUsedAt) best = i;
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
