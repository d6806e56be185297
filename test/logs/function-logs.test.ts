import assert from "node:assert/strict";
import { FunctionLogs } from "../../host-agent/logs/function-logs.ts";
import { FakeClock } from "../helpers/fake-clock.ts";

const line = (msg: string, rid = "r") => ({ level: "info" as const, rid, instance: "i1", msg });

describe("function logs (the last console lines per function)", () => {
  // protection: FunctionLogs is bounded per function (lines, bytes), per message, and in functions kept
  it("keeps the newest lines of each function within its line and byte bounds, oldest first", () => {
    const clock = new FakeClock();
    const logs = new FunctionLogs(clock, {
      linesPerFunction: 3,
      bytesPerFunction: 1000,
      functions: 10,
      maxMessageBytes: 100,
    });
    for (let i = 0; i < 5; i++) {
      logs.record("a", line(`a${i}`, `r${i}`));
      clock.advance(1000);
    }
    assert.deepEqual(
      logs.read("a", 10).map((l) => l.msg),
      ["a2", "a3", "a4"],
    );
    assert.deepEqual(
      logs.read("a", 2).map((l) => l.rid),
      ["r3", "r4"],
    );
    assert.equal(logs.read("a", 1)[0]!.time, new Date(clock.now() - 1000).toISOString());
    logs.record("b", line("x".repeat(500)));
    assert.equal(logs.read("b", 1)[0]!.msg, `${"x".repeat(100)} [cut]`);
    const bytes = new FunctionLogs(clock, {
      linesPerFunction: 100,
      bytesPerFunction: 250,
      functions: 10,
      maxMessageBytes: 100,
    });
    for (let i = 0; i < 10; i++) bytes.record("c", line(`${i}`.padEnd(100, ".")));
    assert.deepEqual(
      bytes.read("c", 100).map((l) => l.msg[0]),
      ["8", "9"],
      "no more than 250 bytes of messages",
    );
  });

  it("keeps exactly the newest lines through many drops (the ring compacts), and stamps each with its own time", () => {
    const clock = new FakeClock();
    const logs = new FunctionLogs(clock, {
      linesPerFunction: 50,
      bytesPerFunction: 1_000_000,
      functions: 10,
      maxMessageBytes: 100,
    });
    for (let i = 0; i < 1234; i++) {
      logs.record("a", line(`a${i}`));
      if (i % 7 === 0) logs.record("b", line(`b${i}`));
      clock.advance(1);
    }
    const kept = logs.read("a", 1000);
    assert.deepEqual(
      kept.map((l) => l.msg),
      Array.from({ length: 50 }, (_, k) => `a${1184 + k}`),
    );
    assert.equal(kept.at(-1)!.time, new Date(clock.now() - 1).toISOString());
    assert.equal(logs.read("b", 1)[0]!.msg, "b1232");
  });

  it("forgets the least recently written function past its bound, and a deleted one", () => {
    const logs = new FunctionLogs(new FakeClock(), {
      linesPerFunction: 5,
      bytesPerFunction: 1000,
      functions: 2,
      maxMessageBytes: 100,
    });
    logs.record("a", line("1"));
    logs.record("b", line("1"));
    logs.record("a", line("2"));
    logs.record("c", line("1"));
    assert.deepEqual([logs.has("a"), logs.has("b"), logs.has("c")], [true, false, true]);
    logs.forget("a");
    assert.equal(logs.has("a"), false);
    assert.deepEqual(logs.read("a", 5), []);
  });
});
