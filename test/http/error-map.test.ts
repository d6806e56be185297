import assert from "node:assert/strict";
import { ApiError } from "../../host-agent/errors.ts";
import { ResponseTooLargeError } from "../../host-agent/guest/client.ts";
import { type ErrorRoute, mapError } from "../../host-agent/http/error-map.ts";
import {
  CallTimeoutError,
  FunctionLoadError,
  InstanceCrashedError,
  PoolBusyError,
} from "../../host-agent/pool/lease.ts";
import { BundleError } from "../../host-agent/registry/bundle.ts";
import { RegistryError } from "../../host-agent/registry/registry.ts";
import { ReleaseError } from "../../host-agent/release/release.ts";
import { RolloutConflictError } from "../../host-agent/release/rollout.ts";
import { SandboxStartError } from "../../host-agent/sandbox/driver.ts";

/** The answer as a client sees it: status, code, message, headers; plus the calls metric's outcome. */
function answer(err: unknown, route: ErrorRoute) {
  const m = mapError(err, route);
  return {
    status: m.error.status,
    code: m.error.code,
    message: m.error.message,
    headers: m.error.headers,
    outcome: m.outcome,
    unexpected: m.unexpected,
  };
}

const noSpace = () => Object.assign(new Error("write failed"), { code: "ENOSPC" });

describe("the error table (http/error-map.ts)", () => {
  it("answers a busy pool with 503 no_capacity and the pool's retry-after, on calls and deploys", () => {
    for (const route of ["call", "deploy"] as const) {
      assert.deepEqual(answer(new PoolBusyError("all busy", 7), route), {
        status: 503,
        code: "no_capacity",
        message: "all busy",
        headers: { "retry-after": "7" },
        outcome: "rejected",
        unexpected: false,
      });
    }
  });

  it("blames a module that fails to load on the function for a call (502) and on the deploy (422)", () => {
    const err = new FunctionLoadError("SyntaxError: nope");
    const call = answer(err, "call");
    assert.deepEqual(
      [call.status, call.code, call.message, call.outcome],
      [502, "function_load_failed", "the function failed to load: SyntaxError: nope", "user_error"],
    );
    const deploy = answer(err, "deploy");
    assert.deepEqual(
      [deploy.status, deploy.code, deploy.message],
      [422, "function_load_failed", "the function failed to load: SyntaxError: nope"],
    );
  });

  it("words an instance start failure for the call and for the deploy, both retryable in 5 s", () => {
    const err = new SandboxStartError("bwrap: no", "i-1");
    const call = answer(err, "call");
    assert.deepEqual(
      [call.status, call.code, call.message, call.headers, call.outcome],
      [503, "instance_start_failed", "bwrap: no", { "retry-after": "5" }, "rejected"],
    );
    const deploy = answer(err, "deploy");
    assert.deepEqual(
      [deploy.status, deploy.message, deploy.headers],
      [503, "could not start an instance to verify the deploy: bwrap: no", { "retry-after": "5" }],
    );
  });

  it("maps what a lease's forward throws: timeout 504, too large 502, crash 502, each with its outcome", () => {
    const t = answer(new CallTimeoutError(1500), "call");
    assert.deepEqual([t.status, t.code, t.outcome], [504, "call_timeout", "timeout"]);
    assert.equal(
      t.message,
      "the call did not finish within its deadline of 1500 ms; its instance was stopped",
    );
    const big = answer(new ResponseTooLargeError("the response is 9 bytes; the limit is 4"), "call");
    assert.deepEqual(
      [big.status, big.code, big.message, big.outcome],
      [502, "response_too_large", "the response is 9 bytes; the limit is 4", "user_error"],
    );
    const crash = answer(new InstanceCrashedError("killed by signal SIGKILL"), "call");
    assert.deepEqual([crash.status, crash.code, crash.outcome], [502, "function_crashed", "crashed"]);
    assert.equal(crash.message, "the function's instance failed during the call: killed by signal SIGKILL");
  });

  it("passes an ApiError through as it is, counting a too-large body as a bad request", () => {
    const tooLarge = new ApiError(413, "body_too_large", "too big");
    assert.equal(mapError(tooLarge, "call").error, tooLarge);
    assert.equal(mapError(tooLarge, "call").outcome, "bad_request");
    assert.equal(mapError(new ApiError(400, "bad_body", "x"), "call").outcome, "rejected");
  });

  it("answers a full state dir on a deploy with 507, even inside a start failure, and nowhere else", () => {
    const direct = answer(noSpace(), "deploy");
    assert.deepEqual([direct.status, direct.code], [507, "insufficient_storage"]);
    const inside = answer(new SandboxStartError("start failed", "i-1", { cause: noSpace() }), "deploy");
    assert.deepEqual([inside.status, inside.code], [507, "insufficient_storage"]);
    // On a call the start failure is what the caller needs to know about.
    assert.equal(
      answer(new SandboxStartError("start failed", "i-1", { cause: noSpace() }), "call").status,
      503,
    );
  });

  it("maps registry, bundle and release errors by the operation they interrupt", () => {
    assert.deepEqual(
      [answer(new BundleError("too big", 413), "deploy").status, answer(new BundleError("x"), "deploy").code],
      [413, "invalid_bundle"],
    );
    assert.deepEqual(
      [
        answer(new RegistryError(400, "bad"), "deploy").code,
        answer(new RegistryError(404, "none"), "delete").code,
      ],
      ["invalid_name", "function_not_found"],
    );
    assert.equal(answer(new RegistryError(404, "none"), "delete").status, 404);
    const bad = new ReleaseError("baseDir", "not a baked base");
    assert.deepEqual(
      [answer(bad, "release").status, answer(bad, "release").message],
      [400, "baseDir: not a baked base"],
    );
    assert.equal(
      answer(bad, "rollback").message,
      "the previous release is no longer usable: baseDir: not a baked base",
    );
    const busy = new RolloutConflictError("a roll is in progress");
    assert.deepEqual(
      [answer(busy, "release").status, answer(busy, "release").code],
      [409, "roll_in_progress"],
    );
    assert.equal(answer(busy, "rollback").code, "cannot_roll_back");
  });

  it("calls any other error the agent's own failure: 502 on a call, 500 on the control plane, to be logged", () => {
    const call = answer(new TypeError("x is undefined"), "call");
    assert.deepEqual(
      [call.status, call.code, call.message, call.outcome, call.unexpected],
      [502, "instance_failed", "the call could not be served: x is undefined", "crashed", true],
    );
    const admin = answer(new TypeError("x is undefined"), "admin");
    assert.deepEqual(
      [admin.status, admin.code, admin.message, admin.unexpected],
      [500, "internal", "x is undefined", true],
    );
    // An error that means something on one route only is unexpected elsewhere.
    assert.equal(answer(new RegistryError(404, "none"), "call").unexpected, true);
    assert.equal(answer(noSpace(), "call").status, 502);
  });
});
