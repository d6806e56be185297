/**
 * The guest runtime's HTTP server: /_faas/ control routes for the host, and calls to the loaded function.
 * Node built-ins arrive through `deps` because this module is evaluated while the V8 startup snapshot is
 * built, when some of them (node:http) cannot be loaded yet.
 */
import type { AsyncLocalStorage } from "node:async_hooks";
import type * as Http from "node:http";
import {
  BASE_VERSION_HEADER,
  CONSOLE_PENDING_HEADER,
  CONTROL_PREFIX,
  CONTROL_SECRET_HEADER,
  CONTROL_SECRET_MIN_LENGTH,
  type GuestLogLine,
  type HealthResponse,
  INIT_ENTROPY_BYTES,
  type InitRequest,
  type LoadRequest,
  type LoadResponse,
  REQUEST_ID_HEADER,
  TIMEOUT_HEADER,
} from "../../contracts/guest-protocol.ts";
import { type CallContext, installConsoleCapture, type WritableLike } from "./console-capture.ts";
import type { ConsoleQueue } from "./console-queue.ts";
import { type AnyClass, dispatchRpc, exportedClasses, isAnswer, parseRpcBody, rpcError } from "./jsonrpc.ts";
import { buildHttpEvent, resultToAnswer } from "./lambda.ts";
import { importModule, LoadError, pickExport, resolveFunction } from "./loader.ts";
import type { CreateRequireFn } from "./require-type.ts";
import { type CachingCrypto, drainCryptoCaches, reseedMathRandom } from "./reseed.ts";

/**
 * Steps only a microVM guest takes (main.ts wires them from its flags; the process sandbox has none):
 * there /code is a bind mount, the host's clock is the process's and each process seeds itself.
 */
export interface GuestSteps {
  /** Mounts the code disk the host attached at /code (Linux: /bin/remount-code). Throws why it failed. */
  readonly mountCode?: () => Promise<void>;
  /** Mixes the host's entropy into OpenSSL's DRBGs (the native helper). */
  readonly reseedOpenssl?: (entropy: Buffer) => void;
  /** Steps the guest's wall clock to the host's (the native helper; the runtime is root in the VM). */
  readonly setClock?: (unixTimeMs: number) => void;
}

export interface RuntimeDeps {
  readonly http: typeof Http;
  readonly AsyncLocalStorage: typeof AsyncLocalStorage;
  readonly createRequire: CreateRequireFn;
  /** import() of a file: URL, for ES module entries (loader.ts ModuleLoaders). */
  readonly importModule: (url: string) => Promise<unknown>;
  readonly fs: { existsSync(p: string): boolean; readFileSync(p: string, enc: "utf8"): string };
  readonly format: (...args: unknown[]) => string;
  readonly randomUUID: () => string;
  readonly writeStdout: (line: string) => void;
  readonly now: () => number;
  /** node:crypto as the function's code gets it: its caches of random bytes are drained at init. */
  readonly crypto: CachingCrypto;
  /** The realm's Math: its random is replaced at init with one seeded from the host's entropy. */
  readonly math: { random: () => number };
  readonly guest?: GuestSteps;
  /** process.stdout/stderr: the code's direct writes to them are captured as log lines. */
  readonly streams?: ReadonlyArray<readonly [WritableLike, "info" | "error"]>;
  /** Keeps console lines for GET /_faas/console instead of writing them to stdout (VMs). */
  readonly consoleQueue?: ConsoleQueue;
}

export interface RuntimeOptions {
  readonly codePath: string;
  readonly baseVersion: string;
  readonly runtimeBuild: string;
  /** Console bytes one call may write before its output is cut. */
  readonly logBytesPerCall: number;
  /** Largest control request body, bytes. */
  readonly maxBodyBytes: number;
  /**
   * Refuse an init without a control secret (microVMs: their port is on a network). Without it, an
   * instance whose host sends none (the process sandbox: only the agent reaches its socket) needs none.
   */
  readonly requireControlSecret?: boolean;
}

interface LoadedFunction {
  readonly name: string;
  readonly style: "jsonrpc" | "handler";
  readonly classes: Map<string, AnyClass>;
  readonly instances: Map<string, unknown>;
  readonly handler?: (...args: unknown[]) => unknown;
}

/** A guest clock this far from the host's at init is stepped (--set-clock); closer ones are left alone. */
export const CLOCK_STEP_THRESHOLD_MS = 100;

export function createRuntimeServer(deps: RuntimeDeps, opts: RuntimeOptions): Http.Server {
  const storage = new deps.AsyncLocalStorage<CallContext>();
  let instanceId: string | null = null;
  let loaded: LoadedFunction | null = null;
  /** The host's clock minus ours, learnt at init: a restored guest's clock may be stale. */
  let clockSkewMs = 0;
  const now = () => deps.now() + clockSkewMs;
  /** Set by the first init; every later control call but health must carry it. */
  let controlSecret: string | null = null;

  const queue = deps.consoleQueue;
  installConsoleCapture(
    console,
    storage,
    (args) => deps.format(...args),
    queue ? (line) => queue.push(line) : (line) => deps.writeStdout(`${JSON.stringify(line)}\n`),
    () => loaded?.name ?? null,
    deps.streams ?? [],
  );
  /** Tells the host, on a call's answer, that console lines wait for it. */
  const markConsole = (res: Http.ServerResponse) => {
    if (queue && queue.pending > 0) res.setHeader(CONSOLE_PENDING_HEADER, String(queue.pending));
  };

  const fatal = (what: string, err: unknown) => {
    const ctx = storage.getStore();
    const line: GuestLogLine = {
      type: "fatal",
      fn: loaded?.name ?? null,
      rid: ctx?.rid ?? null,
      level: "error",
      msg: `${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    };
    deps.writeStdout(`${JSON.stringify(line)}\n`);
    // The function's state can no longer be trusted: the host replaces the instance.
    process.exit(70);
  };
  process.on("uncaughtException", (err) => fatal("uncaught exception", err));
  process.on("unhandledRejection", (err) => fatal("unhandled promise rejection", err));

  const server = deps.http.createServer((req, res) => {
    res.setHeader(BASE_VERSION_HEADER, `${opts.baseVersion}; runtime=${opts.runtimeBuild}`);
    const url = req.url ?? "/";
    if (url.startsWith(CONTROL_PREFIX)) {
      void handleControl(req, res, url.slice(CONTROL_PREFIX.length));
      return;
    }
    void handleCall(req, res, url);
  });
  server.keepAliveTimeout = 60_000;

  function sendJson(res: Http.ServerResponse, status: number, body: unknown): void {
    const payload = JSON.stringify(body);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
    });
    res.end(payload);
  }

  function controlError(res: Http.ServerResponse, status: number, kind: string, message: string): void {
    sendJson(res, status, { error: { kind, message } });
  }

  function readBody(req: Http.IncomingMessage, limit: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) {
          reject(new RangeError(`body larger than ${limit} bytes`));
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });
  }

  async function handleControl(
    req: Http.IncomingMessage,
    res: Http.ServerResponse,
    route: string,
  ): Promise<void> {
    try {
      if (route === "health" && req.method === "GET") {
        const health: HealthResponse = {
          status: "ok",
          baseVersion: opts.baseVersion,
          runtimeBuild: opts.runtimeBuild,
          instanceId,
          functionName: loaded?.name ?? null,
          pid: process.pid,
        };
        sendJson(res, 200, health);
        return;
      }
      const refused = checkControlSecret(req, route);
      if (refused) {
        controlError(res, 403, "protocol", refused);
        return;
      }
      if (route === "console" && req.method === "GET") {
        sendJson(res, 200, queue ? queue.take() : { lines: [], dropped: 0 });
        return;
      }
      if (route === "init" && req.method === "POST") {
        const body = JSON.parse((await readBody(req, opts.maxBodyBytes)).toString("utf8")) as InitRequest;
        if (typeof body.instanceId !== "string" || typeof body.unixTimeMs !== "number") {
          controlError(res, 400, "protocol", "init needs instanceId (string) and unixTimeMs (number)");
          return;
        }
        const entropy = typeof body.entropy === "string" ? Buffer.from(body.entropy, "base64") : null;
        if (!entropy || entropy.length !== INIT_ENTROPY_BYTES) {
          controlError(
            res,
            400,
            "protocol",
            `init needs entropy: ${INIT_ENTROPY_BYTES} random bytes, base64 (got ${entropy ? `${entropy.length} bytes` : "none"})`,
          );
          return;
        }
        const secretProblem = initSecretProblem(body.controlSecret);
        if (secretProblem) {
          controlError(res, 400, "protocol", secretProblem);
          return;
        }
        // OpenSSL first: node's caches are refilled from it when they are drained.
        deps.guest?.reseedOpenssl?.(entropy);
        drainCryptoCaches(deps.crypto);
        reseedMathRandom(deps.math, entropy.subarray(0, 16));
        // kvmclock (clock_realtime on restore) is usually right already: step only a clock that is off.
        if (Math.abs(body.unixTimeMs - deps.now()) > CLOCK_STEP_THRESHOLD_MS)
          deps.guest?.setClock?.(body.unixTimeMs);
        if (controlSecret === null && typeof body.controlSecret === "string") {
          controlSecret = body.controlSecret;
        }
        instanceId = body.instanceId;
        clockSkewMs = body.unixTimeMs - deps.now();
        res.writeHead(204).end();
        return;
      }
      if (route === "load" && req.method === "POST") {
        const body = JSON.parse((await readBody(req, opts.maxBodyBytes)).toString("utf8")) as LoadRequest;
        if (loaded) {
          controlError(res, 409, "state", `this instance already serves ${loaded.name}`);
          return;
        }
        if (typeof body.functionName !== "string") {
          controlError(res, 400, "protocol", "load needs functionName (string)");
          return;
        }
        const started = performance.now();
        if (deps.guest?.mountCode) {
          try {
            await deps.guest.mountCode();
          } catch (err) {
            throw new LoadError(
              `mounting the code disk at ${opts.codePath} failed: ${(err as Error).message}`,
            );
          }
        }
        const fsProbe = {
          exists: deps.fs.existsSync,
          readFile: (p: string) => deps.fs.readFileSync(p, "utf8"),
        };
        const target = resolveFunction(opts.codePath, fsProbe);
        const entry = typeof body.entry === "string" ? body.entry : target.file;
        // The record names the entry file; a Lambda handler name in package.json names its export.
        const exportPath = entry === target.file ? target.exportPath : null;
        const ctx: CallContext = {
          fn: body.functionName,
          rid: "load",
          logBudget: opts.logBytesPerCall,
          truncated: false,
        };
        const moduleExports = await storage.run(ctx, () => importModule(deps, opts.codePath, entry, fsProbe));
        const handler = exportPath ? pickExport(moduleExports, entry, exportPath) : moduleExports.handler;
        const classes = exportedClasses(moduleExports);
        if (typeof handler !== "function" && classes.size === 0) {
          throw new LoadError(`${entry} exports neither a handler(event, context) function nor a class`);
        }
        loaded = {
          name: body.functionName,
          style: typeof handler === "function" ? "handler" : "jsonrpc",
          classes,
          instances: new Map(),
          handler: typeof handler === "function" ? (handler as (...a: unknown[]) => unknown) : undefined,
        };
        const answer: LoadResponse = {
          functionName: loaded.name,
          style: loaded.style,
          initMs: performance.now() - started,
          classes: [...new Set([...classes.values()].map((c) => c.name))],
        };
        markConsole(res);
        sendJson(res, 200, answer);
        return;
      }
      controlError(res, 404, "protocol", `no control route ${req.method} ${CONTROL_PREFIX}${route}`);
    } catch (err) {
      markConsole(res);
      if (err instanceof LoadError) controlError(res, 422, "load", err.message);
      else if (err instanceof SyntaxError) controlError(res, 400, "protocol", `bad JSON: ${err.message}`);
      else controlError(res, 500, "protocol", (err as Error).message);
    }
  }

  /** Why a control call is refused (null: it may go on). Health is open: the host polls it before init. */
  function checkControlSecret(req: Http.IncomingMessage, route: string): string | null {
    if (controlSecret === null) {
      if (!opts.requireControlSecret || route === "init") return null;
      return `${CONTROL_PREFIX}${route} is refused before the host's init`;
    }
    const given = req.headers[CONTROL_SECRET_HEADER];
    if (typeof given !== "string")
      return `${CONTROL_PREFIX}${route} needs the ${CONTROL_SECRET_HEADER} header`;
    return sameSecret(given, controlSecret)
      ? null
      : `wrong ${CONTROL_SECRET_HEADER} for ${CONTROL_PREFIX}${route}`;
  }

  function initSecretProblem(given: unknown): string | null {
    if (given === undefined) {
      return opts.requireControlSecret && controlSecret === null
        ? "init needs controlSecret: this runtime refuses control calls without one"
        : null;
    }
    if (typeof given !== "string" || given.length < CONTROL_SECRET_MIN_LENGTH) {
      return `controlSecret must be a string of at least ${CONTROL_SECRET_MIN_LENGTH} characters`;
    }
    if (controlSecret !== null && !sameSecret(given, controlSecret)) {
      return "controlSecret cannot change after the first init";
    }
    return null;
  }

  async function handleCall(req: Http.IncomingMessage, res: Http.ServerResponse, url: string): Promise<void> {
    const fn = loaded;
    if (!fn) {
      controlError(res, 503, "state", "no function is loaded in this instance");
      return;
    }
    const q = url.indexOf("?");
    const fullPath = q === -1 ? url : url.slice(0, q);
    const prefix = `/${fn.name}`;
    if (fullPath !== prefix && !fullPath.startsWith(`${prefix}/`)) {
      controlError(res, 404, "state", `this instance serves /${fn.name}, not ${fullPath}`);
      return;
    }
    const rid = String(req.headers[REQUEST_ID_HEADER] ?? deps.randomUUID());
    const timeoutMs = Number(req.headers[TIMEOUT_HEADER] ?? 30_000);
    const ctx: CallContext = { fn: fn.name, rid, logBudget: opts.logBytesPerCall, truncated: false };
    let body: Buffer;
    try {
      body = await readBody(req, Number.POSITIVE_INFINITY);
    } catch {
      return;
    }
    await storage.run(ctx, async () => {
      if (fn.style === "jsonrpc") {
        if (req.method !== "POST" || (fullPath !== prefix && fullPath !== `${prefix}/`)) {
          sendJson(
            res,
            405,
            rpcError(405, -32600, `this function speaks JSON-RPC 2.0: POST ${prefix}`, null).body,
          );
          return;
        }
        const call = parseRpcBody(body);
        const answer = isAnswer(call) ? call : await dispatchRpc(call, fn.classes, fn.instances);
        markConsole(res);
        sendJson(res, answer.status, answer.body);
        return;
      }
      const started = deps.now();
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (v === undefined || k === REQUEST_ID_HEADER || k === TIMEOUT_HEADER) continue;
        headers[k] = Array.isArray(v) ? v.join(",") : v;
      }
      const event = buildHttpEvent({
        method: req.method ?? "GET",
        path: fullPath.slice(prefix.length) || "/",
        rawQueryString: q === -1 ? "" : url.slice(q + 1),
        headers,
        body,
        requestId: rid,
        sourceIp: String(req.headers["x-forwarded-for"] ?? "127.0.0.1")
          .split(",")[0]!
          .trim(),
        functionName: fn.name,
        nowMs: now(),
      });
      const context = {
        functionName: fn.name,
        functionVersion: "$LATEST",
        awsRequestId: rid,
        invokedFunctionArn: `arn:snapfaas:function:${fn.name}`,
        memoryLimitInMB: String(process.env.FAAS_MEMORY_MIB ?? ""),
        callbackWaitsForEmptyEventLoop: false,
        getRemainingTimeInMillis: () => Math.max(0, timeoutMs - (deps.now() - started)),
      };
      try {
        const handler = fn.handler!;
        const result =
          handler.length >= 3
            ? await new Promise((resolve, reject) =>
                handler(event, context, (err: unknown, value: unknown) =>
                  err ? reject(err) : resolve(value),
                ),
              )
            : await handler(event, context);
        const answer = resultToAnswer(result);
        // The header is the runtime's: a handler's own copy of it would hide waiting lines from the host.
        const headers = Object.fromEntries(
          Object.entries(answer.headers).filter(([k]) => k.toLowerCase() !== CONSOLE_PENDING_HEADER),
        );
        markConsole(res);
        res.writeHead(answer.status, { ...headers, "content-length": answer.body.length });
        res.end(answer.body);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        console.error(`handler failed: ${err instanceof Error ? (err.stack ?? message) : message}`);
        markConsole(res);
        sendJson(res, 500, { message: "Internal Server Error", error: message, requestId: rid });
      }
    });
  }

  return server;
}

/** Compares in time independent of where the strings differ (a guest on the network may time it). */
function sameSecret(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a.charCodeAt(i % Math.max(1, a.length)) || 0) ^ b.charCodeAt(i);
  return diff === 0;
}
