import assert from "node:assert/strict";
import type { GuestLogLine } from "../../contracts/guest-protocol.ts";
import { ConsoleQueue } from "../../guest-images/runtime/console-queue.ts";

const line = (msg: string): GuestLogLine => ({ type: "log", fn: "f", rid: "r", level: "info", msg });

describe("the runtime's console queue (--console channel)", () => {
  // protection: ConsoleQueue is bounded in bytes: a function that logs between the host's reads cannot
  // grow the guest's memory; what it drops is counted and reported
  it("keeps lines until they are taken, dropping the oldest past its byte bound, and counts them", () => {
    const q = new ConsoleQueue(1000);
    q.push(line("first"));
    q.push(line("second"));
    assert.equal(q.pending, 2);
    assert.deepEqual(q.take(), { lines: [line("first"), line("second")], dropped: 0 });
    assert.deepEqual(q.take(), { lines: [], dropped: 0 }, "taken lines are forgotten");
    for (let i = 0; i < 20; i++) q.push(line(`line ${i} ${"x".repeat(100)}`));
    const { lines, dropped } = q.take();
    assert.ok(lines.length > 0 && lines.length < 20);
    assert.equal(lines.length + dropped, 20);
    assert.match(lines.at(-1)!.msg, /^line 19 /, "the newest lines are the ones kept");
  });
});
