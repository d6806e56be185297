/**
 * A QMP client (QEMU's JSON machine protocol over a Unix socket): connect, negotiate capabilities,
 * run commands one at a time, collect events. Small on purpose: the adapter needs a dozen commands,
 * and no npm QMP package is both maintained and typed; a request/answer pair is one line of JSON each.
 */
import { connect, type Socket } from "node:net";

/** QEMU refused a command: `class` is QMP's error class (e.g. GenericError), `desc` its message. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command} failed (${errorClass}): ${desc}`);
    this.name = "QmpError";
  }
}

/** The socket closed (QEMU exited) or never answered. */
export class QmpConnectionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QmpConnectionError";
  }
}

export interface QmpEvent {
  readonly event: string;
  readonly data?: Record<string, unknown>;
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/** Longest line QEMU sends us (query answers are a few KiB); a longer one means a broken peer. */
const MAX_LINE = 4 * 1024 * 1024;

export class QmpClient {
  readonly events: QmpEvent[] = [];
  /** Resolves when the socket is gone (QEMU exited or close() was called). */
  readonly closed: Promise<void>;
  private readonly pending: Pending[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private buffer = "";
  private greeted = false;
  private onGreeting?: (err?: Error) => void;
  private isClosed = false;
  private readonly eventWaiters = new Set<{
    match: (e: QmpEvent) => boolean;
    resolve: (e: QmpEvent) => void;
  }>();

  private constructor(private readonly socket: Socket) {
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.isClosed = true;
        const err = new QmpConnectionError("QMP socket closed (QEMU exited?)");
        for (const p of this.pending.splice(0)) p.reject(err);
        this.onGreeting?.(err);
        resolve();
      });
    });
    socket.on("error", () => undefined); // "close" follows and carries the consequence
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.receive(chunk));
  }

  /**
   * Connects, waits for QEMU's greeting and leaves capability negotiation mode. QEMU creates the
   * socket file a moment before it listens, so a missing or refusing socket is retried until `timeoutMs`.
   */
  static async connect(socketPath: string, timeoutMs = 5_000): Promise<QmpClient> {
    const deadline = performance.now() + timeoutMs;
    let socket: Socket | undefined;
    while (!socket) {
      try {
        socket = await connectOnce(socketPath);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const retry = code === "ENOENT" || code === "ECONNREFUSED";
        if (!retry || performance.now() > deadline) {
          throw new QmpConnectionError(`cannot connect to QMP at ${socketPath}: ${(err as Error).message}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
    const client = new QmpClient(socket);
    await client.waitGreeting(Math.max(1, deadline - performance.now()));
    await client.execute("qmp_capabilities");
    return client;
  }

  private waitGreeting(timeoutMs: number): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        reject(new QmpConnectionError(`no QMP greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      this.onGreeting = (err) => {
        clearTimeout(timer);
        this.onGreeting = undefined;
        if (err) reject(err);
        else resolve();
      };
    });
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE) {
      this.socket.destroy();
      return;
    }
    let newline = this.buffer.indexOf("\n");
    while (newline >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length > 0) this.dispatch(line);
      newline = this.buffer.indexOf("\n");
    }
  }

  private dispatch(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.socket.destroy();
      return;
    }
    if ("QMP" in message) {
      this.greeted = true;
      this.onGreeting?.();
    } else if ("event" in message) {
      const event = { event: String(message["event"]), data: message["data"] as Record<string, unknown> };
      this.events.push(event);
      if (this.events.length > 1_000) this.events.shift();
      for (const waiter of this.eventWaiters) {
        if (waiter.match(event)) {
          this.eventWaiters.delete(waiter);
          waiter.resolve(event);
        }
      }
    } else if ("return" in message || "error" in message) {
      const pending = this.pending.shift();
      if (!pending) return;
      if ("error" in message) {
        const error = message["error"] as { class?: string; desc?: string };
        pending.reject(new QmpError(pending.command, error.class ?? "Unknown", error.desc ?? ""));
      } else {
        pending.resolve(message["return"]);
      }
    }
  }

  /**
   * Runs one command and resolves with its `return` value. Commands are sent one at a time (QMP
   * answers in order, but a caller's sequence such as stop -> blockdev-reopen -> cont must not interleave).
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = (): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        if (this.isClosed) {
          reject(new QmpConnectionError(`QMP socket closed before ${command}`));
          return;
        }
        this.pending.push({ command, resolve: resolve as (v: unknown) => void, reject });
        this.socket.write(
          `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
        );
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Resolves with the first event (already received or future) that matches. */
  waitForEvent(match: (e: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (e: QmpEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.eventWaiters.delete(waiter);
        reject(new QmpConnectionError(`no matching QMP event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.eventWaiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }
}

function connectOnce(socketPath: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect(socketPath);
    s.once("connect", () => {
      s.removeAllListeners("error");
      resolve(s);
    });
    s.once("error", reject);
  });
}
