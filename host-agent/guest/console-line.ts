/**
 * A console line from a guest as the host passes it on. The guest runtime shares its process with user
 * code, so a line is checked field by field and attributed to the function the host loaded into that
 * instance, never to the one the line names.
 */
import type { GuestLogLine } from "../../contracts/guest-protocol.ts";

export interface ConsoleLine {
  readonly fn: string | null;
  readonly rid: string | null;
  readonly level: GuestLogLine["level"];
  readonly msg: string;
}

const LEVELS = new Set<unknown>(["debug", "info", "warn", "error"]);

/** The line, checked; undefined when it has no message (then it is not a console line at all). */
export function checkConsoleLine(raw: unknown, loadedFunction: string | null): ConsoleLine | undefined {
  if (typeof raw !== "object" || raw === null) return undefined;
  const line = raw as Record<string, unknown>;
  if (typeof line.msg !== "string") return undefined;
  return {
    fn: loadedFunction ?? (typeof line.fn === "string" ? line.fn : null),
    rid: typeof line.rid === "string" ? line.rid : null,
    level: LEVELS.has(line.level) ? (line.level as GuestLogLine["level"]) : "info",
    msg: line.msg,
  };
}
