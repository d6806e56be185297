/** The agent reads guest output through a line splitter that keeps a bounded prefix of every line. */
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { onBoundedLines } from "../../host-agent/sandbox/bounded-lines.ts";

describe("hardening: guest output lines are bounded", () => {
  // protection: bounded-lines.ts keeps at most maxLine bytes of a line (readline would buffer it all)
  it("keeps at most maxLine bytes of a 16 MiB line without a newline, and marks it truncated", async () => {
    const stream = new PassThrough();
    const lines: Array<[number, boolean]> = [];
    onBoundedLines(stream, 1024, (line, truncated) => lines.push([line.length, truncated]));
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 256; i++) stream.write(chunk);
    stream.write("\nshort\nlast-without-newline");
    stream.end();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(lines, [
      [1024, true],
      [5, false],
      [20, false],
    ]);
  });

  it("splits lines across chunk boundaries", async () => {
    const stream = new PassThrough();
    const lines: string[] = [];
    onBoundedLines(stream, 100, (line) => lines.push(line));
    stream.write("ab");
    stream.write("c\r\nde");
    stream.end("f\n");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(lines, ["abc", "def"]);
  });
});
