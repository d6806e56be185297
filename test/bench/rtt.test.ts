import assert from "node:assert/strict";
import { formatRttTable, parseRttArgs, percentile, summarize } from "../../bench/rtt-stats.ts";

describe("bench:rtt logic", () => {
  describe("parseRttArgs", () => {
    it("reads endpoints and options, with defaults", () => {
      assert.deepEqual(parseRttArgs(["--endpoint", "https://faas.example.com/"]), {
        endpoint: "https://faas.example.com",
        functionName: "hello-world",
        warmCalls: 50,
        coldCalls: 3,
        idleSeconds: 900,
      });
      assert.deepEqual(
        parseRttArgs([
          "--endpoint",
          "http://lb.example",
          "--lambda",
          "https://abc.lambda-url.us-east-1.on.aws/",
          "--function",
          "greeter",
          "--warm",
          "10",
          "--cold",
          "0",
          "--idle-seconds",
          "400",
        ]),
        {
          endpoint: "http://lb.example",
          lambda: "https://abc.lambda-url.us-east-1.on.aws",
          functionName: "greeter",
          warmCalls: 10,
          coldCalls: 0,
          idleSeconds: 400,
        },
      );
    });

    it("rejects a missing endpoint, bad URLs, bad numbers and unknown flags", () => {
      assert.throws(() => parseRttArgs([]), /--endpoint is required/);
      assert.throws(() => parseRttArgs(["--endpoint", "ftp://x"]), /--endpoint must be an http\(s\) URL/);
      assert.throws(
        () => parseRttArgs(["--endpoint", "http://x", "--warm", "0"]),
        /--warm must be an integer >= 1/,
      );
      assert.throws(
        () => parseRttArgs(["--endpoint", "http://x", "--idle-seconds", "1.5"]),
        /--idle-seconds/,
      );
      assert.throws(
        () => parseRttArgs(["--endpoint", "http://x", "--verbose"]),
        /Unknown option '--verbose'/,
      );
    });
  });

  describe("percentile and summarize", () => {
    it("uses the nearest rank", () => {
      const samples = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6];
      assert.equal(percentile(samples, 50), 5);
      assert.equal(percentile(samples, 99), 10);
      assert.equal(percentile(samples, 0), 1);
      assert.equal(percentile([42], 99), 42);
      assert.ok(Number.isNaN(percentile([], 50)));
      assert.throws(() => percentile([1], 101), RangeError);
    });

    it("summarizes 100 samples", () => {
      const samples = Array.from({ length: 100 }, (_, i) => i + 1);
      assert.deepEqual(summarize(samples), { count: 100, p50: 50, p99: 99 });
    });
  });

  it("prints both targets side by side", () => {
    const table = formatRttTable([
      { target: "snapfaas", cold: { count: 3, p50: 12.34, p99: 20 }, warm: { count: 50, p50: 2.5, p99: 4 } },
      {
        target: "aws-lambda",
        cold: { count: 0, p50: Number.NaN, p99: Number.NaN },
        warm: { count: 50, p50: 30, p99: 41.25 },
      },
    ]);
    assert.equal(
      table,
      [
        "target      cold n  cold p50  cold p99  warm n  warm p50  warm p99",
        "snapfaas    3       12.3 ms   20.0 ms   50      2.5 ms    4.0 ms",
        "aws-lambda  0       -         -         50      30.0 ms   41.3 ms",
      ].join("\n"),
    );
  });
});
