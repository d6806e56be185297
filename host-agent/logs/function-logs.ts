/**
 * The last console lines of each function, kept in memory for `GET /v1/functions/<name>/logs` and
 * `faas logs`: what a developer wants to see after a call, without searching the agent's own log. Bounded
 * per function (lines and bytes) and in the number of functions (the least recently written go first);
 * the agent's JSON log keeps everything.
 */
import type { Clock } from "../clock.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface FunctionLogLine {
  /** ISO time the agent received the line. */
  readonly time: string;
  readonly level: LogLevel;
  readonly rid: string | null;
  readonly instance: string;
  readonly msg: string;
}

export interface FunctionLogLimits {
  readonly linesPerFunction: number;
  readonly bytesPerFunction: number;
  readonly functions: number;
  /** A longer message is cut (the agent's JSON log has it whole). */
  readonly maxMessageBytes: number;
}

export const DEFAULT_FUNCTION_LOG_LIMITS: FunctionLogLimits = {
  linesPerFunction: 500,
  bytesPerFunction: 64 * 1024,
  functions: 500,
  maxMessageBytes: 4 * 1024,
};

interface Ring {
  lines: FunctionLogLine[];
  bytes: number;
}

export class FunctionLogs {
  private readonly rings = new Map<string, Ring>();

  constructor(
    private readonly clock: Clock,
    private readonly limits: FunctionLogLimits = DEFAULT_FUNCTION_LOG_LIMITS,
  ) {}

  record(fn: string, line: Omit<FunctionLogLine, "time">): void {
    let ring = this.rings.get(fn);
    if (ring) this.rings.delete(fn);
    else ring = { lines: [], bytes: 0 };
    // Most recently written last, so the first key is the one to forget.
    this.rings.set(fn, ring);
    if (this.rings.size > this.limits.functions) this.rings.delete(this.rings.keys().next().value!);
    const msg =
      line.msg.length > this.limits.maxMessageBytes
        ? `${line.msg.slice(0, this.limits.maxMessageBytes)} [cut]`
        : line.msg;
    const kept: FunctionLogLine = { ...line, msg, time: new Date(this.clock.now()).toISOString() };
    ring.lines.push(kept);
    ring.bytes += msg.length;
    while (
      ring.lines.length > this.limits.linesPerFunction ||
      (ring.bytes > this.limits.bytesPerFunction && ring.lines.length > 1)
    ) {
      ring.bytes -= ring.lines.shift()!.msg.length;
    }
  }

  /** The newest `limit` lines of `fn`, oldest first. */
  read(fn: string, limit: number): FunctionLogLine[] {
    const lines = this.rings.get(fn)?.lines ?? [];
    return lines.slice(Math.max(0, lines.length - limit));
  }

  has(fn: string): boolean {
    return this.rings.has(fn);
  }

  forget(fn: string): void {
    this.rings.delete(fn);
  }
}
