/** A real pino logger whose JSON lines land in an array, so tests can assert what was logged. */
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../host-agent/log.ts";

export interface CapturedLog {
  readonly log: Logger;
  readonly lines: Array<Record<string, unknown>>;
  /** Lines whose msg contains `text`. */
  find(text: string): Array<Record<string, unknown>>;
}

export function captureLog(level = "debug"): CapturedLog {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString("utf8").split("\n"))
        if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return {
    log: createLogger(level, sink),
    lines,
    find: (text) => lines.filter((l) => String(l["msg"]).includes(text)),
  };
}

/** pino's numeric levels. */
export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;
