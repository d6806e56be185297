/**
 * What the pool measures to size itself: arrival rates (calls per second over a sliding window, per
 * function and overall), service times, instance start and specialization times (moving averages).
 * Pure bookkeeping on an injected clock.
 */

/** Calls per second over the last `windowMs`, counted in one-second buckets. */
export class RateMeter {
  private readonly buckets: number[];
  private head = 0;
  private headSecond = 0;

  constructor(private readonly windowSeconds = 10) {
    this.buckets = new Array<number>(windowSeconds).fill(0);
  }

  private roll(nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    if (this.headSecond === 0) this.headSecond = second;
    const steps = Math.min(second - this.headSecond, this.windowSeconds);
    for (let i = 0; i < steps; i++) {
      this.head = (this.head + 1) % this.windowSeconds;
      this.buckets[this.head] = 0;
    }
    if (second > this.headSecond) this.headSecond = second;
  }

  record(nowMs: number, n = 1): void {
    this.roll(nowMs);
    this.buckets[this.head]! += n;
  }

  /** Average rate over the window, per second. */
  rate(nowMs: number): number {
    this.roll(nowMs);
    let sum = 0;
    for (const b of this.buckets) sum += b;
    return sum / this.windowSeconds;
  }

  /** True when nothing was recorded in the whole window. */
  idle(nowMs: number): boolean {
    return this.rate(nowMs) === 0;
  }
}

/** Exponentially weighted moving average; undefined until the first sample. */
export class MovingAverage {
  private value: number | undefined;
  constructor(private readonly weight = 0.2) {}

  add(sample: number): void {
    this.value = this.value === undefined ? sample : this.value + this.weight * (sample - this.value);
  }

  get(): number | undefined {
    return this.value;
  }
}

export interface FunctionTraffic {
  readonly arrivals: RateMeter;
  readonly serviceMs: MovingAverage;
}

export class TrafficStats {
  readonly arrivals = new RateMeter();
  /** Calls that found no idle specialized instance (needed a generic or a new start). */
  readonly misses = new RateMeter();
  readonly startMs = new MovingAverage();
  readonly specializeMs = new MovingAverage();
  private readonly byFunction = new Map<string, FunctionTraffic>();

  fn(name: string): FunctionTraffic {
    let t = this.byFunction.get(name);
    if (!t) {
      t = { arrivals: new RateMeter(), serviceMs: new MovingAverage() };
      this.byFunction.set(name, t);
    }
    return t;
  }

  /** Forgets functions with no traffic in the window, so 10,000 registered functions cost nothing. */
  prune(nowMs: number): void {
    for (const [name, t] of this.byFunction) if (t.arrivals.idle(nowMs)) this.byFunction.delete(name);
  }

  functions(): IterableIterator<[string, FunctionTraffic]> {
    return this.byFunction.entries();
  }
}
