/**
 * What the pool's users see: the code a call is for, the lease that carries one call to an instance, and
 * the errors acquiring or serving it can end in. The pool (pool.ts), every InstanceSource and the HTTP
 * planes import this module; it imports none of them, so no import circle runs through the pool.
 */
import type { LoadSettings } from "../../contracts/guest-protocol.ts";

/** One function's code, as a call or a deploy asks for it. A plain record: every field is data. */
export interface FunctionCode {
  readonly name: string;
  readonly codeHash: string;
  readonly entry: string;
  /** Host path of the code, as the driver attaches it. */
  readonly hostPath: string;
  /** The function's configuration, carried by the load call (memoryMiB also caps the instance). */
  readonly settings?: LoadSettings;
  /** Identifies `settings`: instances loaded with other settings do not serve this version. */
  readonly settingsHash?: string;
  /** The function's instances get outbound network (the sandbox opens it before the code loads). */
  readonly egress?: boolean;
  /**
   * Calls one instance serves at once (the function's `concurrency`, default 1). Read per call, not
   * part of the version: the load does not depend on it.
   */
  readonly concurrency?: number;
}

/** What one version of a function is to the pool: its code and the settings it was loaded with. */
export function functionVersion(fn: Pick<FunctionCode, "codeHash" | "settingsHash">): string {
  return fn.settingsHash ? `${fn.codeHash}+${fn.settingsHash}` : fn.codeHash;
}

/** How the call got its instance: an idle one of its code, a generic one specialized now, a new start. */
export type Acquired = "warm" | "generic" | "cold";

/** One call as the caller hands it over; the lease adds the deadline and the guest's own headers. */
export interface CallRequest {
  readonly method: string;
  readonly path: string;
  /** End-to-end headers for the function (the lease adds the remaining-time header). */
  readonly headers: Record<string, string>;
  readonly body: Buffer | null;
}

/** What bounds one call: its absolute deadline (clock ms) and the largest answer the host accepts. */
export interface CallBounds {
  readonly deadline: number;
  /** The call's whole time budget, for the error's wording (504: "within its deadline of N ms"). */
  readonly timeoutMs: number;
  readonly maxResponseBytes: number;
}

export interface CallAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

/**
 * One call's hold on an instance (which may serve other calls of its function at the same time, up to
 * the function's concurrency). The holder forwards the call through it, then ends it: an instance whose
 * call failed (or that is ended unhealthy) takes no new call and is stopped once its other calls end;
 * any other goes back to the pool.
 */
export interface Lease {
  readonly acquired: Acquired;
  readonly waitedMs: number;
  /** Clock ms when the call got the instance (service time is measured from here). */
  readonly at: number;
  /** The base version of the instance's image (stamped into the answer's base-version header). */
  readonly baseVersion: string;
  /**
   * Forwards the call to the instance and reads its whole answer. Throws CallTimeoutError past the
   * deadline, ResponseTooLargeError over the size limit, InstanceCrashedError when the instance failed.
   */
  forward(call: CallRequest, bounds: CallBounds): Promise<CallAnswer>;
  /** Gives the instance back; `healthy` defaults to whether the forwarded call succeeded. Idempotent. */
  end(healthy?: boolean): void;
}

/** No instance could be had before the call's deadline. */
export class PoolBusyError extends Error {
  override readonly name = "PoolBusyError";
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** The function's module failed to load in a fresh instance. */
export class FunctionLoadError extends Error {
  override readonly name = "FunctionLoadError";
}

/** The call ran past its deadline; its instance is stopped. */
export class CallTimeoutError extends Error {
  override readonly name = "CallTimeoutError";
  constructor(readonly timeoutMs: number) {
    super(`the call did not finish within its deadline of ${timeoutMs} ms; its instance was stopped`);
  }
}

/** The instance failed during the call: `reason` is its exit, or the transport's error when it lives. */
export class InstanceCrashedError extends Error {
  override readonly name = "InstanceCrashedError";
  constructor(readonly reason: string) {
    super(`the function's instance failed during the call: ${reason}`);
  }
}
