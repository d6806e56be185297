/**
 * Whether the data plane still takes new work, how many calls it is serving now, and what /healthz
 * says. A host leaving the fleet turns draining on (its /healthz then fails, so the load balancer stops
 * routing to it) and waits for the calls already routed to finish. A host whose pool cannot start
 * instances fails /healthz too: until the first instance of the serving base has started (restored and
 * passed /_faas/init), and again after N starts in a row have failed, so an instance refresh stops at a
 * host that cannot serve instead of rolling a broken release through the fleet.
 */
import type { StartHealth } from "../pool/instance-source.ts";

/** Consecutive start failures after which /healthz fails, by default. */
export const DEFAULT_HEALTH_START_FAILURES = 3;

export type HealthVerdict =
  | { readonly ok: true; readonly body: { readonly status: "ok" } }
  | {
      readonly ok: false;
      readonly body: { readonly status: "draining" | "starting" | "failing"; readonly reason?: string };
    };

export interface ServingStateOptions {
  /** The serving pool's starts; without it only draining fails /healthz. */
  readonly starts?: () => StartHealth;
  /** Starts in a row that must fail before /healthz does (at least 1). */
  readonly startFailureLimit?: number;
}

/** The /healthz answer from the drain flag and the pool's starts. Pure: every rule is here. */
export function healthVerdict(
  draining: boolean,
  starts: StartHealth | undefined,
  startFailureLimit = DEFAULT_HEALTH_START_FAILURES,
): HealthVerdict {
  if (draining) return { ok: false, body: { status: "draining" } };
  if (starts) {
    if (starts.consecutiveFailures >= startFailureLimit) {
      return {
        ok: false,
        body: {
          status: "failing",
          reason: `the last ${starts.consecutiveFailures} instance starts of base ${starts.baseVersion} failed (limit ${startFailureLimit}): ${starts.lastError ?? "no reason given"}`,
        },
      };
    }
    // With no generic instances kept ahead nothing starts before a call, and a host the load balancer
    // never marks healthy gets no call: only the failure rule applies then.
    if (starts.started === 0 && starts.startsAhead) {
      return {
        ok: false,
        body: {
          status: "starting",
          reason:
            starts.consecutiveFailures > 0
              ? `no instance of base ${starts.baseVersion} has started yet (${starts.consecutiveFailures} failed: ${starts.lastError ?? "no reason given"})`
              : `no instance of base ${starts.baseVersion} has started yet`,
        },
      };
    }
  }
  return { ok: true, body: { status: "ok" } };
}

export class ServingState {
  private inFlightCalls = 0;
  private isDraining = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly options: ServingStateOptions = {}) {
    const limit = options.startFailureLimit ?? DEFAULT_HEALTH_START_FAILURES;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new RangeError(`startFailureLimit must be a whole number of at least 1, not ${limit}`);
    }
  }

  get draining(): boolean {
    return this.isDraining;
  }

  get inFlight(): number {
    return this.inFlightCalls;
  }

  /** What /healthz answers now. */
  health(): HealthVerdict {
    return healthVerdict(this.isDraining, this.options.starts?.(), this.options.startFailureLimit);
  }

  /** From now on /healthz reports draining; calls still arriving are served. One way: a drain is not undone. */
  startDraining(): void {
    this.isDraining = true;
  }

  /** Counts one call as in flight; the returned function ends it (calling it again does nothing). */
  callStarted(): () => void {
    this.inFlightCalls++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.inFlightCalls--;
      if (this.inFlightCalls === 0) {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        for (const w of waiters) w();
      }
    };
  }

  /** Resolves once no call is in flight (at once when none is). */
  idle(): Promise<void> {
    if (this.inFlightCalls === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
