/**
 * Whether the data plane still takes new work, and how many calls it is serving now. A host leaving
 * the fleet turns draining on (its /healthz then fails, so the load balancer stops routing to it) and
 * waits for the calls already routed to finish.
 */
export class ServingState {
  private inFlightCalls = 0;
  private isDraining = false;
  private idleWaiters: Array<() => void> = [];

  get draining(): boolean {
    return this.isDraining;
  }

  get inFlight(): number {
    return this.inFlightCalls;
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
