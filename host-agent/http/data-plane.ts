/**
 * The data plane: `/<function>/...` to an instance of that function, through the pool. It knows nothing
 * of sandboxes or guests: it acquires a lease, forwards the call through it, responds, and ends the
 * lease; every way that can fail becomes a status and message through the one error table (error-map.ts).
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { corsFor } from "../../contracts/cors.ts";
import type { CorsConfig } from "../../contracts/function-config.ts";
import { BASE_VERSION_HEADER, REQUEST_ID_HEADER, UNVERSIONED_BASE } from "../../contracts/guest-protocol.ts";
import type { Clock } from "../clock.ts";
import { ApiError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { InstanceSource } from "../pool/instance-source.ts";
import type { CallAnswer, Lease } from "../pool/lease.ts";
import type { Registry } from "../registry/registry.ts";
import { type CallOutcome, mapError } from "./error-map.ts";
import { forwardHeaders, TrustedProxies } from "./forward-headers.ts";
import { functionCodeOf } from "./function-code.ts";
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
  // Every answer names its request id. Not set ahead with setHeader: a call's own answer carries it in
  // the one header object writeHead takes, which node writes without merging (its fast path).
  if (url === "/healthz" && (req.method === "GET" || req.method === "HEAD")) {
    // The load balancer's health check: a draining host, or one whose pool cannot start instances,
    // fails it so no new calls are routed here (and an instance refresh stops at this host).
    const health = deps.serving.health();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    sendJson(res, health.ok ? 200 : 503, health.body);
    return;
  }
  const name = /^\/([^/?#]+)/.exec(url)?.[1] ?? "";
  const record = deps.registry.get(name);
  if (!record) {
    req.resume();
    deps.metrics.calls.inc({ function: "(unknown)", outcome: "not_found" });
    res.setHeader(REQUEST_ID_HEADER, requestId);
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
  let outcome: CallOutcome = "ok";
  let lease: Lease | undefined;
  let cors: CorsConfig | undefined;
  const callEnded = deps.serving.callStarted();
  try {
    const body = await readBody(req, deps.maxBodyBytes);
    // The function's own timeout, environment and memory (within the host's bounds).
    const settings = deps.registry.settingsFor(record);
    cors = settings.load.cors;
    const deadline = received + settings.timeoutMs;
    lease = await deps.pool.acquire(
      functionCodeOf(record, settings, deps.registry.artifactPath(record.codeHash)),
      deadline,
    );
    const headers = forwardHeaders({
      rawHeaders: req.rawHeaders,
      peerAddress: req.socket.remoteAddress,
      localPort: req.socket.localPort,
      trustedProxies: deps.trustedProxies ?? TrustedProxies.none,
      requestId,
      timeoutMs: deadline - deps.clock.now(),
    });
    const answer = await lease.forward(
      {
        method: req.method ?? "GET",
        path: url,
        headers,
        body: body.length > 0 || !["GET", "HEAD"].includes(req.method ?? "GET") ? body : null,
      },
      { deadline, timeoutMs: settings.timeoutMs, maxResponseBytes: deps.maxBodyBytes },
    );
    if (answer.status >= 500) outcome = "user_error";
    respond(res, answer, lease.baseVersion, requestId);
  } catch (err) {
    const mapped = mapError(err, "call");
    outcome = mapped.outcome;
    if (mapped.unexpected) deps.log.error({ rid: requestId, fn: name, err }, "call failed");
    if (!res.headersSent) {
      res.setHeader(REQUEST_ID_HEADER, requestId);
      // The agent's own answer (the function crashed, timed out, ...) is readable where the function's is.
      if (cors) {
        for (const [k, v] of Object.entries(corsFor(cors, req.method ?? "GET", req.headers).headers))
          res.setHeader(k, v);
      }
    }
    sendError(res, mapped.error, requestId);
  } finally {
    // In flight until the answer has left: a drain must not end the host under a response being sent.
    if (res.writableFinished || res.destroyed) callEnded();
    else res.once("close", callEnded);
    lease?.end();
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

/** The function's answer to the caller, without hop-by-hop headers, stamped with the instance's base. */
function respond(res: ServerResponse, answer: CallAnswer, baseVersion: string, requestId: string): void {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(answer.headers)) if (!HOP_BY_HOP.has(k)) out[k] = v;
  // A microVM's runtime cannot know the base version its own rootfs is hashed into: the instance's base names it.
  const stamped = out[BASE_VERSION_HEADER];
  if (typeof stamped === "string" && stamped.startsWith(`${UNVERSIONED_BASE};`))
    out[BASE_VERSION_HEADER] = `${baseVersion}${stamped.slice(UNVERSIONED_BASE.length)}`;
  out["content-length"] = String(answer.body.length);
  out[REQUEST_ID_HEADER] = requestId;
  res.writeHead(answer.status, out);
  res.end(answer.body);
}
