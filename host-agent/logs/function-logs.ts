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

/** A kept line: the time as the clock read it; turned into ISO text only when the lines are read. */
interface KeptLine {
  readonly at: number;
  readonly level: LogLevel;
  readonly rid: string | null;
  readonly instance: string;
  readonly msg: string;
}

/** One function's lines: `lines[head..]` are kept; dropped ones are compacted away now and then. */
interface Ring {
  lines: KeptLine[];
  head: number;
  bytes: number;
}

export class FunctionLogs {
  private readonly rings = new Map<string, Ring>();
  /** The function written last: a run of lines of one function does not reorder the map per line. */
  private newest: string | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly limits: FunctionLogLimits = DEFAULT_FUNCTION_LOG_LIMITS,
  ) {}

  // On the call path of every function that logs: no ISO formatting, no array shifting, no reinsert.
  record(fn: string, line: Omit<FunctionLogLine, "time">): void {
    let ring = this.rings.get(fn);
    if (fn !== this.newest || !ring) {
      if (ring) this.rings.delete(fn);
      else ring = { lines: [], head: 0, bytes: 0 };
      // Most recently written last, so the first key is the one to forget.
      this.rings.set(fn, ring);
      this.newest = fn;
      if (this.rings.size > this.limits.functions) this.rings.delete(this.rings.keys().next().value!);
    }
    const msg =
      line.msg.length > this.limits.maxMessageBytes
        ? `${line.msg.slice(0, this.limits.maxMessageBytes)} [cut]`
        : line.msg;
    ring.lines.push({ at: this.clock.now(), level: line.level, rid: line.rid, instance: line.instance, msg });
    ring.bytes += msg.length;
    const limits = this.limits;
    while (
      ring.lines.length - ring.head > limits.linesPerFunction ||
      (ring.bytes > limits.bytesPerFunction && ring.lines.length - ring.head > 1)
    ) {
      ring.bytes -= ring.lines[ring.head]!.msg.length;
      ring.head++;
    }
    if (ring.head >= 64 && ring.head * 2 >= ring.lines.length) {
      ring.lines = ring.lines.slice(ring.head);
      ring.head = 0;
    }
  }

  /** The newest `limit` lines of `fn`, oldest first. */
  read(fn: string, limit: number): FunctionLogLine[] {
    const ring = this.rings.get(fn);
    if (!ring) return [];
    const from = Math.max(ring.head, ring.lines.length - limit);
    return ring.lines.slice(from).map((l) => ({
      time: new Date(l.at).toISOString(),
      level: l.level,
      rid: l.rid,
      instance: l.instance,
      msg: l.msg,
    }));
  }

  has(fn: string): boolean {
    return this.rings.has(fn);
  }

  forget(fn: string): void {
    this.rings.delete(fn);
    if (this.newest === fn) this.newest = undefined;
  }
}
