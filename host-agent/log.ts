import { pino } from "pino";

export type Logger = pino.Logger;

/** Structured JSON logs on stdout (one object a line), the level from config. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { svc: "faas-agent" }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}
