/**
 * The host's side of the guest runtime protocol: one keep-alive HTTP connection per instance over its
 * endpoint (Unix socket or TCP), used for control calls and forwarded function calls alike.
 */
import { Client, type Dispatcher } from "undici";
import {
  CONSOLE_PENDING_HEADER,
  CONTROL_SECRET_HEADER,
  type ConsoleResponse,
  type ControlError,
  type HealthResponse,
  type InitRequest,
  type LoadRequest,
  type LoadResponse,
} from "../../guest-images/runtime/protocol.ts";
import { exitSoon, type GuestEndpoint, type SandboxExit } from "../sandbox/driver.ts";
import { type ConsoleLine, checkConsoleLine } from "./console-line.ts";

export type { ConsoleLine } from "./console-line.ts";

export class GuestError extends Error {
  override readonly name = "GuestError";
  constructor(
    message: string,
    /** "load" when the user's module failed to load; "protocol" for everything else. */
    readonly kind: "load" | "protocol" | "state",
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface ForwardedCall {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | null;
  readonly signal: AbortSignal;
  readonly maxResponseBytes: number;
}

export interface GuestAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

export class ResponseTooLargeError extends Error {
  override readonly name = "ResponseTooLargeError";
}

export interface GuestClientOptions {
  /** A load that takes longer fails as a load error (a module that never finishes loading). */
  readonly loadTimeoutMs?: number;
  /** The instance's exit: a load cut short by the instance dying reports why it died. */
  readonly exited?: Promise<SandboxExit>;
  /**
   * The user's console lines from a runtime that keeps them for the host (`--console channel`, in VMs),
   * fetched after the answer that says some wait. Attributed to the function this client loaded.
   */
  readonly onConsole?: (line: ConsoleLine) => void;
  /** True for a runtime started with `--console channel` (microVMs): lines may wait when it stops. */
  readonly consoleChannel?: boolean;
}

/** Longest console message passed on; the runtime's per-call budget is 64 KiB. */
const MAX_CONSOLE_MSG = 64 * 1024;
/**
 * What one fetch of the console may bring: the runtime keeps about 256 KiB, but its answers are the
 * guest's, so the host bounds them itself.
 */
const MAX_CONSOLE_LINES_PER_FETCH = 2000;
const MAX_CONSOLE_BYTES_PER_FETCH = 512 * 1024;
/** Largest body of a control answer (health, load, console) the host reads. */
const MAX_CONTROL_BODY = 2 * 1024 * 1024;

export class GuestClient {
  private readonly client: Client;
  /** The function this client loaded: console lines are attributed to it, whatever they say. */
  private functionName: string | null = null;
  private draining: Promise<void> | undefined;
  private drainAgain = false;
  private readonly secretHeader: Record<string, string>;

  constructor(
    endpoint: GuestEndpoint,
    private readonly opts: GuestClientOptions = {},
  ) {
    this.secretHeader = endpoint.controlSecret ? { [CONTROL_SECRET_HEADER]: endpoint.controlSecret } : {};
    this.client =
      endpoint.kind === "unix"
        ? new Client("http://guest", {
            socketPath: endpoint.socketPath,
            pipelining: 1,
            keepAliveTimeout: 60_000,
          })
        : new Client(`http://${endpoint.host}:${endpoint.port}`, { pipelining: 1, keepAliveTimeout: 60_000 });
  }

  async health(signal?: AbortSignal): Promise<HealthResponse> {
    return (await this.control("GET", "health", undefined, signal)) as HealthResponse;
  }

  /** Sends init; the endpoint's control secret, if any, goes with it (the first init sets it). */
  async init(body: InitRequest, signal?: AbortSignal): Promise<void> {
    const secret = this.secretHeader[CONTROL_SECRET_HEADER];
    await this.control(
      "POST",
      "init",
      secret && !body.controlSecret ? { ...body, controlSecret: secret } : body,
      signal,
    );
  }

  /**
   * Loads the function's module. User code runs here, so its failures are load errors: a module that
   * hangs past loadTimeoutMs or kills its instance (process.exit, memory limit) is reported as such.
   */
  async load(body: LoadRequest, signal?: AbortSignal): Promise<LoadResponse> {
    const { loadTimeoutMs, exited } = this.opts;
    const timeout = loadTimeoutMs === undefined ? undefined : AbortSignal.timeout(loadTimeoutMs);
    const signals = [signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    this.functionName = body.functionName;
    try {
      return (await this.control(
        "POST",
        "load",
        body,
        signals.length > 0 ? AbortSignal.any(signals) : undefined,
      )) as LoadResponse;
    } catch (err) {
      if (err instanceof GuestError) throw err;
      if (timeout?.aborted && !signal?.aborted) {
        throw new GuestError(`the module did not finish loading within ${loadTimeoutMs} ms`, "load");
      }
      const exit = exited ? await exitSoon(exited) : undefined;
      if (exit?.cause === "exited") {
        throw new GuestError(`the instance stopped while loading the module: ${exit.reason}`, "load");
      }
      throw err;
    }
  }

  private async control(
    method: "GET" | "POST",
    route: string,
    body: unknown,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const res = await this.client.request({
      method,
      path: `/_faas/${route}`,
      headers:
        body === undefined
          ? { ...this.secretHeader }
          : { ...this.secretHeader, "content-type": "application/json" },
      body: body === undefined ? null : JSON.stringify(body),
      signal,
    });
    const text = (
      await readBounded(
        res.body,
        MAX_CONTROL_BODY,
        () =>
          new GuestError(
            `the guest's answer to ${route} is larger than ${MAX_CONTROL_BODY} bytes`,
            "protocol",
          ),
      )
    ).toString("utf8");
    // The console route's own answer never starts another fetch: a guest cannot make the host loop.
    if (route !== "console") this.noteConsole(res.headers);
    if (res.statusCode === 204) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new GuestError(
        `guest answered ${route} with ${res.statusCode} and a body that is not JSON`,
        "protocol",
        res.statusCode,
      );
    }
    if (res.statusCode >= 400) {
      const err = (parsed as ControlError).error;
      throw new GuestError(
        err?.message ?? `guest answered ${route} with ${res.statusCode}`,
        err?.kind ?? "protocol",
        res.statusCode,
      );
    }
    return parsed;
  }

  /** Forwards one call and reads the whole answer (bounded: a runaway response cannot exhaust the host). */
  async forward(call: ForwardedCall): Promise<GuestAnswer> {
    const res: Dispatcher.ResponseData = await this.client.request({
      method: call.method as Dispatcher.HttpMethod,
      path: call.path,
      headers: call.headers,
      body: call.body,
      signal: call.signal,
    });
    const declared = Number(res.headers["content-length"] ?? 0);
    if (declared > call.maxResponseBytes) {
      res.body.destroy();
      throw new ResponseTooLargeError(
        `the response is ${declared} bytes; the limit is ${call.maxResponseBytes}`,
      );
    }
    const body = await readBounded(
      res.body,
      call.maxResponseBytes,
      () =>
        new ResponseTooLargeError(`the response is larger than the limit of ${call.maxResponseBytes} bytes`),
    );
    // undici gives each answer its own headers object: the host's header is taken out of it in place.
    const headers = res.headers as Record<string, string | string[]>;
    if (headers[CONSOLE_PENDING_HEADER] !== undefined) {
      this.noteConsole(headers);
      delete headers[CONSOLE_PENDING_HEADER];
    }
    return { status: res.statusCode, headers, body };
  }

  /** Fetches waiting console lines in the background when an answer says there are some. */
  private noteConsole(headers: Record<string, string | string[] | undefined>): void {
    if (!this.opts.onConsole || !(Number(headers[CONSOLE_PENDING_HEADER] ?? 0) > 0)) return;
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = this.drainConsole()
      .catch(() => undefined)
      .finally(() => {
        this.draining = undefined;
        if (this.drainAgain) {
          this.drainAgain = false;
          this.noteConsole({ [CONSOLE_PENDING_HEADER]: "1" });
        }
      });
  }

  /**
   * Fetches the lines still waiting in a channel-console guest before it is stopped, within `timeoutMs`
   * (a guest that does not answer loses them). Nothing to do for a stdout-console guest.
   */
  async flushConsole(timeoutMs: number): Promise<void> {
    if (!this.opts.consoleChannel || !this.opts.onConsole) return;
    await Promise.race([
      (this.draining ?? Promise.resolve()).then(() => this.drainConsole()),
      new Promise((r) => setTimeout(r, timeoutMs).unref()),
    ]).catch(() => undefined);
  }

  /** Fetches the console lines waiting in the guest and passes them on. */
  private async drainConsole(): Promise<void> {
    const emit = this.opts.onConsole;
    if (!emit) return;
    let got: ConsoleResponse;
    try {
      got = (await this.control("GET", "console", undefined, AbortSignal.timeout(2000))) as ConsoleResponse;
    } catch {
      return; // The instance is gone or busy dying; its last lines go with it.
    }
    const fn = this.functionName;
    const lines = Array.isArray(got?.lines) ? got.lines : [];
    let passed = 0;
    let bytes = 0;
    let refused = 0;
    for (const raw of lines) {
      const line = checkConsoleLine(raw, fn);
      if (!line) continue;
      if (passed >= MAX_CONSOLE_LINES_PER_FETCH || bytes >= MAX_CONSOLE_BYTES_PER_FETCH) {
        refused++;
        continue;
      }
      passed++;
      bytes += Math.min(line.msg.length, MAX_CONSOLE_MSG);
      emit(
        line.msg.length > MAX_CONSOLE_MSG
          ? { ...line, msg: `${line.msg.slice(0, MAX_CONSOLE_MSG)} [cut]` }
          : line,
      );
    }
    const dropped = (typeof got?.dropped === "number" && got.dropped > 0 ? got.dropped : 0) + refused;
    if (dropped > 0) {
      emit({
        fn,
        rid: null,
        level: "warn",
        msg: `${dropped} console lines dropped: more than the guest keeps, or the host takes, between two reads`,
      });
    }
  }

  async close(): Promise<void> {
    await this.client.destroy().catch(() => undefined);
  }
}

/** A body read whole, refused past `limit` bytes (the guest's answers are untrusted). */
async function readBounded(
  body: Dispatcher.ResponseData["body"],
  limit: number,
  tooLarge: () => Error,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
