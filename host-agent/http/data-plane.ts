/**
 * The data plane: `/<function>/...` to an instance of that function, through the pool. It knows nothing
 * of sandboxes: it asks the pool for a lease, forwards the call over the lease's guest client, and
 * turns every way that can fail into a clear status and message.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { BASE_VERSION_HEADER, REQUEST_ID_HEADER, UNVERSIONED_BASE } from "../../contracts/guest-protocol.ts";
import type { Clock } from "../clock.ts";
import { ApiError } from "../errors.ts";
import { ResponseTooLargeError } from "../guest/client.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { InstanceSource } from "../pool/instance-source.ts";
import { FunctionLoadError, type Lease, PoolBusyError } from "../pool/pool.ts";
import type { Registry } from "../registry/registry.ts";
import { exitSoon, SandboxStartError } from "../sandbox/driver.ts";
import { forwardHeaders, TrustedProxies } from "./forward-headers.ts";
import {
  applyRequestTimeouts,
  checkingInterval,
  HOP_BY_HOP,
  MAX_HEADER_BYTES,
  type RequestTimeouts,
  readBody,
  sendError,
  sendJson,
} from "./json.ts";
import type { ServingState } from "./serving-state.ts";

export interface DataPlaneDeps {
  readonly registry: Registry;
  readonly pool: InstanceSource;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly callTimeoutMs: number;
  readonly maxBodyBytes: number;
  readonly timeouts: RequestTimeouts;
  /** Calls in flight, and what /healthz answers (503 while draining or while instances cannot start). */
  readonly serving: ServingState;
  /** Proxies whose X-Forwarded-For names the client (FAAS_TRUSTED_PROXIES); none unless given. */
  readonly trustedProxies?: TrustedProxies;
}

type Outcome = "ok" | "user_error" | "timeout" | "crashed" | "rejected" | "not_found" | "bad_request";

export function createDataPlane(deps: DataPlaneDeps): Server {
  const server = createServer(
    { maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: checkingInterval(deps.timeouts) },
    (req, res) => {
      void handle(deps, req, res);
    },
  );
  applyRequestTimeouts(server, deps.timeouts);
  server.keepAliveTimeout = 5_000;
  return server;
}

async function handle(deps: DataPlaneDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const received = deps.clock.now();
  const url = req.url ?? "/";
  const requestId = randomUUID();
  res.setHeader(REQUEST_ID_HEADER, requestId);
  if (url === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
    // The load balancer's health check: a draining host, or one whose pool cannot start instances,
    // fails it so no new calls are routed here (and an instance refresh stops at this host).
    const health = deps.serving.health();
    sendJson(res, health.ok ? 200 : 503, health.body);
    return;
  }
  const name = /^\/([^/?#]+)/.exec(url)?.[1] ?? "";
  const record = deps.registry.get(name);
  if (!record) {
    req.resume();
    deps.metrics.calls.inc({ function: "(unknown)", outcome: "not_found" });
    sendError(
      res,
      new ApiError(
        404,
        "function_not_found",
        name ? `no function named ${name.slice(0, 80)} is deployed` : "call /<function>",
      ),
      requestId,
    );
    return;
  }
  let outcome: Outcome = "ok";
  let lease: Lease | undefined;
  let healthy = true;
  const callEnded = deps.serving.callStarted();
  try {
    const body = await readBody(req, deps.maxBodyBytes);
    // The function's own timeout, environment and memory (within the host's bounds).
    const settings = deps.registry.settingsFor(record);
    const deadline = received + settings.timeoutMs;
    lease = await deps.pool.acquire(
      {
        name,
        codeHash: record.codeHash,
        entry: record.entry,
        // The folder for the process sandbox, the function's code disk image for microVMs.
        hostPath: deps.registry.artifactPath(record.codeHash),
        settings: settings.load,
        settingsHash: settings.hash,
      },
      deadline,
    );
    const remaining = deadline - deps.clock.now();
    const headers = forwardHeaders({
      rawHeaders: req.rawHeaders,
      peerAddress: req.socket.remoteAddress,
      localPort: req.socket.localPort,
      trustedProxies: deps.trustedProxies ?? TrustedProxies.none,
      requestId,
      timeoutMs: remaining,
    });
    const abort = new AbortController();
    const timer = deps.clock.setTimeout(() => abort.abort(), Math.max(0, remaining));
    let answer: Awaited<ReturnType<typeof lease.instance.client.forward>>;
    try {
      answer = await lease.instance.client.forward({
        method: req.method ?? "GET",
        path: url,
        headers,
        body: body.length > 0 || !["GET", "HEAD"].includes(req.method ?? "GET") ? body : null,
        signal: abort.signal,
        maxResponseBytes: deps.maxBodyBytes,
      });
    } catch (err) {
      healthy = false;
      if (abort.signal.aborted) {
        outcome = "timeout";
        throw new ApiError(
          504,
          "call_timeout",
          `the call did not finish within its deadline of ${settings.timeoutMs} ms; its instance was stopped`,
        );
      }
      if (err instanceof ResponseTooLargeError) {
        outcome = "user_error";
        throw new ApiError(502, "response_too_large", err.message);
      }
      outcome = "crashed";
      const exit = await exitSoon(lease.instance.sandbox.exited);
      throw new ApiError(
        502,
        "function_crashed",
        `the function's instance failed during the call: ${exit?.reason ?? (err as Error).message}`,
      );
    } finally {
      deps.clock.clearTimeout(timer);
    }
    if (answer.status >= 500) outcome = "user_error";
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(k)) out[k] = v;
    // A microVM's runtime cannot know the base version its own rootfs is hashed into: the instance's base names it.
    const stamped = out[BASE_VERSION_HEADER];
    if (typeof stamped === "string" && stamped.startsWith(`${UNVERSIONED_BASE};`))
      out[BASE_VERSION_HEADER] =
        `${lease.instance.sandbox.base.version}${stamped.slice(UNVERSIONED_BASE.length)}`;
    out["content-length"] = String(answer.body.length);
    out[REQUEST_ID_HEADER] = requestId;
    res.writeHead(answer.status, out);
    res.end(answer.body);
  } catch (err) {
    if (err instanceof ApiError) {
      if (outcome === "ok") outcome = err.status === 413 ? "bad_request" : "rejected";
      sendError(res, err, requestId);
    } else if (err instanceof PoolBusyError) {
      outcome = "rejected";
      sendError(
        res,
        new ApiError(503, "no_capacity", err.message, { "retry-after": String(err.retryAfterSeconds) }),
        requestId,
      );
    } else if (err instanceof SandboxStartError) {
      outcome = "rejected";
      sendError(
        res,
        new ApiError(503, "instance_start_failed", err.message, { "retry-after": "5" }),
        requestId,
      );
    } else if (err instanceof FunctionLoadError) {
      outcome = "user_error";
      sendError(
        res,
        new ApiError(502, "function_load_failed", `the function failed to load: ${err.message}`),
        requestId,
      );
    } else {
      outcome = "crashed";
      deps.log.error({ rid: requestId, fn: name, err }, "call failed");
      sendError(
        res,
        new ApiError(502, "instance_failed", `the call could not be served: ${(err as Error).message}`),
        requestId,
      );
    }
  } finally {
    // In flight until the answer has left: a drain must not end the host under a response being sent.
    if (res.writableFinished || res.destroyed) callEnded();
    else res.once("close", callEnded);
    if (lease) deps.pool.release(lease, healthy);
    deps.metrics.calls.inc({ function: name, outcome });
    const seconds = (deps.clock.now() - received) / 1000;
    deps.metrics.callDuration.observe({ acquired: lease?.acquired ?? "none" }, seconds);
    // No child logger per call: bindings would be serialised on the hot path even when debug is off.
    if (deps.log.isLevelEnabled("debug")) {
      deps.log.debug(
        {
          rid: requestId,
          fn: name,
          outcome,
          status: res.statusCode,
          ms: seconds * 1000,
          acquired: lease?.acquired,
        },
        "call",
      );
    }
  }
}
