/**
 * The host's side of the guest runtime protocol: one framed connection per client over the instance's
 * endpoint (Unix socket or TCP, contracts/guest-channel.ts), used for control calls and forwarded
 * function calls alike. Answers are matched to requests by call id; the user's console lines arrive on
 * it in batches beside the answers.
 */
import { connect, type Socket } from "node:net";
import {
  CHANNEL_PREAMBLE,
  type ChannelRequest,
  type ChannelResponse,
  decodeConsole,
  decodeResponse,
  encodeRequest,
  FrameReader,
  FrameType,
  MAX_RESPONSE_HEAD_BYTES,
  responseBodyBytes,
} from "../../contracts/guest-channel.ts";
import {
  CONSOLE_PENDING_HEADER,
  CONTROL_SECRET_HEADER,
  type ConsoleResponse,
  type ControlError,
  type HealthResponse,
  type InitRequest,
  type LoadRequest,
  type LoadResponse,
} from "../../contracts/guest-protocol.ts";
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

/**
 * What can give up on a request: an AbortSignal, or a CallCancel (the same shape, one listener, no
 * EventTarget: a forwarded call makes one, and an AbortController costs several microseconds on Node 20).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** A CancelSignal for one call, aborted by its holder (the lease's deadline timer). */
export class CallCancel implements CancelSignal {
  aborted = false;
  reason: unknown;
  private listener: (() => void) | undefined;

  addEventListener(_type: "abort", listener: () => void): void {
    this.listener = listener;
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    if (this.listener === listener) this.listener = undefined;
  }

  abort(reason: unknown = new Error("aborted")): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listener = this.listener;
    this.listener = undefined;
    listener?.();
  }
}

export interface ForwardedCall {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | null;
  readonly signal: CancelSignal;
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
/** Largest console batch the host reads: the runtime keeps about 256 KiB between two of them. */
const MAX_CONSOLE_FRAME = 1024 * 1024;

/** Given-up calls whose late answers are remembered; past this the oldest is forgotten. */
const MAX_ABANDONED = 1024;

/** A request waiting for its answer. */
interface Pending {
  readonly resolve: (res: ChannelResponse) => void;
  readonly reject: (err: Error) => void;
  /** Largest body accepted, and the error for one past it. */
  readonly limit: number;
  readonly tooLarge: (bytes?: number) => Error;
  readonly signal: CancelSignal | undefined;
  readonly onAbort: (() => void) | undefined;
}

export class GuestClient {
  private socket: Socket | null = null;
  private reader: FrameReader | null = null;
  private readonly pending = new Map<number, Pending>();
  /**
   * Frames for the open connection, written together once this turn of the event loop is done: calls
   * that arrive together (several callers' requests read in one poll) cost the guest one read and one
   * wake-up, and the host one write, instead of one each.
   */
  private outbox: Buffer[] = [];
  /** Calls given up whose answers may still come, with the body bound each is read within. */
  private readonly abandoned = new Map<number, number>();
  private nextId = 1;
  private closed = false;
  /** The function this client loaded: console lines are attributed to it, whatever they say. */
  private functionName: string | null = null;
  private draining: Promise<void> | undefined;
  private drainAgain = false;
  private readonly secretHeader: Record<string, string>;

  constructor(
    private readonly endpoint: GuestEndpoint,
    private readonly opts: GuestClientOptions = {},
  ) {
    this.secretHeader = endpoint.controlSecret ? { [CONTROL_SECRET_HEADER]: endpoint.controlSecret } : {};
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
    const res = await this.request(
      {
        method,
        path: `/_faas/${route}`,
        headers:
          body === undefined
            ? this.secretHeader
            : { ...this.secretHeader, "content-type": "application/json" },
        body: body === undefined ? null : Buffer.from(JSON.stringify(body)),
      },
      signal,
      MAX_CONTROL_BODY,
      () =>
        new GuestError(`the guest's answer to ${route} is larger than ${MAX_CONTROL_BODY} bytes`, "protocol"),
    );
    const text = res.body.toString("utf8");
    // The console route's own answer never starts another fetch: a guest cannot make the host loop.
    if (route !== "console") this.noteConsole(res.headers);
    if (res.status === 204) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new GuestError(
        `guest answered ${route} with ${res.status} and a body that is not JSON`,
        "protocol",
        res.status,
      );
    }
    if (res.status >= 400) {
      const err = (parsed as ControlError).error;
      throw new GuestError(
        err?.message ?? `guest answered ${route} with ${res.status}`,
        err?.kind ?? "protocol",
        res.status,
      );
    }
    return parsed;
  }

  /** Forwards one call and reads the whole answer (bounded: a runaway response cannot exhaust the host). */
  async forward(call: ForwardedCall): Promise<GuestAnswer> {
    const res = await this.request(
      call,
      call.signal,
      call.maxResponseBytes,
      (bytes) =>
        new ResponseTooLargeError(
          bytes === undefined
            ? `the response is larger than the limit of ${call.maxResponseBytes} bytes`
            : `the response is ${bytes} bytes; the limit is ${call.maxResponseBytes}`,
        ),
    );
    // Each answer has its own headers object: the host's header is taken out of it in place.
    const headers = res.headers;
    if (headers[CONSOLE_PENDING_HEADER] !== undefined) {
      this.noteConsole(headers);
      delete headers[CONSOLE_PENDING_HEADER];
    }
    return res;
  }

  /** Sends one request frame; resolves with its answer, bounded to `limit` bytes of body. */
  private request(
    req: ChannelRequest,
    signal: CancelSignal | undefined,
    limit: number,
    tooLarge: (bytes?: number) => Error,
  ): Promise<ChannelResponse> {
    if (this.closed) return Promise.reject(new Error("the guest client is closed"));
    if (signal?.aborted)
      return Promise.reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
    if (!this.socket) this.open();
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const frame = encodeRequest(id, req);
    return new Promise<ChannelResponse>((resolve, reject) => {
      // An aborted call's answer may still come: it is read (within the call's bound) and dropped, and
      // the connection goes on carrying the instance's other calls (a function with concurrency > 1).
      const onAbort = signal
        ? () => {
            const p = this.settle(id);
            if (!p) return;
            this.abandon(id, p.limit);
            p.reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"));
          }
        : undefined;
      if (signal && onAbort) signal.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, { resolve, reject, limit, tooLarge, signal, onAbort });
      this.send(frame);
    });
  }

  private send(frame: Buffer): void {
    this.outbox.push(frame);
    if (this.outbox.length === 1) setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    const frames = this.outbox;
    this.outbox = [];
    if (!this.socket || frames.length === 0) return;
    this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
  };

  private open(): Socket {
    const e = this.endpoint;
    const socket =
      e.kind === "unix"
        ? connect({ path: e.socketPath })
        : connect({ host: e.host, port: e.port, noDelay: true });
    const reader = new FrameReader(
      (type, id, payload) => this.onFrame(type, id, payload),
      (type, id) =>
        type === FrameType.response
          ? (this.pending.get(id)?.limit ?? this.abandoned.get(id) ?? MAX_CONTROL_BODY) +
            MAX_RESPONSE_HEAD_BYTES
          : MAX_CONSOLE_FRAME,
      (type, id) => {
        const p = type === FrameType.response ? this.settle(id) : undefined;
        p?.reject(p.tooLarge());
        this.drop(socket, new GuestError(`the guest sent a frame past its bound (type ${type})`, "protocol"));
      },
    );
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", (err) => this.drop(socket, err));
    socket.on("close", () => this.drop(socket, new Error("the guest closed the connection")));
    socket.write(CHANNEL_PREAMBLE);
    this.socket = socket;
    this.reader = reader;
    return socket;
  }

  /** Takes a pending request out of the table (and off its signal). */
  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (p.onAbort) p.signal?.removeEventListener("abort", p.onAbort);
    return p;
  }

  /** Remembers a given-up call's bound until its answer comes (bounded: a guest may never answer). */
  private abandon(id: number, limit: number): void {
    if (this.abandoned.size >= MAX_ABANDONED) this.abandoned.delete(this.abandoned.keys().next().value!);
    this.abandoned.set(id, limit);
  }

  /** Ends a connection: every request still waiting on it fails with `err`. */
  private drop(socket: Socket, err: Error): void {
    if (this.socket !== socket) return;
    this.socket = null;
    // Frames not written yet were for this connection's calls, which fail below: never resent on another.
    this.outbox = [];
    this.reader?.stop();
    this.reader = null;
    socket.destroy();
    this.abandoned.clear();
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(err);
  }

  private onFrame(type: number, id: number, payload: Buffer): void {
    if (type === FrameType.console) {
      let batch: ReturnType<typeof decodeConsole>;
      try {
        batch = decodeConsole(payload);
      } catch {
        return; // A batch that does not parse is the guest's loss, not the host's.
      }
      this.passLines(batch.lines, batch.dropped);
      return;
    }
    const p = type === FrameType.response ? this.settle(id) : undefined;
    if (!p) {
      this.abandoned.delete(id); // An answer nobody waits for (its call gave up): dropped.
      return;
    }
    const bytes = responseBodyBytes(payload);
    if (bytes !== undefined && bytes > p.limit) {
      p.reject(p.tooLarge(bytes));
      return;
    }
    let res: ChannelResponse;
    try {
      res = decodeResponse(payload);
    } catch (err) {
      p.reject(new GuestError(`the guest's answer does not parse: ${(err as Error).message}`, "protocol"));
      return;
    }
    // The body shares the socket's chunk (node never reuses a read's buffer): no copy.
    p.resolve(res);
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
    if (!this.opts.onConsole) return;
    let got: ConsoleResponse;
    try {
      got = (await this.control("GET", "console", undefined, AbortSignal.timeout(2000))) as ConsoleResponse;
    } catch {
      return; // The instance is gone or busy dying; its last lines go with it.
    }
    this.passLines(Array.isArray(got?.lines) ? got.lines : [], got?.dropped);
  }

  /** One batch of the guest's lines, checked and bounded, to onConsole. */
  private passLines(lines: readonly unknown[], guestDropped: unknown): void {
    const emit = this.opts.onConsole;
    if (!emit) return;
    const fn = this.functionName;
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
    const dropped = (typeof guestDropped === "number" && guestDropped > 0 ? guestDropped : 0) + refused;
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
    this.closed = true;
    if (this.socket) this.drop(this.socket, new Error("the guest client is closed"));
  }
}
