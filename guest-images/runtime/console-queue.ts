/**
 * The console lines a runtime keeps for the host to fetch (`--console channel`): in a VM, stdout is a
 * serial console the host does not read. Bounded in bytes, so a function that logs between the host's
 * reads cannot grow the guest's memory: the oldest lines go first, and are counted.
 */
import type { ConsoleResponse, GuestLogLine } from "../../contracts/guest-protocol.ts";

export class ConsoleQueue {
  private lines: Array<{ line: GuestLogLine; bytes: number }> = [];
  private bytes = 0;
  private dropped = 0;

  constructor(private readonly maxBytes: number) {}

  get pending(): number {
    return this.lines.length;
  }

  push(line: GuestLogLine): void {
    // What the line costs to keep: its message, and about what its other fields and framing take (the
    // message dominates; a second serialisation of every line just to weigh it is not worth its CPU).
    const bytes = Buffer.byteLength(line.msg) + (line.fn?.length ?? 0) + (line.rid?.length ?? 0) + 64;
    this.lines.push({ line, bytes });
    this.bytes += bytes;
    while (this.bytes > this.maxBytes && this.lines.length > 0) {
      this.bytes -= this.lines.shift()!.bytes;
      this.dropped++;
    }
  }

  /** Everything kept so far, and forgets it. */
  take(): ConsoleResponse {
    const out: ConsoleResponse = { lines: this.lines.map((l) => l.line), dropped: this.dropped };
    this.lines = [];
    this.bytes = 0;
    this.dropped = 0;
    return out;
  }
}
