import type { EventEmitter } from "node:events";

/**
 * Splits a guest's output stream into lines, keeping at most `maxLine` bytes of any one line: a guest
 * that writes without newlines cannot make the agent buffer without bound (readline would).
 */
export function onBoundedLines(
  /** A Readable, or anything that emits "data" (Buffer chunks) and then "end". */
  stream: EventEmitter,
  maxLine: number,
  onLine: (line: string, truncated: boolean) => void,
): void {
  let parts: Buffer[] = [];
  let kept = 0;
  let truncated = false;
  const flush = () => {
    onLine(Buffer.concat(parts).toString("utf8").replace(/\r$/, ""), truncated);
    parts = [];
    kept = 0;
    truncated = false;
  };
  const keep = (piece: Buffer) => {
    const room = maxLine - kept;
    if (piece.length > room) truncated = true;
    const slice = piece.length > room ? piece.subarray(0, Math.max(0, room)) : piece;
    if (slice.length > 0) {
      parts.push(Buffer.from(slice));
      kept += slice.length;
    }
  };
  stream.on("data", (chunk: Buffer) => {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      keep(chunk.subarray(start, nl));
      flush();
      start = nl + 1;
    }
    if (start < chunk.length) keep(chunk.subarray(start));
  });
  stream.on("end", () => {
    if (kept > 0 || truncated) flush();
  });
}
