/**
 * Turns the user's console output into log lines tagged with the function name and the request id of the
 * call that wrote them (found through AsyncLocalStorage), with a byte budget per call so console spam
 * cannot flood the host's logs. Where the lines go (stdout, or a queue the host fetches) is the caller's.
 */
import type { AsyncLocalStorage } from "node:async_hooks";
import type { GuestLogLine } from "../../contracts/guest-protocol.ts";

export interface CallContext {
  readonly fn: string;
  readonly rid: string;
  /** Bytes of console output this call may still write. */
  logBudget: number;
  truncated: boolean;
}

type Level = GuestLogLine["level"];

const METHODS: Array<[keyof Console, Level]> = [
  ["log", "info"],
  ["info", "info"],
  ["debug", "debug"],
  ["trace", "debug"],
  ["warn", "warn"],
  ["error", "error"],
];

export function installConsoleCapture(
  target: Console,
  storage: AsyncLocalStorage<CallContext>,
  format: (args: unknown[]) => string,
  emit: (line: GuestLogLine) => void,
  loadedFunction: () => string | null,
  /** process.stdout and process.stderr: what code writes to them directly becomes log lines too. */
  streams: ReadonlyArray<readonly [WritableLike, Level]> = [],
): void {
  const emitLine = (level: Level, text: string) => {
    const ctx = storage.getStore();
    let msg = text;
    if (ctx) {
      if (ctx.truncated) return;
      let bytes = Buffer.byteLength(msg);
      if (bytes > ctx.logBudget) {
        ctx.truncated = true;
        msg = `${msg.slice(0, Math.max(0, ctx.logBudget))} [console output truncated: per-call log limit reached]`;
        bytes = Buffer.byteLength(msg);
      }
      ctx.logBudget -= bytes;
    }
    const line: GuestLogLine = {
      type: "log",
      fn: ctx?.fn ?? loadedFunction(),
      rid: ctx?.rid ?? null,
      level,
      msg,
    };
    emit(line);
  };
  for (const [method, level] of METHODS) {
    (target as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      emitLine(level, format(args));
    };
  }
  // Loggers that bring their own Console on process.stdout (Powertools, pino) write past console.log:
  // each line they write is a log line of the call, as it is a CloudWatch line on Lambda.
  for (const [stream, level] of streams) {
    stream.write = ((chunk: unknown, encoding?: unknown, callback?: unknown) => {
      const text =
        typeof chunk === "string"
          ? chunk
          : Buffer.from(chunk as Uint8Array).toString(
              typeof encoding === "string" ? (encoding as BufferEncoding) : "utf8",
            );
      for (const part of text.replace(/\r?\n$/, "").split(/\r?\n/))
        if (part.length > 0) emitLine(level, part);
      const done = typeof encoding === "function" ? encoding : callback;
      if (typeof done === "function") queueMicrotask(() => (done as () => void)());
      return true;
    }) as WritableLike["write"];
  }
}

/** The part of a writable stream the capture replaces. */
export interface WritableLike {
  write: (chunk: never, encoding?: never, callback?: never) => boolean;
}
