/**
 * The guest runtime's server: /_faas/ control routes for the host, and calls to the loaded function. One
 * listener serves two transports: the host's framed channel (contracts/guest-channel.ts: a connection
 * that opens with its preamble) and HTTP (every other connection). Both hand the same handler a request
 * and write its reply. Node built-ins arrive through `deps` because this module is evaluated while the V8
 * startup snapshot is built, when some of them (node:http, node:net) cannot be loaded yet.
 */
import type { AsyncLocalStorage } from "node:async_hooks";
import type * as Http from "node:http";
import type * as Net from "node:net";
import { corsFor, GENEZIO_DEFAULT_CORS } from "../../contracts/cors.ts";
import type { CorsConfig } from "../../contracts/function-config.ts";
import {
  CHANNEL_PREAMBLE,
  decodeRequest,
  encodeConsole,
  encodeResponse,
  FrameReader,
  FrameType,
} from "../../contracts/guest-channel.ts";
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
  SOURCE_IP_HEADER,
  TIMEOUT_HEADER,
} from "../../contracts/guest-protocol.ts";
import { type CallContext, installConsoleCapture, type WritableLike } from "./console-capture.ts";
import type { ConsoleQueue } from "./console-queue.ts";
import { functionEnvironment, functionIdentity } from "./function-env.ts";
import {
  type AnyClass,
  dispatchRpc,
  exportedClasses,
  isAnswer,
  parseRpcBody,
  type RpcRequestInfo,
  rpcError,
  serializeAnswer,
} from "./jsonrpc.ts";
import {
  buildHttpEvent,
  type FunctionIdentity,
  INTERNAL_ERROR,
  invokeErrorLine,
  lambdaContext,
  resultToAnswer,
} from "./lambda.ts";
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
  readonly net: typeof Net;
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
  /**
   * Keeps console lines for the host instead of writing them to stdout: pushed in batches on the framed
   * connection that serves the function, or fetched at GET /_faas/console by an HTTP host.
   */
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
  /** Who the function is, for the Lambda context. */
  readonly identity: FunctionIdentity;
  /** The load's CORS, else Genezio's default for classes, else none (a handler does its own). */
  readonly cors: CorsConfig | undefined;
}

/** A guest clock this far from the host's at init is stepped (--set-clock); closer ones are left alone. */
export const CLOCK_STEP_THRESHOLD_MS = 100;

/** A request as either transport hands it over: the body already read whole. */
interface GuestRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  /** Names as sent, repeats kept (HTTP only: a frame's headers are the host's, already joined). */
  readonly rawHeaders?: readonly string[];
  /** The connection's peer (HTTP only: over frames the host names the caller in SOURCE_IP_HEADER). */
  readonly peerAddress?: string;
  readonly httpVersion?: string;
}

/** What the handler answers, written by the transport that brought the request. */
interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | number>;
  readonly body: string | Buffer;
}

/** Largest frame the runtime reads from the host (the host bounds call bodies far below this). */
const MAX_REQUEST_FRAME_BYTES = 256 * 1024 * 1024;
/** Routes whose HTTP answers do not carry the pending-console count (the host polls them before load). */
const UNMARKED_ROUTES = new Set(["health", "init", "console"]);

/** The runtime's listener, and its rehearsal of the call path (run once, while the instance is generic). */
export type RuntimeServer = Net.Server & { rehearse(): Promise<void> };

/** The throwaway function a rehearsal calls: a name no deployed function can have (names never start with "."). */
const REHEARSAL_NAME = ".rehearsal";

export function createRuntimeServer(deps: RuntimeDeps, opts: RuntimeOptions): RuntimeServer {
  const storage = new deps.AsyncLocalStorage<CallContext>();
  let instanceId: string | null = null;
  let loaded: LoadedFunction | null = null;
  /** The host's clock minus ours, learnt at init: a restored guest's clock may be stale. */
  let clockSkewMs = 0;
  const now = () => deps.now() + clockSkewMs;
  /** Set by the first init; every later control call but health must carry it. */
  let controlSecret: string | null = null;
  const baseHeader = `${opts.baseVersion}; runtime=${opts.runtimeBuild}`;

  const queue = deps.consoleQueue;
  /** The framed connection that loaded or last called the function: console batches go to it. */
  let consoleLink: FramedLink | null = null;
  installConsoleCapture(
    console,
    storage,
    (args) => deps.format(...args),
    queue
      ? (line) => {
          queue.push(line);
          consoleLink?.lineWaiting();
        }
      : (line) => deps.writeStdout(`${JSON.stringify(line)}\n`),
    () => loaded?.name ?? null,
    deps.streams ?? [],
  );
  /** Framed connections open now: what waits in their outboxes is written before the process ends. */
  const links = new Set<FramedLink>();
  /** Lines still kept when the process ends go to stdout, which the process sandbox's host reads. */
  const spillConsole = () => {
    for (const link of links) link.flush();
    if (!queue || queue.pending === 0) return;
    const { lines, dropped } = queue.take();
    for (const line of lines) deps.writeStdout(`${JSON.stringify(line)}\n`);
    if (dropped > 0)
      deps.writeStdout(
        `${JSON.stringify({ type: "log", fn: loaded?.name ?? null, rid: null, level: "warn", msg: `${dropped} console lines dropped` })}\n`,
      );
  };
  process.on("exit", spillConsole);

  const fatal = (what: string, err: unknown) => {
    const ctx = storage.getStore();
    const line: GuestLogLine = {
      type: "fatal",
      fn: loaded?.name ?? null,
      rid: ctx?.rid ?? null,
      level: "error",
      msg: `${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    };
    spillConsole();
    deps.writeStdout(`${JSON.stringify(line)}\n`);
    // The function's state can no longer be trusted: the host replaces the instance.
    process.exit(70);
  };
  process.on("uncaughtException", (err) => fatal("uncaught exception", err));
  process.on("unhandledRejection", (err) => fatal("unhandled promise rejection", err));

  /** Every request of either transport. `controlLimit` bounds a control body (HTTP reads it bounded itself). */
  function handle(req: GuestRequest): Promise<Reply> | Reply {
    const url = req.url;
    if (url.startsWith(CONTROL_PREFIX)) return handleControl(req, url.slice(CONTROL_PREFIX.length));
    return handleCall(req, url);
  }

  // --- HTTP ---------------------------------------------------------------------------------------------
  const http = deps.http.createServer((req, res) => {
    res.setHeader(BASE_VERSION_HEADER, baseHeader);
    const url = req.url ?? "/";
    const route = url.startsWith(CONTROL_PREFIX) ? url.slice(CONTROL_PREFIX.length) : null;
    readBody(req, route === null ? Number.POSITIVE_INFINITY : opts.maxBodyBytes).then(
      async (body) => {
        const reply = await handle({
          method: req.method ?? "GET",
          url,
          headers: req.headers,
          body,
          rawHeaders: req.rawHeaders,
          peerAddress: req.socket.remoteAddress ?? "127.0.0.1",
          httpVersion: req.httpVersion,
        });
        // Tells an HTTP host, on an answer, that console lines wait for it at GET /_faas/console.
        if (queue && queue.pending > 0 && (route === null || !UNMARKED_ROUTES.has(route)))
          res.setHeader(CONSOLE_PENDING_HEADER, String(queue.pending));
        const body2 = reply.body;
        res.writeHead(reply.status, {
          ...reply.headers,
          "content-length": typeof body2 === "string" ? Buffer.byteLength(body2) : body2.length,
        });
        res.end(body2);
      },
      (err: Error) => {
        // A call's body that broke off has no one to answer; a control body over its limit is refused.
        if (route === null) return;
        const reply = errorReply(500, "protocol", err.message);
        res.writeHead(reply.status, reply.headers);
        res.end(reply.body);
      },
    );
  });
  http.keepAliveTimeout = 60_000;

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
      req.on("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
      req.on("error", reject);
    });
  }

  // --- frames -------------------------------------------------------------------------------------------
  /** One framed connection from the host: requests in, console batches and responses out. */
  class FramedLink {
    /** Calls of the function in flight on this link: their answers carry the waiting lines. */
    private calls = 0;
    private flushScheduled = false;
    private closed = false;
    private outbox: Buffer[] = [];
    private readonly reader: FrameReader;

    constructor(private readonly socket: Net.Socket) {
      this.reader = new FrameReader(
        (type, id, payload) => this.onFrame(type, id, payload),
        () => MAX_REQUEST_FRAME_BYTES,
        () => socket.destroy(),
      );
      socket.on("data", (chunk: Buffer) => this.reader.push(chunk));
      links.add(this);
      socket.on("close", () => {
        this.closed = true;
        links.delete(this);
        if (consoleLink === this) consoleLink = null;
      });
      socket.on("error", () => undefined);
    }

    push(chunk: Buffer): void {
      this.reader.push(chunk);
    }

    private onFrame(type: number, id: number, payload: Buffer): void {
      if (type !== FrameType.request) {
        this.socket.destroy();
        return;
      }
      let req: GuestRequest;
      try {
        const r = decodeRequest(payload);
        req = { method: r.method, url: r.path, headers: r.headers, body: r.body };
      } catch {
        this.socket.destroy();
        return;
      }
      const route = req.url.startsWith(CONTROL_PREFIX) ? req.url.slice(CONTROL_PREFIX.length) : null;
      // The connection that loads or calls the function is the host's console channel from then on.
      const claims = route === null || route === "load";
      if (claims) {
        consoleLink = this;
        this.calls++;
      }
      if (route !== null && req.body.length > opts.maxBodyBytes) {
        this.answer(id, errorReply(500, "protocol", `body larger than ${opts.maxBodyBytes} bytes`), claims);
        return;
      }
      const reply = handle(req);
      if (reply instanceof Promise)
        reply.then(
          (r) => this.answer(id, r, claims),
          (err: Error) => this.answer(id, errorReply(500, "protocol", err.message), claims),
        );
      else this.answer(id, reply, claims);
    }

    private answer(id: number, reply: Reply, claimed: boolean): void {
      if (claimed) this.calls--;
      if (this.closed) return;
      const frame = encodeResponse(
        id,
        reply.status,
        { [BASE_VERSION_HEADER]: baseHeader, ...reply.headers },
        reply.body,
      );
      if (queue && queue.pending > 0 && consoleLink === this) {
        // The call's lines first, in the same write: the host has them when it has the answer.
        const { lines, dropped } = queue.take();
        this.send(encodeConsole(lines, dropped));
      }
      this.send(frame);
    }

    /**
     * Frames are written together once this turn of the event loop is done: the answers of calls that
     * finish together (several in flight in one instance) cost one write and one wake-up of the host.
     */
    private send(frame: Buffer): void {
      this.outbox.push(frame);
      if (this.outbox.length === 1) setImmediate(this.flush);
    }

    readonly flush = (): void => {
      const frames = this.outbox;
      this.outbox = [];
      if (this.closed || frames.length === 0) return;
      this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
    };

    /** A line was kept: outside a call nothing else would carry it, so it goes on its own soon. */
    lineWaiting(): void {
      if (this.calls > 0 || this.flushScheduled) return;
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        if (this.closed || !queue || queue.pending === 0 || this.calls > 0) return;
        const { lines, dropped } = queue.take();
        this.send(encodeConsole(lines, dropped));
      });
    }
  }

  // --- the listener: frames or HTTP, by the connection's first bytes -------------------------------------
  const server = deps.net.createServer((socket) => {
    socket.once("data", function sniff(first: Buffer) {
      if (first[0] !== CHANNEL_PREAMBLE[0]) {
        // Not the host's preamble: an HTTP client. Hand it the bytes read so far and the socket.
        socket.pause();
        socket.unshift(first);
        http.emit("connection", socket);
        process.nextTick(() => socket.resume());
        return;
      }
      // The preamble may come in pieces: wait for all of it.
      const settle = (bytes: Buffer) => {
        if (bytes.length < CHANNEL_PREAMBLE.length) {
          if (!CHANNEL_PREAMBLE.subarray(0, bytes.length).equals(bytes)) socket.destroy();
          else socket.once("data", (more: Buffer) => settle(Buffer.concat([bytes, more])));
          return;
        }
        if (!bytes.subarray(0, CHANNEL_PREAMBLE.length).equals(CHANNEL_PREAMBLE)) {
          socket.destroy();
          return;
        }
        socket.setNoDelay(true);
        const link = new FramedLink(socket);
        const rest = bytes.subarray(CHANNEL_PREAMBLE.length);
        if (rest.length > 0) link.push(rest);
      };
      settle(first);
    });
    socket.on("error", () => undefined);
  });

  function jsonReply(status: number, body: unknown): Reply {
    return { status, headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  }

  function errorReply(status: number, kind: string, message: string): Reply {
    return jsonReply(status, { error: { kind, message } });
  }

  async function handleControl(req: GuestRequest, route: string): Promise<Reply> {
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
        return jsonReply(200, health);
      }
      const refused = checkControlSecret(req, route);
      if (refused) return errorReply(403, "protocol", refused);
      if (route === "console" && req.method === "GET") {
        return jsonReply(200, queue ? queue.take() : { lines: [], dropped: 0 });
      }
      if (route === "init" && req.method === "POST") {
        const body = JSON.parse(req.body.toString("utf8")) as InitRequest;
        if (typeof body.instanceId !== "string" || typeof body.unixTimeMs !== "number") {
          return errorReply(400, "protocol", "init needs instanceId (string) and unixTimeMs (number)");
        }
        const entropy = typeof body.entropy === "string" ? Buffer.from(body.entropy, "base64") : null;
        if (!entropy || entropy.length !== INIT_ENTROPY_BYTES) {
          return errorReply(
            400,
            "protocol",
            `init needs entropy: ${INIT_ENTROPY_BYTES} random bytes, base64 (got ${entropy ? `${entropy.length} bytes` : "none"})`,
          );
        }
        const secretProblem = initSecretProblem(body.controlSecret);
        if (secretProblem) return errorReply(400, "protocol", secretProblem);
        // The clock first, so the reseed's work below does not put it behind the host's again.
        // kvmclock (clock_realtime on restore) is usually right already: step only a clock that is off.
        if (Math.abs(body.unixTimeMs - deps.now()) > CLOCK_STEP_THRESHOLD_MS)
          deps.guest?.setClock?.(body.unixTimeMs);
        // OpenSSL first: node's caches are refilled from it when they are drained.
        deps.guest?.reseedOpenssl?.(entropy);
        drainCryptoCaches(deps.crypto);
        reseedMathRandom(deps.math, entropy.subarray(0, 16));
        if (controlSecret === null && typeof body.controlSecret === "string") {
          controlSecret = body.controlSecret;
        }
        instanceId = body.instanceId;
        clockSkewMs = body.unixTimeMs - deps.now();
        return { status: 204, headers: {}, body: "" };
      }
      if (route === "load" && req.method === "POST") {
        const body = JSON.parse(req.body.toString("utf8")) as LoadRequest;
        if (loaded) return errorReply(409, "state", `this instance already serves ${loaded.name}`);
        if (typeof body.functionName !== "string") {
          return errorReply(400, "protocol", "load needs functionName (string)");
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
        const place = {
          codePath: opts.codePath,
          instanceId,
          nowMs: now(),
          nodeVersion: process.versions.node,
        };
        // Before the import: module-level code reads its configuration from process.env.
        Object.assign(process.env, functionEnvironment(body, place, entry));
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
          identity: functionIdentity(body, place),
          cors: body.cors ?? (typeof handler === "function" ? undefined : GENEZIO_DEFAULT_CORS),
        };
        const answer: LoadResponse = {
          functionName: loaded.name,
          style: loaded.style,
          initMs: performance.now() - started,
          classes: [...new Set([...classes.values()].map((c) => c.name))],
        };
        return jsonReply(200, answer);
      }
      return errorReply(404, "protocol", `no control route ${req.method} ${CONTROL_PREFIX}${route}`);
    } catch (err) {
      if (err instanceof LoadError) return errorReply(422, "load", err.message);
      if (err instanceof SyntaxError) return errorReply(400, "protocol", `bad JSON: ${err.message}`);
      return errorReply(500, "protocol", (err as Error).message);
    }
  }

  /** Why a control call is refused (null: it may go on). Health is open: the host polls it before init. */
  function checkControlSecret(req: GuestRequest, route: string): string | null {
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

  function handleCall(req: GuestRequest, url: string): Promise<Reply> | Reply {
    const fn = loaded;
    if (!fn) return errorReply(503, "state", "no function is loaded in this instance");
    const cors = corsFor(fn.cors, req.method, req.headers);
    if (cors.preflight) return { status: 204, headers: cors.headers, body: "" };
    const reply = routeCall(req, url, fn);
    if (Object.keys(cors.headers).length === 0) return reply;
    const withCors = (r: Reply): Reply => ({ ...r, headers: { ...cors.headers, ...r.headers } });
    return reply instanceof Promise ? reply.then(withCors) : withCors(reply);
  }

  function routeCall(req: GuestRequest, url: string, fn: LoadedFunction): Promise<Reply> | Reply {
    const q = url.indexOf("?");
    const fullPath = q === -1 ? url : url.slice(0, q);
    const prefix = `/${fn.name}`;
    if (fullPath !== prefix && !fullPath.startsWith(`${prefix}/`)) {
      return errorReply(404, "state", `this instance serves /${fn.name}, not ${fullPath}`);
    }
    const rid = String(req.headers[REQUEST_ID_HEADER] ?? deps.randomUUID());
    const ctx: CallContext = { fn: fn.name, rid, logBudget: opts.logBytesPerCall, truncated: false };
    if (fn.style === "jsonrpc") {
      if (req.method !== "POST" || (fullPath !== prefix && fullPath !== `${prefix}/`)) {
        return jsonReply(
          405,
          rpcError(405, -32600, `this function speaks JSON-RPC 2.0: POST ${prefix}`, null).body,
        );
      }
      return storage.run(ctx, async () => {
        const call = parseRpcBody(req.body);
        const answer = isAnswer(call)
          ? call
          : await dispatchRpc(call, fn.classes, fn.instances, rpcRequestInfo(req, url, fullPath));
        const out = serializeAnswer(answer);
        return { status: out.status, headers: { "content-type": "application/json" }, body: out.text };
      });
    }
    return storage.run(ctx, () => handleHandlerCall(req, fn, url, q, fullPath, prefix, rid));
  }

  async function handleHandlerCall(
    req: GuestRequest,
    fn: LoadedFunction,
    url: string,
    q: number,
    fullPath: string,
    prefix: string,
    rid: string,
  ): Promise<Reply> {
    const timeoutMs = Number(req.headers[TIMEOUT_HEADER] ?? 30_000);
    const started = deps.now();
    const event = buildHttpEvent({
      method: req.method,
      path: fullPath.slice(prefix.length) || "/",
      rawQueryString: q === -1 ? "" : url.slice(q + 1),
      rawHeaders: req.rawHeaders ?? flatHeaders(req.headers),
      body: req.body,
      requestId: rid,
      peerAddress: req.peerAddress ?? "127.0.0.1",
      functionName: fn.name,
      nowMs: now(),
    });
    const context = lambdaContext(fn.identity, rid, () => timeoutMs - (deps.now() - started));
    try {
      const handler = fn.handler!;
      const result =
        handler.length >= 3
          ? await new Promise((resolve, reject) =>
              handler(event, context, (err: unknown, value: unknown) => (err ? reject(err) : resolve(value))),
            )
          : await handler(event, context);
      let answer = INTERNAL_ERROR;
      try {
        answer = resultToAnswer(result, prefix);
      } catch (err) {
        console.error(`Invalid response: ${(err as Error).message}`);
      }
      // The header is the runtime's: a handler's own copy of it would hide waiting lines from the host.
      const out = Object.fromEntries(
        Object.entries(answer.headers).filter(([k]) => k.toLowerCase() !== CONSOLE_PENDING_HEADER),
      );
      return { status: answer.status, headers: out, body: answer.body };
    } catch (err) {
      // As on AWS: the client learns only that the call failed; the error goes to the function's logs.
      console.error(invokeErrorLine(err));
      return {
        status: INTERNAL_ERROR.status,
        headers: { ...INTERNAL_ERROR.headers },
        body: INTERNAL_ERROR.body,
      };
    }
  }

  /**
   * Runs a call of each style (a JSON-RPC class, a Lambda handler) through the same code a real call
   * takes, on a throwaway function that is never the loaded one and keeps nothing: in a process started
   * from a snapshot every function is compiled on its first run, and a generic instance should pay for
   * that while it waits, not the first call it serves (about 1 to 2 ms of a first call here). Nothing it
   * does reaches the host: it runs before the runtime says ready, and its console line is taken back.
   */
  async function rehearse(): Promise<void> {
    const identity = functionIdentity(
      { functionName: REHEARSAL_NAME, entry: "index.js" },
      { codePath: opts.codePath, instanceId, nowMs: now(), nodeVersion: process.versions.node },
    );
    // With a queue, a console line too (format, the per-call budget, the queue), taken back below
    // before any host could read it; on stdout it would be written at once, so there it writes none.
    const logs = queue !== undefined;
    class Rehearsal {
      ping(x: unknown) {
        if (logs) console.log("rehearsal %d", x);
        return x;
      }
    }
    const headers = { "content-type": "application/json", host: "faas", [REQUEST_ID_HEADER]: "rehearsal" };
    const styles: LoadedFunction[] = [
      {
        name: REHEARSAL_NAME,
        style: "jsonrpc",
        classes: exportedClasses({ Rehearsal }),
        instances: new Map(),
        identity,
        cors: GENEZIO_DEFAULT_CORS,
      },
      {
        name: REHEARSAL_NAME,
        style: "handler",
        classes: new Map(),
        instances: new Map(),
        handler: async (event: unknown) => ({ statusCode: 200, body: JSON.stringify(event !== null) }),
        identity,
        cors: undefined,
      },
    ];
    const body = Buffer.from('{"jsonrpc":"2.0","method":"Rehearsal.ping","params":[1],"id":1}');
    for (const fn of styles) {
      // JSON-RPC is POSTed to the function's own path; a handler's path and query are its event's.
      const url = fn.style === "jsonrpc" ? `/${REHEARSAL_NAME}` : `/${REHEARSAL_NAME}/x?y=1`;
      const req: GuestRequest = { method: "POST", url, headers, body };
      const cors = corsFor(fn.cors, req.method, req.headers);
      const reply = await routeCall(req, url, fn);
      encodeResponse(0, reply.status, { ...cors.headers, ...reply.headers }, reply.body);
    }
    if (queue) encodeConsole(queue.take().lines, 0);
    else deps.format("%s %d", "rehearsal", 1);
  }

  return Object.assign(server, { rehearse });
}

/** A frame's header record as IncomingMessage.rawHeaders would give it: name, value, name, value... */
function flatHeaders(headers: GuestRequest["headers"]): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) out.push(k, one);
    else out.push(k, v);
  }
  return out;
}

/** The caller's address as the host saw it (SOURCE_IP_HEADER), else this runtime's own peer. */
function sourceIpOf(req: GuestRequest): string {
  const named = req.headers[SOURCE_IP_HEADER];
  return (typeof named === "string" && named) || (req.peerAddress ?? "127.0.0.1");
}

/** The request as a GnzContext first argument is given it (headers without the host's own). */
function rpcRequestInfo(req: GuestRequest, url: string, path: string): RpcRequestInfo {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || k.startsWith("x-faas-")) continue;
    headers[k] = Array.isArray(v) ? v.join(",") : v;
  }
  return {
    headers,
    http: {
      method: req.method,
      path,
      protocol: `HTTP/${req.httpVersion ?? "1.1"}`,
      userAgent: headers["user-agent"] ?? "",
      sourceIp: sourceIpOf(req),
    },
    url: callUrl(url, headers.host),
  };
}

function callUrl(url: string, host: string | undefined): URL {
  try {
    return new URL(url, `http://${host ?? "localhost"}`);
  } catch {
    // A Host header no URL can carry: the path is still worth giving.
    return new URL(url, "http://localhost");
  }
}

/** Compares in time independent of where the strings differ (a guest on the network may time it). */
function sameSecret(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a.charCodeAt(i % Math.max(1, a.length)) || 0) ^ b.charCodeAt(i);
  return diff === 0;
}
