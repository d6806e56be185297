/**
 * The one table from domain errors to HTTP answers, for both planes. Each row names an error type and
 * the answer it gets; where one error means different things on different routes (a module that fails
 * to load is the function's fault on a call, 502, and the deploy's, 422), the row says so per route.
 * Errors no row knows are the agent's own failures: `unexpected` tells the plane to log them.
 */

import { ConfigError } from "../../contracts/function-config.ts";
import { ApiError } from "../errors.ts";
import { ResponseTooLargeError } from "../guest/client.ts";
import { CallTimeoutError, FunctionLoadError, InstanceCrashedError, PoolBusyError } from "../pool/lease.ts";
import { BundleError } from "../registry/bundle.ts";
import { RegistryError } from "../registry/registry.ts";
import { ReleaseError } from "../release/release.ts";
import { RollBlockedError, RolloutConflictError } from "../release/rollout.ts";
import { SandboxStartError } from "../sandbox/driver.ts";

/** Where the error happened: a function call, or one of the control plane's operations. */
export type ErrorRoute = "call" | "deploy" | "delete" | "release" | "rollback" | "admin";

/** How a call ended, as the calls metric counts it. */
export type CallOutcome =
  | "ok"
  | "user_error"
  | "timeout"
  | "crashed"
  | "rejected"
  | "not_found"
  | "bad_request";

export interface MappedError {
  readonly error: ApiError;
  /** The calls metric's outcome (meaningful on the "call" route). */
  readonly outcome: CallOutcome;
  /** No row knew the error: an agent fault, to be logged. */
  readonly unexpected: boolean;
}

type Answer = (err: never) => { error: ApiError; outcome?: CallOutcome };

interface Row {
  readonly matches: (err: unknown) => boolean;
  /** The answer on any route not listed in `on`. */
  readonly answer?: Answer;
  readonly on?: Partial<Record<ErrorRoute, Answer>>;
}

const is =
  (type: abstract new (...args: never[]) => Error) =>
  (err: unknown): boolean =>
    err instanceof type;

const retryAfter = (seconds: number) => ({ "retry-after": String(seconds) });

const ROWS: readonly Row[] = [
  {
    // Already an answer (a bad body, a bad name, a missing route): as it is.
    matches: is(ApiError),
    answer: (e: ApiError) => ({ error: e, outcome: e.status === 413 ? "bad_request" : "rejected" }),
  },
  {
    matches: is(PoolBusyError),
    answer: (e: PoolBusyError) => ({
      error: new ApiError(503, "no_capacity", e.message, retryAfter(e.retryAfterSeconds)),
      outcome: "rejected",
    }),
  },
  {
    // Checked before a start failure: a full disk can be the cause inside one, and the deploy says so.
    matches: isOutOfSpace,
    on: {
      deploy: () => ({
        error: new ApiError(
          507,
          "insufficient_storage",
          "the agent's state dir is full: the deploy was not stored (earlier deployments are unchanged)",
        ),
      }),
    },
  },
  {
    matches: is(SandboxStartError),
    answer: (e: SandboxStartError) => ({
      error: new ApiError(503, "instance_start_failed", e.message, retryAfter(5)),
      outcome: "rejected",
    }),
    on: {
      deploy: (e: SandboxStartError) => ({
        error: new ApiError(
          503,
          "instance_start_failed",
          `could not start an instance to verify the deploy: ${e.message}`,
          retryAfter(5),
        ),
      }),
    },
  },
  {
    matches: is(FunctionLoadError),
    answer: (e: FunctionLoadError) => ({
      error: new ApiError(502, "function_load_failed", `the function failed to load: ${e.message}`),
      outcome: "user_error",
    }),
    on: {
      // The deploy is what is wrong, not a running function.
      deploy: (e: FunctionLoadError) => ({
        error: new ApiError(422, "function_load_failed", `the function failed to load: ${e.message}`),
      }),
    },
  },
  {
    matches: is(CallTimeoutError),
    answer: (e: CallTimeoutError) => ({
      error: new ApiError(504, "call_timeout", e.message),
      outcome: "timeout",
    }),
  },
  {
    matches: is(ResponseTooLargeError),
    answer: (e: ResponseTooLargeError) => ({
      error: new ApiError(502, "response_too_large", e.message),
      outcome: "user_error",
    }),
  },
  {
    matches: is(InstanceCrashedError),
    answer: (e: InstanceCrashedError) => ({
      error: new ApiError(502, "function_crashed", e.message),
      outcome: "crashed",
    }),
  },
  {
    matches: is(ConfigError),
    answer: (e: ConfigError) => ({ error: new ApiError(400, "invalid_config", e.message) }),
  },
  {
    matches: is(BundleError),
    answer: (e: BundleError) => ({ error: new ApiError(e.status, "invalid_bundle", e.message) }),
  },
  {
    matches: is(RegistryError),
    on: {
      deploy: (e: RegistryError) => ({ error: new ApiError(e.status, "invalid_name", e.message) }),
      delete: (e: RegistryError) => ({ error: new ApiError(e.status, "function_not_found", e.message) }),
    },
  },
  {
    matches: is(ReleaseError),
    on: {
      release: (e: ReleaseError) => ({ error: new ApiError(400, "invalid_release", e.message) }),
      rollback: (e: ReleaseError) => ({
        error: new ApiError(400, "invalid_release", `the previous release is no longer usable: ${e.message}`),
      }),
    },
  },
  {
    matches: is(RolloutConflictError),
    on: {
      release: (e: RolloutConflictError) => ({ error: new ApiError(409, "roll_in_progress", e.message) }),
      rollback: (e: RolloutConflictError) => ({ error: new ApiError(409, "cannot_roll_back", e.message) }),
    },
  },
  {
    matches: is(RollBlockedError),
    on: {
      release: (e: RollBlockedError) => ({ error: new ApiError(409, "roll_blocked", e.message) }),
      rollback: (e: RollBlockedError) => ({ error: new ApiError(409, "roll_blocked", e.message) }),
    },
  },
];

/** Answers for errors no row knows: the agent failed, not the caller. */
const UNEXPECTED: Record<"call" | "admin", (message: string) => ApiError> = {
  call: (message) => new ApiError(502, "instance_failed", `the call could not be served: ${message}`),
  admin: (message) => new ApiError(500, "internal", message),
};

/** The disk (or quota) of the state dir ran out, directly or as the cause of an instance start failure. */
export function isOutOfSpace(err: unknown): boolean {
  for (let e = err as { code?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.code === "ENOSPC" || e.code === "EDQUOT") return true;
  }
  return false;
}

/** The HTTP answer to `err` raised on `route`. */
export function mapError(err: unknown, route: ErrorRoute): MappedError {
  for (const row of ROWS) {
    const answer = row.matches(err) ? (row.on?.[route] ?? row.answer) : undefined;
    if (!answer) continue;
    const { error, outcome } = answer(err as never);
    return { error, outcome: outcome ?? "rejected", unexpected: false };
  }
  const message = err instanceof Error ? err.message : String(err);
  return {
    error: UNEXPECTED[route === "call" ? "call" : "admin"](message),
    outcome: "crashed",
    unexpected: true,
  };
}
