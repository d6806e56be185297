/**
 * How big the pool should be, from what was measured (Little's law with headroom), bounded by the
 * host's memory budget, the configured maxima and each function's share. Pure: numbers in, numbers out.
 */

export interface PolicyConfig {
  /** Generic instances kept at least, and at most. */
  readonly genericMin: number;
  readonly genericMax: number;
  /** Instances on this host, at most (before the memory budget). */
  readonly maxInstances: number;
  /** Memory the pool may reserve, MiB, and each instance's reservation. */
  readonly memoryBudgetMiB: number;
  readonly instanceMemoryMiB: number;
  /** Fraction of the host's instances one function may hold (fairness). */
  readonly functionShare: number;
  /** Extra capacity over the measured need, as a fraction (0.5 = 50 % more). */
  readonly headroom: number;
  /** How long a call may wait for an instance already being prepared for its function, ms. */
  readonly queueTargetMs: number;
  /** Service time assumed for a function never measured, ms. */
  readonly defaultServiceMs: number;
  /** Start time assumed before any start was measured, ms. */
  readonly defaultStartMs: number;
}

/** Instances the host can hold: the configured maximum, or fewer when the memory budget says so. */
export function capacity(c: PolicyConfig): number {
  return Math.max(1, Math.min(c.maxInstances, Math.floor(c.memoryBudgetMiB / c.instanceMemoryMiB)));
}

/** The most instances one function may hold, so a hot function cannot take every instance. */
export function functionMax(c: PolicyConfig): number {
  return Math.max(1, Math.floor(capacity(c) * c.functionShare));
}

/**
 * Generic instances to keep ready: enough to absorb the calls that miss (need a generic) during the
 * time it takes to start a replacement, L = lambda_miss * T_start, plus headroom.
 */
export function genericTarget(c: PolicyConfig, missesPerSecond: number, startMs: number | undefined): number {
  const need = missesPerSecond * ((startMs ?? c.defaultStartMs) / 1000) * (1 + c.headroom);
  const cap = Math.min(c.genericMax, capacity(c));
  return Math.min(cap, Math.max(c.genericMin, Math.ceil(need)));
}

/** Specialized instances a function needs for its measured load: L = lambda * S, plus headroom. */
export function functionTarget(
  c: PolicyConfig,
  callsPerSecond: number,
  serviceMs: number | undefined,
): number {
  if (callsPerSecond === 0) return 0;
  const need = callsPerSecond * ((serviceMs ?? c.defaultServiceMs) / 1000) * (1 + c.headroom);
  return Math.min(functionMax(c), Math.max(1, Math.ceil(need)));
}

/**
 * Queued calls one busy (or preparing) instance can take in turn within the queue target: a burst of
 * first calls to one function waits for the instances already being prepared instead of each starting
 * its own. 0 when one call already takes longer than the target: then every call gets its own instance.
 */
export function callsPerInstanceInQueue(c: PolicyConfig, serviceMs: number | undefined): number {
  return Math.floor(c.queueTargetMs / Math.max(0.1, serviceMs ?? c.defaultServiceMs));
}
