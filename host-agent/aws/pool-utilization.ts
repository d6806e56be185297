/**
 * Publishes PoolUtilization, the custom CloudWatch metric the fleet's Auto Scaling group tracks: the
 * share of this host's instance capacity that is taken by calls or about to be (busy, specializing and
 * starting instances), in percent. It is sampled every few seconds and the window's average is sent
 * once per interval, so a burst between two sends still counts. A failed send is logged and counted;
 * the next interval sends again (scaling on a stale number beats stopping the agent).
 */
import { type CloudWatchClient, PutMetricDataCommand } from "@aws-sdk/client-cloudwatch";
import type { Clock, TimerHandle } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { PoolPicture } from "../pool/instance-source.ts";

export const POOL_UTILIZATION_METRIC = "PoolUtilization";
/** The one dimension the group's target-tracking policy names. */
export const GROUP_DIMENSION = "AutoScalingGroupName";
export const DEFAULT_SAMPLE_EVERY_MS = 5_000;

interface PoolCounts {
  readonly role?: unknown;
  readonly instances: { readonly busy: number; readonly specializing: number; readonly starting: number };
  readonly targets: { readonly capacity: number };
}

function isPoolCounts(p: unknown): p is PoolCounts {
  const x = p as PoolCounts | undefined;
  return (
    typeof x?.instances?.busy === "number" &&
    typeof x.instances.specializing === "number" &&
    typeof x.instances.starting === "number" &&
    typeof x.targets?.capacity === "number"
  );
}

/**
 * Percent of the host's capacity in use, from the pool's picture (one pool, or a rollout's `pools`).
 * During a base roll every live pool's instances count against the current pool's capacity (they share
 * the host); capped at 100 because the metric is a share of the host.
 */
export function poolUtilizationPercent(picture: PoolPicture): number {
  const pools: unknown[] = Array.isArray(picture["pools"]) ? (picture["pools"] as unknown[]) : [picture];
  if (!pools.every(isPoolCounts)) throw new Error("the pool picture lacks instance counts or capacity");
  const current = pools.find((p) => p.role === "current") ?? pools[0];
  if (!current || current.targets.capacity <= 0) throw new Error("the pool picture has no capacity");
  let used = 0;
  for (const p of pools) used += p.instances.busy + p.instances.specializing + p.instances.starting;
  return Math.min(100, (100 * used) / current.targets.capacity);
}

export interface PoolUtilizationPublisherDeps {
  readonly cloudWatch: Pick<CloudWatchClient, "send">;
  readonly namespace: string;
  /** The group's name, the metric's dimension (instance metadata, or FAAS_ASG_NAME). */
  readonly groupName: () => Promise<string>;
  /** Utilization now, percent. */
  readonly sample: () => number;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** How often the average is sent (FAAS_METRIC_INTERVAL_MS). */
  readonly intervalMs: number;
  /** How often utilization is sampled; at most intervalMs. Default 5 s. */
  readonly sampleEveryMs?: number;
}

export class PoolUtilizationPublisher {
  private readonly sampleEveryMs: number;
  private timer: TimerHandle | undefined;
  private samples: number[] = [];
  private windowStart = 0;
  private readonly sending = new Set<Promise<void>>();
  private stopped = true;

  constructor(private readonly deps: PoolUtilizationPublisherDeps) {
    this.sampleEveryMs = Math.min(deps.sampleEveryMs ?? DEFAULT_SAMPLE_EVERY_MS, deps.intervalMs);
  }

  /** First sample one sample period from now; first send one interval from now. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.samples = [];
    this.windowStart = this.deps.clock.now();
    this.schedule();
  }

  /** Stops sampling and waits for sends in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.all([...this.sending]);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = undefined;
      this.tick();
      this.schedule();
    }, this.sampleEveryMs);
  }

  // One timer does both jobs, so which of two timers due at the same ms fires first never matters.
  private tick(): void {
    try {
      this.samples.push(this.deps.sample());
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, "could not sample pool utilization");
    }
    const now = this.deps.clock.now();
    if (now - this.windowStart < this.deps.intervalMs) return;
    const window = this.samples;
    this.samples = [];
    this.windowStart = now;
    if (window.length === 0) return;
    const average = window.reduce((a, b) => a + b, 0) / window.length;
    const send = this.send(average, now).finally(() => this.sending.delete(send));
    this.sending.add(send);
  }

  private async send(average: number, at: number): Promise<void> {
    try {
      const groupName = await this.deps.groupName();
      await this.deps.cloudWatch.send(
        new PutMetricDataCommand({
          Namespace: this.deps.namespace,
          MetricData: [
            {
              MetricName: POOL_UTILIZATION_METRIC,
              Dimensions: [{ Name: GROUP_DIMENSION, Value: groupName }],
              Timestamp: new Date(at),
              Unit: "Percent",
              Value: average,
            },
          ],
        }),
      );
      this.deps.log.debug({ percent: average, group: groupName }, "published PoolUtilization");
    } catch (err) {
      this.deps.metrics.metricPublishFailures.inc();
      this.deps.log.error(
        { err: (err as Error).message, namespace: this.deps.namespace, percent: average },
        "could not publish PoolUtilization: scaling sees no new data point until the next interval",
      );
    }
  }
}
