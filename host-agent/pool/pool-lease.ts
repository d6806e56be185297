/**
 * The pool's Lease: it holds one instance for one call, forwards the call over the instance's guest
 * client under the call's deadline and size limit, words a failure in the domain's errors (reading the
 * instance's own exit reason when it died), and hands the instance back to the pool when it ends. The
 * instance never leaves the pool: callers see only the Lease interface.
 */
import { TIMEOUT_HEADER } from "../../contracts/guest-protocol.ts";
import type { Clock } from "../clock.ts";
import { CallCancel, ResponseTooLargeError } from "../guest/client.ts";
import { exitSoon } from "../sandbox/driver.ts";
import type { PoolInstance } from "./instance.ts";
import {
  type Acquired,
  type CallAnswer,
  type CallBounds,
  type CallRequest,
  CallTimeoutError,
  InstanceCrashedError,
  type Lease,
} from "./lease.ts";

export class PoolLease implements Lease {
  private failed = false;
  private ended = false;
  private readonly endHooks: ((healthy: boolean) => void)[] = [];

  constructor(
    /** The instance held; for the pool (and its tests), not for the planes. */
    readonly instance: PoolInstance,
    readonly acquired: Acquired,
    readonly waitedMs: number,
    readonly at: number,
    private readonly clock: Clock,
    private readonly giveBack: (lease: PoolLease, healthy: boolean) => void,
  ) {}

  get baseVersion(): string {
    return this.instance.sandbox.base.version;
  }

  async forward(call: CallRequest, bounds: CallBounds): Promise<CallAnswer> {
    const remaining = Math.max(0, bounds.deadline - this.clock.now());
    call.headers[TIMEOUT_HEADER] = String(remaining);
    const cancel = new CallCancel();
    const timer = this.clock.setTimeout(() => cancel.abort(), remaining);
    try {
      return await this.instance.client.forward({
        method: call.method,
        path: call.path,
        headers: call.headers,
        body: call.body,
        signal: cancel,
        maxResponseBytes: bounds.maxResponseBytes,
      });
    } catch (err) {
      this.failed = true;
      if (cancel.aborted) throw new CallTimeoutError(bounds.timeoutMs);
      if (err instanceof ResponseTooLargeError) throw err;
      const exit = await exitSoon(this.instance.sandbox.exited);
      throw new InstanceCrashedError(exit?.reason ?? (err as Error).message);
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  end(healthy = !this.failed): void {
    if (this.ended) return;
    this.ended = true;
    this.giveBack(this, healthy);
    for (const hook of this.endHooks) hook(healthy);
  }

  /** Runs `hook` when the lease ends (a rollout counts its base's calls this way). */
  onEnd(hook: (healthy: boolean) => void): void {
    this.endHooks.push(hook);
  }
}
