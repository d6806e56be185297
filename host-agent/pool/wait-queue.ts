/**
 * The calls waiting for an instance, in arrival order, each with its deadline. The pool decides who is
 * served; this keeps the line: enqueue with a deadline timer, take out, put back in front, count per
 * function, and reject everyone when the pool closes.
 */
import type { Clock, TimerHandle } from "../clock.ts";
import type { AgentMetrics } from "../metrics.ts";
import { type FunctionCode, functionVersion } from "./lease.ts";
import type { PoolLease } from "./pool-lease.ts";

export interface Waiter {
  readonly fn: FunctionCode;
  readonly deadline: number;
  readonly enqueuedAt: number;
  readonly resolve: (lease: PoolLease) => void;
  readonly reject: (err: Error) => void;
  timer: TimerHandle | undefined;
  served: boolean;
}

export class WaitQueue {
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly metrics: AgentMetrics,
    /** The error a waiter whose deadline passed is rejected with (worded with the pool's state then). */
    private readonly expired: () => Error,
  ) {}

  get length(): number {
    return this.waiters.length;
  }

  /** True when some call waits that no one has taken up yet. */
  hasUnserved(): boolean {
    return this.waiters.some((w) => !w.served);
  }

  /** Calls of `name` waiting and not yet taken up. */
  queuedFor(name: string): number {
    let n = 0;
    for (const w of this.waiters) if (!w.served && w.fn.name === name) n++;
    return n;
  }

  /** The first waiting call for exactly this code. */
  firstFor(fn: FunctionCode): Waiter | undefined {
    return this.waiters.find(
      (w) => !w.served && w.fn.name === fn.name && functionVersion(w.fn) === functionVersion(fn),
    );
  }

  /** A snapshot of the line, in order, to walk while serving changes it. */
  inOrder(): Waiter[] {
    return [...this.waiters];
  }

  add(waiter: Waiter): void {
    this.armDeadline(waiter);
    this.waiters.push(waiter);
    this.metrics.queueDepth.set(this.waiters.length);
  }

  /** Back at the head of the line, keeping its deadline (it lost a race for capacity). */
  putBack(waiter: Waiter): void {
    waiter.served = false;
    this.waiters.unshift(waiter);
    this.armDeadline(waiter);
  }

  /** Takes `waiter` out of the line (it is being served, or it expired). */
  take(waiter: Waiter): void {
    waiter.served = true;
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
    if (waiter.timer) this.clock.clearTimeout(waiter.timer);
    this.metrics.queueDepth.set(this.waiters.length);
  }

  /** Empties the line, rejecting every waiter with `err`. */
  rejectAll(err: () => Error): void {
    for (const w of [...this.waiters]) {
      this.take(w);
      w.reject(err());
    }
  }

  private armDeadline(waiter: Waiter): void {
    waiter.timer = this.clock.setTimeout(
      () => {
        if (waiter.served) return;
        this.take(waiter);
        waiter.reject(this.expired());
      },
      Math.max(0, waiter.deadline - this.clock.now()),
    );
  }
}
