/**
 * What one pool holds, measures and aims for, for GET /v1/pool, and the gauges set from the same
 * numbers. Pure reading: it changes nothing in the pool.
 */
import type { AgentMetrics } from "../metrics.ts";
import type { InstanceState, PoolInstance } from "./instance.ts";
import { functionMax, functionTarget, type PolicyConfig } from "./policy.ts";
import type { TrafficStats } from "./traffic.ts";

/** The pool's state at one moment, as the report reads it. */
export interface PoolState<C extends PolicyConfig> {
  readonly now: number;
  readonly baseVersion: string;
  readonly driverKind: string;
  readonly config: C;
  readonly instances: Iterable<PoolInstance>;
  /** Instance starts in flight (they have no instance entry yet). */
  readonly starting: number;
  /** Instances alive or starting. */
  readonly live: number;
  readonly capacity: number;
  readonly queued: number;
  readonly genericTarget: number;
  readonly traffic: TrafficStats;
}

export function poolReport<C extends PolicyConfig>(s: PoolState<C>, metrics: AgentMetrics) {
  const byState: Record<InstanceState, number> = {
    starting: s.starting,
    generic: 0,
    specializing: 0,
    idle: 0,
    busy: 0,
    stopping: 0,
  };
  const functions: Record<string, { idle: number; busy: number; specializing: number }> = {};
  /** Calls being served: more than the busy instances where a function allows concurrent calls. */
  let callsInFlight = 0;
  for (const i of s.instances) {
    byState[i.state]++;
    if (i.state === "busy") callsInFlight += i.inFlight;
    if (i.fn && (i.state === "idle" || i.state === "busy" || i.state === "specializing")) {
      const f = functions[i.fn.name] ?? { idle: 0, busy: 0, specializing: 0 };
      f[i.state]++;
      functions[i.fn.name] = f;
    }
  }
  const traffic: Record<string, { callsPerSecond: number; serviceMs: number | null; target: number }> = {};
  for (const [name, t] of s.traffic.functions()) {
    const rate = t.arrivals.rate(s.now);
    traffic[name] = {
      callsPerSecond: rate,
      serviceMs: t.serviceMs.get() ?? null,
      target: functionTarget(s.config, rate, t.serviceMs.get()),
    };
  }
  for (const [state, n] of Object.entries(byState)) metrics.instances.set({ state }, n);
  metrics.genericTarget.set(s.genericTarget);
  metrics.memoryReserved.set(s.live * s.config.instanceMemoryMiB * 1024 * 1024);
  return {
    baseVersion: s.baseVersion,
    driver: s.driverKind,
    instances: byState,
    total: s.live,
    queued: s.queued,
    callsInFlight,
    functions,
    targets: {
      generic: s.genericTarget,
      capacity: s.capacity,
      functionMax: functionMax(s.config),
    },
    measured: {
      callsPerSecond: s.traffic.arrivals.rate(s.now),
      missesPerSecond: s.traffic.misses.rate(s.now),
      startMs: s.traffic.startMs.get() ?? null,
      specializeMs: s.traffic.specializeMs.get() ?? null,
      functions: traffic,
    },
    memory: {
      budgetMiB: s.config.memoryBudgetMiB,
      reservedMiB: s.live * s.config.instanceMemoryMiB,
    },
    config: s.config,
  };
}
