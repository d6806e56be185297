/**
 * Lets a host leave the fleet without failing calls. The group's scale-in lifecycle hook holds a
 * terminating instance in Terminating:Wait; this watcher sees that in the instance metadata (the target
 * lifecycle state turns to "Terminated"), makes /healthz fail so the load balancer routes nothing new
 * here, keeps serving the calls already routed, and once none is in flight (or the drain timeout has
 * passed) completes the hook with CONTINUE so the termination goes on. While it waits it records a
 * heartbeat every minute, so the hook's own timeout does not end the host under running calls. The
 * process is left running: the instance's shutdown stops it.
 */
import {
  type AutoScalingClient,
  CompleteLifecycleActionCommand,
  RecordLifecycleActionHeartbeatCommand,
} from "@aws-sdk/client-auto-scaling";
import type { Clock, TimerHandle } from "../clock.ts";
import type { ServingState } from "../http/serving-state.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import { ImdsError, type InstanceMetadata } from "./imds.ts";

export const DEFAULT_POLL_EVERY_MS = 5_000;
export const DEFAULT_HEARTBEAT_EVERY_MS = 60_000;
/** The target lifecycle state of an instance the group is terminating. */
export const TERMINATED = "Terminated";
/** A refused completion is logged as an error once, then every this many attempts (debug between). */
const LOUD_EVERY = 12;

export type DrainPhase = "watching" | "draining" | "completing" | "completed" | "stopped";

export interface DrainWatcherDeps {
  readonly metadata: InstanceMetadata;
  readonly autoScaling: Pick<AutoScalingClient, "send">;
  readonly serving: ServingState;
  /** The scale-in lifecycle hook (FAAS_LIFECYCLE_HOOK). */
  readonly hookName: string;
  /** The group's name (instance metadata, or FAAS_ASG_NAME). */
  readonly groupName: () => Promise<string>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  /** How long calls in flight may take before the hook is completed anyway (FAAS_DRAIN_TIMEOUT_MS). */
  readonly timeoutMs: number;
  readonly pollEveryMs?: number;
  readonly heartbeatEveryMs?: number;
}

export class DrainWatcher {
  private state: DrainPhase = "watching";
  private timer: TimerHandle | undefined;
  private running: Promise<void> | undefined;
  private started = false;
  private pollFailing = false;
  private wake: (() => void) | undefined;
  private readonly pollEveryMs: number;
  private readonly heartbeatEveryMs: number;

  constructor(private readonly deps: DrainWatcherDeps) {
    this.pollEveryMs = deps.pollEveryMs ?? DEFAULT_POLL_EVERY_MS;
    this.heartbeatEveryMs = deps.heartbeatEveryMs ?? DEFAULT_HEARTBEAT_EVERY_MS;
  }

  get phase(): DrainPhase {
    return this.state;
  }

  /** Polls the target lifecycle state now, then every poll period until a drain starts. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.schedule(0);
  }

  /** Stops polling; a drain under way stops waiting and does not complete the hook (its default result does). */
  async stop(): Promise<void> {
    if (this.state !== "completed") this.state = "stopped";
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.wake?.();
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.state !== "watching") return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.timer = undefined;
      this.running = this.poll();
    }, ms);
  }

  private async poll(): Promise<void> {
    let target: string;
    try {
      target = await this.deps.metadata.targetLifecycleState();
      this.pollFailing = false;
    } catch (err) {
      // Said once per outage, not every 5 s; a 404 means the group has not set the item yet.
      const quiet = this.pollFailing || (err instanceof ImdsError && err.status === 404);
      this.pollFailing = true;
      this.deps.log[quiet ? "debug" : "warn"](
        { err: (err as Error).message },
        "could not read the target lifecycle state; a scale-in would go unnoticed until it can",
      );
      this.schedule(this.pollEveryMs);
      return;
    }
    if (target !== TERMINATED) {
      this.schedule(this.pollEveryMs);
      return;
    }
    await this.drain();
  }

  private async drain(): Promise<void> {
    if (this.state !== "watching") return;
    this.state = "draining";
    const { serving, clock, log } = this.deps;
    serving.startDraining();
    log.info(
      { inFlight: serving.inFlight, timeoutMs: this.deps.timeoutMs, hook: this.deps.hookName },
      "the Auto Scaling group is terminating this host: draining (health check fails, calls in flight finish)",
    );
    let heartbeat: TimerHandle | undefined;
    const beat = () => {
      heartbeat = clock.setTimeout(() => {
        void this.lifecycleCall("heartbeat");
        beat();
      }, this.heartbeatEveryMs);
    };
    beat();
    let timedOut = false;
    let deadline: TimerHandle | undefined;
    await Promise.race([
      serving.idle(),
      new Promise<void>((resolve) => {
        this.wake = resolve;
        deadline = clock.setTimeout(() => {
          timedOut = true;
          resolve();
        }, this.deps.timeoutMs);
      }),
    ]);
    this.wake = undefined;
    if (heartbeat) clock.clearTimeout(heartbeat);
    if (deadline) clock.clearTimeout(deadline);
    if (this.state !== "draining") return;
    this.state = "completing";
    if (timedOut) {
      log.warn(
        { inFlight: serving.inFlight, timeoutMs: this.deps.timeoutMs },
        "drain timeout passed with calls still in flight: letting the termination go on",
      );
    } else {
      log.info("no call in flight: letting the termination go on");
    }
    // The group may not hold the instance in Terminating:Wait yet (the target state can turn before the
    // load balancer's deregistration delay is over): "no active lifecycle action" until it does. Keep
    // trying every poll period; the hook's own timeout ends the host if no attempt is ever accepted.
    for (let attempt = 1; ; attempt++) {
      const accepted = await this.lifecycleCall("complete", attempt > 1 && attempt % LOUD_EVERY !== 0);
      // Stopped meanwhile: the agent is going away, and says so by not claiming the completion.
      if (this.state !== "completing") return;
      if (accepted) {
        this.state = "completed";
        log.info({ hook: this.deps.hookName, attempts: attempt }, "lifecycle action completed (CONTINUE)");
        return;
      }
      if (!(await this.pause(this.pollEveryMs))) return;
    }
  }

  /** Waits ms on the agent's clock; false when the watcher was stopped meanwhile. */
  private pause(ms: number): Promise<boolean> {
    if (this.state !== "completing") return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = this.deps.clock.setTimeout(() => {
        this.wake = undefined;
        resolve(this.state === "completing");
      }, ms);
      this.wake = () => {
        this.deps.clock.clearTimeout(t);
        resolve(false);
      };
    });
  }

  /** One call to the hook; failures are counted and logged (at debug when `quiet`), never thrown. */
  private async lifecycleCall(action: "heartbeat" | "complete", quiet = false): Promise<boolean> {
    try {
      const [instanceId, groupName] = await Promise.all([
        this.deps.metadata.instanceId(),
        this.deps.groupName(),
      ]);
      const target = {
        LifecycleHookName: this.deps.hookName,
        AutoScalingGroupName: groupName,
        InstanceId: instanceId,
      };
      if (action === "complete") {
        await this.deps.autoScaling.send(
          new CompleteLifecycleActionCommand({ ...target, LifecycleActionResult: "CONTINUE" }),
        );
      } else {
        await this.deps.autoScaling.send(new RecordLifecycleActionHeartbeatCommand(target));
      }
      if (action === "heartbeat")
        this.deps.log.debug({ hook: this.deps.hookName }, "drain heartbeat recorded");
      return true;
    } catch (err) {
      this.deps.metrics.lifecycleActionFailures.inc({ action });
      this.deps.log[quiet ? "debug" : "error"](
        { err: (err as Error).message, hook: this.deps.hookName, action },
        `lifecycle ${action === "complete" ? "completion" : "heartbeat"} failed`,
      );
      return false;
    }
  }
}
