/**
 * The control plane: deploy, list, inspect and delete functions; pool state, health and metrics. Every
 * route needs the admin token. A deploy is checked (archive, entry module, a real load in a fresh
 * instance) before it replaces anything; on any failure the previous deployment stays as it was.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import path from "node:path";
import {
  ConfigError,
  type ConfigLimits,
  type FunctionConfigPatch,
  parseConfigPatch,
} from "../../contracts/function-config.ts";
import type { Clock } from "../clock.ts";
import { ApiError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { FunctionLogs } from "../logs/function-logs.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { InstanceSource } from "../pool/instance-source.ts";
import { FunctionLoadError, functionVersion, PoolBusyError } from "../pool/lease.ts";
import {
  checkFunctionName,
  type PreparedDeploy,
  publicRecord,
  type Registry,
  RegistryError,
} from "../registry/registry.ts";
import { parseRelease, ReleaseError } from "../release/release.ts";
import type { Rollout } from "../release/rollout.ts";
import { bearerToken, tokenMatches } from "./auth.ts";
import { type ErrorRoute, mapError } from "./error-map.ts";
import { functionCodeOf } from "./function-code.ts";
import {
  applyRequestTimeouts,
  checkingInterval,
  MAX_HEADER_BYTES,
  type RequestTimeouts,
  readBody,
  sendError,
  sendJson,
} from "./json.ts";

export interface ControlPlaneDeps {
  readonly registry: Registry;
  readonly pool: InstanceSource;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly adminToken: string;
  readonly maxBundleBytes: number;
  /** How long a deploy may take to prove its module loads. */
  readonly deployTimeoutMs: number;
  readonly health: () => Record<string, unknown>;
  /** The base-image roll; without it the release routes answer 404. */
  readonly rollout?: Rollout;
  readonly timeouts: RequestTimeouts;
  /** The last console lines of each function (GET /v1/functions/<name>/logs). */
  readonly functionLogs?: FunctionLogs;
  /** The most memory and the longest timeout a function may ask for on this host. */
  readonly configLimits?: ConfigLimits;
  /**
   * What the host lacks for per-function egress (the driver's check); absent: the sandbox has none, and
   * a function asking for it is refused.
   */
  readonly egressProblems?: () => Promise<string[]>;
}

/** Header of a deploy carrying a configuration change: base64 of the JSON a PATCH .../config takes. */
export const DEPLOY_CONFIG_HEADER = "x-faas-config";
/** Largest configuration body: the secrets' and environment's limits and room for the rest. */
const MAX_CONFIG_BODY = 64 * 1024;
/** Without limits from the agent: the defaults of the agent's own configuration. */
const DEFAULT_CONFIG_LIMITS: ConfigLimits = { maxMemoryMiB: 256, maxTimeoutMs: 30_000 };

/** Most lines one GET /v1/functions/<name>/logs returns. */
const MAX_LOG_LINES = 500;

/** How long `?wait=1` waits for a roll to settle before answering 202 with where it stands. */
const RELEASE_WAIT_MS = 240_000;

const BUNDLE_TYPES = new Set([
  "application/gzip",
  "application/x-gzip",
  "application/x-tar",
  "application/x-compressed-tar",
  "application/zip",
  "application/x-zip-compressed",
  "application/octet-stream",
]);

export function createControlPlane(deps: ControlPlaneDeps): Server {
  const server = createServer(
    { maxHeaderSize: MAX_HEADER_BYTES, connectionsCheckingInterval: checkingInterval(deps.timeouts) },
    (req, res) => {
      void route(deps, req, res).catch((err: unknown) => {
        const mapped = mapError(err, errorRouteOf(req));
        if (mapped.unexpected) deps.log.error({ err }, "control plane error");
        sendError(res, mapped.error);
      });
    },
  );
  applyRequestTimeouts(server, deps.timeouts);
  return server;
}

/** Which operation a request is, for the error table (one error can mean different things per route). */
function errorRouteOf(req: IncomingMessage): ErrorRoute {
  const parts = new URL(req.url ?? "/", "http://admin").pathname.split("/").filter(Boolean);
  if (parts[0] !== "v1") return "admin";
  if (parts[1] === "functions" && parts.length === 3) {
    if (req.method === "PUT") return "deploy";
    if (req.method === "DELETE") return "delete";
  }
  if (parts[1] === "release" && req.method === "POST") {
    if (parts.length === 2) return "release";
    if (parts.length === 3 && parts[2] === "rollback") return "rollback";
  }
  return "admin";
}

/** The function name in a path segment, decoded and checked (400 otherwise). */
function functionNameOf(segment: string, pathname: string): string {
  let name: string;
  try {
    name = decodeURIComponent(segment);
  } catch {
    throw new ApiError(400, "invalid_name", `the function name in ${pathname} is not valid UTF-8`);
  }
  try {
    checkFunctionName(name);
  } catch (err) {
    throw new ApiError(400, "invalid_name", (err as Error).message);
  }
  return name;
}

async function route(deps: ControlPlaneDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!tokenMatches(bearerToken(req.headers.authorization), deps.adminToken)) {
    req.resume();
    throw new ApiError(
      401,
      "unauthorized",
      "missing or wrong admin token: send Authorization: Bearer <token>",
      {
        "www-authenticate": 'Bearer realm="faas-admin"',
      },
    );
  }
  const url = new URL(req.url ?? "/", "http://admin");
  const method = req.method ?? "GET";
  const parts = url.pathname.split("/").filter(Boolean);
  const allow = (methods: string[]) => {
    if (!methods.includes(method)) {
      req.resume();
      throw new ApiError(405, "method_not_allowed", `${url.pathname} accepts ${methods.join(", ")}`, {
        allow: methods.join(", "),
      });
    }
  };
  if (url.pathname === "/healthz") {
    allow(["GET"]);
    sendJson(res, 200, { status: "ok", ...deps.health() });
    return;
  }
  if (url.pathname === "/metrics") {
    allow(["GET"]);
    deps.pool.snapshot();
    if (deps.pool.memoryInUse) deps.metrics.memoryUsed.set(await deps.pool.memoryInUse());
    deps.metrics.functions.set(deps.registry.size);
    const text = await deps.metrics.registry.metrics();
    res.writeHead(200, { "content-type": deps.metrics.registry.contentType });
    res.end(text);
    return;
  }
  if (url.pathname === "/v1/pool") {
    allow(["GET"]);
    const picture = deps.pool.snapshot();
    sendJson(
      res,
      200,
      deps.pool.memoryInUse ? { ...picture, memoryUsedBytes: await deps.pool.memoryInUse() } : picture,
    );
    return;
  }
  if (deps.rollout && parts[0] === "v1" && parts[1] === "release") {
    await releaseRoute(deps, deps.rollout, parts.slice(2), url, req, res, allow);
    return;
  }
  if (parts[0] === "v1" && parts[1] === "functions" && parts.length === 2) {
    allow(["GET"]);
    sendJson(res, 200, { functions: deps.registry.list().map(publicRecord) });
    return;
  }
  if (parts[0] === "v1" && parts[1] === "functions" && parts.length === 4 && parts[3] === "config") {
    allow(["GET", "PATCH"]);
    const name = functionNameOf(parts[2]!, url.pathname);
    if (method === "GET") {
      const record = deps.registry.get(name);
      if (!record) throw new ApiError(404, "function_not_found", `no function named ${name}`);
      sendJson(res, 200, { function: name, revision: record.revision, config: publicRecord(record).config });
      return;
    }
    await configure(deps, name, req, res);
    return;
  }
  if (parts[0] === "v1" && parts[1] === "functions" && parts.length === 4 && parts[3] === "logs") {
    allow(["GET"]);
    const name = functionNameOf(parts[2]!, url.pathname);
    const raw = url.searchParams.get("limit") ?? "100";
    const limit = Number(raw);
    if (!/^\d+$/.test(raw) || limit < 1 || limit > MAX_LOG_LINES) {
      throw new ApiError(
        400,
        "invalid_limit",
        `limit must be a whole number from 1 to ${MAX_LOG_LINES}, not ${raw}`,
      );
    }
    const logs = deps.functionLogs;
    if (!deps.registry.get(name) && !logs?.has(name)) {
      throw new ApiError(404, "function_not_found", `no function named ${name}`);
    }
    sendJson(res, 200, { function: name, lines: logs?.read(name, limit) ?? [] });
    return;
  }
  if (parts[0] === "v1" && parts[1] === "functions" && parts.length === 3) {
    let name: string;
    try {
      name = decodeURIComponent(parts[2]!);
    } catch {
      // Percent-escapes that are not UTF-8 (%ff): a bad name, not a server error.
      req.resume();
      throw new ApiError(400, "invalid_name", `the function name in ${url.pathname} is not valid UTF-8`);
    }
    allow(["GET", "PUT", "DELETE"]);
    try {
      checkFunctionName(name);
    } catch (err) {
      req.resume();
      throw new ApiError(400, "invalid_name", (err as Error).message);
    }
    if (method === "GET") {
      const record = deps.registry.get(name);
      if (!record) throw new ApiError(404, "function_not_found", `no function named ${name}`);
      sendJson(res, 200, {
        function: publicRecord(record),
        pool: deps.pool.snapshot().functions[name] ?? { idle: 0, busy: 0 },
      });
      return;
    }
    if (method === "DELETE") {
      await deps.registry.withNameLock(name, async () => {
        const removed = await deps.registry.remove(name);
        deps.pool.retireFunction(name);
        deps.functionLogs?.forget(name);
        deps.log.info({ fn: name }, "function deleted");
        sendJson(res, 200, { deleted: removed.name });
      });
      return;
    }
    await deploy(deps, name, req, res);
    return;
  }
  req.resume();
  throw new ApiError(
    404,
    "no_route",
    `no route ${method} ${url.pathname} (see GET /v1/functions, PUT /v1/functions/<name>)`,
  );
}

/**
 * GET /v1/release: where the roll stands. POST /v1/release: roll to the release in the body (checked
 * before anything is used; 400 naming the field). POST /v1/release/rollback: abandon the roll in flight,
 * or roll back to the previous release. `?wait=1` answers when the roll has settled, else 202 at once.
 */
async function releaseRoute(
  deps: ControlPlaneDeps,
  rollout: Rollout,
  rest: string[],
  url: URL,
  req: IncomingMessage,
  res: ServerResponse,
  allow: (methods: string[]) => void,
): Promise<void> {
  const wait = ["1", "true"].includes(url.searchParams.get("wait") ?? "");
  const answer = async () => {
    if (!wait) {
      sendJson(res, 202, rollout.status());
      return;
    }
    // A canary under little traffic can take long to judge: answer before the request times out.
    let timer: ReturnType<Clock["setTimeout"]> | undefined;
    const gaveUp = new Promise<"waiting">((resolve) => {
      timer = deps.clock.setTimeout(() => resolve("waiting"), RELEASE_WAIT_MS);
    });
    const settled = await Promise.race([rollout.settled(), gaveUp]);
    if (timer) deps.clock.clearTimeout(timer);
    if (settled === "waiting") sendJson(res, 202, rollout.status());
    else sendJson(res, 200, settled);
  };
  if (rest.length === 0) {
    allow(["GET", "POST"]);
    if (req.method === "GET") {
      sendJson(res, 200, rollout.status());
      return;
    }
    const body = await readBody(req, 64 * 1024);
    let input: unknown;
    try {
      input = JSON.parse(body.toString("utf8"));
    } catch (err) {
      throw new ApiError(400, "invalid_release", `the body is not JSON: ${(err as Error).message}`);
    }
    try {
      const release = parseRelease(input);
      if (!path.isAbsolute(release.baseDir)) {
        throw new ReleaseError("baseDir", "must be an absolute path on the agent's host");
      }
      await rollout.begin(release);
    } catch (err) {
      if (err instanceof ReleaseError)
        deps.log.warn({ field: err.field, err: err.message }, "release rejected");
      throw err;
    }
    await answer();
    return;
  }
  if (rest.length === 1 && rest[0] === "rollback") {
    allow(["POST"]);
    req.resume();
    await rollout.rollback();
    await answer();
    return;
  }
  req.resume();
  throw new ApiError(404, "no_route", `no route ${req.method} ${url.pathname} (see GET /v1/release)`);
}

async function deploy(
  deps: ControlPlaneDeps,
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const type = (req.headers["content-type"] ?? "application/octet-stream")
    .split(";")[0]!
    .trim()
    .toLowerCase();
  if (!BUNDLE_TYPES.has(type)) {
    req.resume();
    deps.metrics.deploys.inc({ result: "rejected" });
    throw new ApiError(
      415,
      "unsupported_media_type",
      `send the bundle as application/gzip (tar.gz) or application/zip, not ${type}`,
    );
  }
  let patch: FunctionConfigPatch | undefined;
  const header = req.headers[DEPLOY_CONFIG_HEADER];
  if (header !== undefined) {
    try {
      patch = configPatchOf(
        Buffer.from(String(header), "base64").toString("utf8"),
        deps.configLimits ?? DEFAULT_CONFIG_LIMITS,
        `the ${DEPLOY_CONFIG_HEADER} header (base64 of a JSON object)`,
      );
    } catch (err) {
      req.resume();
      deps.metrics.deploys.inc({ result: "rejected" });
      throw err;
    }
  }
  const bytes = await readBody(req, deps.maxBundleBytes).catch((err: ApiError) => {
    deps.metrics.deploys.inc({ result: "rejected" });
    throw new ApiError(413, "bundle_too_large", `${err.message} (bundle limit)`);
  });
  const started = deps.clock.now();
  await deps.registry.withNameLock(name, async () => {
    let prepared: Awaited<ReturnType<Registry["prepare"]>> | undefined;
    try {
      prepared = await deps.registry.prepare(name, bytes, patch);
      const previous = deps.registry.get(name);
      const { record, loaded } = await proveAndCommit(deps, prepared, started);
      deps.metrics.deploys.inc({ result: "ok" });
      deps.log.info({ fn: name, codeHash: record.codeHash, revision: record.revision }, "function deployed");
      sendJson(res, previous ? 200 : 201, {
        function: publicRecord(record),
        load: { style: loaded.style, classes: loaded.classes, initMs: Math.round(loaded.initMs * 100) / 100 },
        url: `/${name}`,
      });
    } catch (err) {
      deps.metrics.deploys.inc({ result: "rejected" });
      if (prepared) await deps.registry.discard(prepared);
      throw err;
    }
  });
}

/** A configuration change from JSON text, checked; 400 naming the field and what is allowed. */
function configPatchOf(text: string, limits: ConfigLimits, what: string): FunctionConfigPatch {
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, "invalid_config", `${what} is not JSON: ${(err as Error).message}`);
  }
  try {
    return parseConfigPatch(input, limits);
  } catch (err) {
    if (err instanceof ConfigError) throw new ApiError(400, "invalid_config", err.message);
    throw err;
  }
}

/**
 * Loads a prepared deploy (new code, or new configuration) in a fresh instance, commits it once it
 * loads, and retires the instances of the version it replaces: they finish their call and stop.
 */
async function proveAndCommit(deps: ControlPlaneDeps, prepared: PreparedDeploy, started: number) {
  const settings = deps.registry.settingsFor(prepared.record, prepared.secrets);
  if (settings.egress) await assertEgressAvailable(deps);
  const code = functionCodeOf(prepared.record, settings, prepared.artifactPath);
  const loaded = await deps.pool.prespecialize(code, started + deps.deployTimeoutMs);
  const record = await deps.registry.commit(prepared);
  deps.pool.retireFunction(record.name, functionVersion(code));
  return { record, loaded };
}

/** 409 naming what the host lacks, for a function that asks for egress where it cannot have it. */
async function assertEgressAvailable(deps: ControlPlaneDeps): Promise<void> {
  const problems = deps.egressProblems
    ? await deps.egressProblems()
    : ["this sandbox driver has no per-function egress (the process sandbox has)"];
  if (problems.length > 0) {
    throw new ApiError(
      409,
      "egress_unavailable",
      `egress is not available on this host: ${problems.join("; ")} (the function is unchanged)`,
    );
  }
}

/**
 * PATCH /v1/functions/<name>/config: environment, secrets, memory, timeout, CORS changed without a new
 * upload. Proven by a load with the new settings first; calls after the answer run on instances loaded
 * with them, and instances of the old settings are retired.
 */
async function configure(
  deps: ControlPlaneDeps,
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const body = await readBody(req, MAX_CONFIG_BODY).catch(() => {
    throw new ApiError(413, "config_too_large", `the configuration is larger than ${MAX_CONFIG_BODY} bytes`);
  });
  const patch = configPatchOf(body.toString("utf8"), deps.configLimits ?? DEFAULT_CONFIG_LIMITS, "the body");
  const started = deps.clock.now();
  await deps.registry.withNameLock(name, async () => {
    try {
      const prepared = deps.registry.prepareConfig(name, patch);
      const { record } = await proveAndCommit(deps, prepared, started);
      // Names only: values of variables and secrets are never logged.
      deps.log.info({ fn: name, revision: record.revision }, "function configuration changed");
      sendJson(res, 200, { function: publicRecord(record) });
    } catch (err) {
      if (err instanceof ConfigError) throw new ApiError(400, "invalid_config", err.message);
      if (err instanceof RegistryError) throw new ApiError(err.status, "function_not_found", err.message);
      if (err instanceof FunctionLoadError) {
        throw new ApiError(
          422,
          "function_load_failed",
          `the function failed to load with the new configuration (it runs as before): ${err.message}`,
        );
      }
      if (err instanceof PoolBusyError) {
        throw new ApiError(503, "no_capacity", err.message, { "retry-after": String(err.retryAfterSeconds) });
      }
      throw err;
    }
  });
}
