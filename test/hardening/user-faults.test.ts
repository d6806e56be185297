/**
 * Faults in user code, through the real agent: each fault gets a clear error, its instance is replaced,
 * a slow call of another function in flight at the same time still succeeds, and the next call works.
 */
import assert from "node:assert/strict";
import { HELLO_CALL, startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { HELLO_MODULE, tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";

const MAX_BODY = 256 * 1024;
const ENV = {
  FAAS_CALL_TIMEOUT_MS: "2500",
  FAAS_MAX_BODY_BYTES: String(MAX_BODY),
  FAAS_INSTANCE_MEMORY_MIB: "96",
  FAAS_INSTANCE_PIDS: "16",
  FAAS_INSTANCE_TMP_MIB: "4",
  FAAS_POOL_GENERIC: "2",
};

/** Every call-time fault as a method; ok() proves a fresh instance serves afterwards. */
const FAULTY = `
const fs = require("node:fs");
const cp = require("node:child_process");
const INSTANCE = require("node:crypto").randomUUID();
exports.Faulty = class Faulty {
  ok() { return "ok:" + INSTANCE; }
  instance() { return INSTANCE; }
  throws() { throw new Error("thrown in a call"); }
  rejectLater() { Promise.reject(new Error("nobody handles this")); return new Promise((r) => setTimeout(() => r("late"), 1000)); }
  exits() { process.exit(3); }
  spin() { for (;;) {} }
  hog() { const keep = []; for (;;) keep.push(Buffer.alloc(4 * 1024 * 1024, 1)); }
  async forkBomb() {
    let spawned = 0;
    for (let i = 0; i < 64; i++) {
      const child = cp.spawn("/node", ["-e", "setTimeout(() => {}, 20000)"], { stdio: "ignore" });
      const ok = await new Promise((resolve) => { child.once("spawn", () => resolve(true)); child.once("error", () => resolve(false)); });
      if (!ok) break;
      spawned++;
    }
    return spawned;
  }
  async threadBomb() {
    const { Worker } = require("node:worker_threads");
    let started = 0;
    for (let i = 0; i < 64; i++) {
      const w = new Worker("setInterval(() => {}, 1000)", { eval: true });
      const ok = await new Promise((resolve) => { w.once("online", () => resolve(true)); w.once("error", () => resolve(false)); });
      if (!ok) break;
      started++;
    }
    return started;
  }
  fillTmp() {
    const chunk = Buffer.alloc(1024 * 1024, 1);
    let written = 0;
    try { for (let i = 0; i < 64; i++) { fs.appendFileSync("/tmp/fill", chunk); written++; } }
    catch (e) { return { written, error: e.code }; }
    return { written, error: null };
  }
  huge() { return "x".repeat(${MAX_BODY} * 4); }
  spam() { const line = "y".repeat(1000); for (let i = 0; i < 20000; i++) console.log(line); return "spammed"; }
  rawSpam() {
    const chunk = Buffer.alloc(64 * 1024, 0x7a);
    let bytes = 0;
    while (bytes < 64 * 1024 * 1024) bytes += fs.writeSync(1, chunk);
    return bytes;
  }
  forgedLog() { process.stdout.write('\\n{"type":"log","fn":"other","rid":"x","level":"nope","msg":"forged"}\\n'); return "forged"; }
};
`;

const STEADY = `exports.Steady = class Steady {
  async slow(ms) { await new Promise((r) => setTimeout(r, ms)); return "steady"; }
};`;

const rpc = (method: string, params: unknown[] = [], id = 1) => ({ jsonrpc: "2.0", method, params, id });

describe("hardening: faults in user code", function () {
  this.timeout(60_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent(ENV);
    for (const [name, code] of [
      ["faulty", FAULTY],
      ["steady", STEADY],
      ["hello", HELLO_MODULE],
    ] as const) {
      const res = await agent.admin(
        "PUT",
        `/v1/functions/${name}`,
        tarGz([{ name: "index.js", data: code }]),
      );
      assert.equal(res.status, 201, JSON.stringify(res.json));
    }
  });

  after(async () => {
    await agent?.close();
  });

  /**
   * Runs `fault` while a slow call of another function is in flight, checks both, then checks that the
   * faulty function serves again from a new instance when `replaced`.
   */
  async function withBystander(
    method: string,
    check: (res: Awaited<ReturnType<TestAgent["call"]>>) => void,
    replaced = true,
  ) {
    const before = (await agent.call("faulty", rpc("Faulty.instance"))).json().result as string;
    const bystander = agent.call("steady", rpc("Steady.slow", [800]));
    await new Promise((r) => setTimeout(r, 50));
    const res = await agent.call("faulty", rpc(`Faulty.${method}`));
    check(res);
    const slow = await bystander;
    assert.equal(slow.status, 200, `the bystander's call in flight succeeded: ${slow.text}`);
    assert.equal(slow.json().result, "steady");
    const next = await agent.call("faulty", rpc("Faulty.ok"));
    assert.equal(next.status, 200, `the pool recovered: ${next.text}`);
    if (replaced) assert.notEqual(next.json().result, `ok:${before}`, "a new instance serves the next call");
    assert.equal((await agent.call("hello", HELLO_CALL)).status, 200);
  }

  const errorOf = (res: { json: () => { error?: { message?: string } } }) => res.json().error?.message ?? "";

  // protection: guest runtime catches a throwing method and answers JSON-RPC -32000
  it("a method that throws: JSON-RPC error -32000 with its message", async () => {
    await withBystander(
      "throws",
      (res) => {
        assert.equal(res.status, 500);
        assert.equal(res.json().error.code, -32000);
        assert.match(res.json().error.message, /thrown in a call/);
      },
      false,
    );
  });

  // protection: runtime's unhandledRejection handler exits the instance; data plane maps the crash to 502
  it("an unhandled rejection: 502 naming it, instance replaced", async () => {
    await withBystander("rejectLater", (res) => {
      assert.equal(res.status, 502, res.text);
      assert.match(errorOf(res), /unhandled promise rejection: Error: nobody handles this/);
    });
  });

  // protection: data plane turns a dead instance into 502 with the exit reason
  it("process.exit in a call: 502 with the exit code, instance replaced", async () => {
    await withBystander("exits", (res) => {
      assert.equal(res.status, 502, res.text);
      assert.match(errorOf(res), /exited with code 3/);
    });
  });

  // protection: data plane deadline timer aborts the call (504) and the pool destroys the instance
  it("an infinite loop: 504 at the deadline, instance replaced", async () => {
    await withBystander("spin", (res) => {
      assert.equal(res.status, 504, res.text);
      assert.match(errorOf(res), /deadline of 2500 ms/);
    });
  });

  // protection: cgroup memory limit (memory.limit_in_bytes) kills the instance, not the host
  it("a memory bomb: 502 killed by the memory limit, instance replaced", async () => {
    await withBystander("hog", (res) => {
      assert.equal(res.status, 502, res.text);
      assert.match(errorOf(res), /killed by the memory limit \(96 MiB\)/);
    });
  });

  // protection: cgroup pids.max stops a fork bomb inside the instance
  it("a fork bomb: stopped by the pids limit", async () => {
    await withBystander(
      "forkBomb",
      (res) => {
        assert.equal(res.status, 200, res.text);
        const spawned = res.json().result as number;
        assert.ok(spawned < 16, `the pids limit (16) stopped it after ${spawned} children`);
      },
      false,
    );
  });

  // protection: cgroup pids.max counts threads too: a thread bomb stops inside the instance (or kills it)
  it("a thread bomb: stopped by the pids limit, the pool recovers", async () => {
    await withBystander(
      "threadBomb",
      (res) => {
        if (res.status === 200) {
          const started = res.json().result as number;
          assert.ok(started < 16, `the pids limit (16) stopped it after ${started} workers`);
        } else if (res.status === 500) {
          // The thread could not be created: the method gets the kernel's EAGAIN as its error.
          assert.match(res.json().error.message, /EAGAIN|Resource temporarily unavailable/);
        } else {
          assert.equal(res.status, 502, res.text);
        }
      },
      false,
    );
  });

  // protection: bwrap --size caps the private /tmp tmpfs
  it("filling /tmp: ENOSPC at the size cap", async () => {
    await withBystander(
      "fillTmp",
      (res) => {
        const r = res.json().result as { written: number; error: string | null };
        assert.equal(r.error, "ENOSPC", JSON.stringify(r));
        assert.ok(r.written <= 4, `at most 4 MiB written (${r.written})`);
      },
      false,
    );
  });

  // protection: GuestClient.forward maxResponseBytes -> 502 response_too_large
  it("a response larger than FAAS_MAX_BODY_BYTES: 502, instance replaced", async () => {
    await withBystander("huge", (res) => {
      assert.equal(res.status, 502, res.text);
      assert.equal(res.json().error.code, "response_too_large");
    });
  });

  // protection: console-capture.ts per-call log budget (64 KiB)
  it("console spam: bounded log volume per call", async () => {
    await withBystander(
      "spam",
      (res) => {
        assert.equal(res.status, 200, res.text);
      },
      false,
    );
    // Log lines come over the instance's stdout, the answer over its socket: either can arrive first.
    await waitFor("the per-call log limit line", () =>
      agent.logs.some((l) => /per-call log limit reached/.test(String(l.msg))),
    );
    const spam = agent.logs.filter((l) => l.fn === "faulty" && l.user === true && /^y+/.test(String(l.msg)));
    const bytes = spam.reduce((n, l) => n + String(l.msg).length, 0);
    assert.ok(bytes > 32 * 1024, `the console output up to the limit was kept (${bytes})`);
    assert.ok(bytes <= 70 * 1024, `at most ~64 KiB of console output kept (${bytes})`);
  });

  // protection: driver.ts raw output budget and bounded line length (bounded-lines.test.ts checks the bound itself)
  it("raw stdout spam without newlines: bounded, the agent stays up", async () => {
    const rssBefore = process.memoryUsage().rss;
    await withBystander(
      "rawSpam",
      (res) => {
        assert.equal(res.status, 200, res.text);
        assert.ok(res.json().result >= 64 * 1024 * 1024, `the guest wrote ${res.json().result} bytes`);
      },
      false,
    );
    const grown = process.memoryUsage().rss - rssBefore;
    assert.ok(grown < 64 * 1024 * 1024, `the agent's memory grew by ${grown} bytes`);
  });

  // protection: driver.ts validates a guest log line's level before using it (a forged one cannot crash
  // the agent) and attributes every line to the instance's own function (not to the one it names)
  // (the runtime captures what code writes to process.stdout: the forged line arrives as its text)
  it("a forged log line with an unknown level and another function's name: logged as its own, agent up", async () => {
    const isForged = (l: Record<string, unknown>) => String(l.msg).includes('"msg":"forged"');
    await withBystander("forgedLog", (res) => assert.equal(res.status, 200, res.text), false);
    await waitFor("the forged line", () => agent.logs.some(isForged));
    // A second copy, if the agent made one, would come right behind the first.
    await new Promise((r) => setTimeout(r, 100));
    const forged = agent.logs.filter(isForged);
    assert.equal(forged.length, 1);
    assert.equal(forged[0]!.fn, "faulty", "attributed to the function that wrote it");
  });

  describe("faults while loading", () => {
    // protection: control plane maps a load failure to 422 and keeps the old record
    for (const [what, code, message] of [
      ["throws at load", "throw new Error('load-time boom')", /load-time boom/],
      ["calls process.exit at load", "process.exit(4)", /exit|code 4/],
      ["never finishes loading", "for (;;) {}", /did not finish loading|deadline/],
    ] as const) {
      it(`a module that ${what}: 422, the earlier deployment intact`, async () => {
        const before = await agent.admin("GET", "/v1/functions/hello");
        const bystander = agent.call("steady", rpc("Steady.slow", [1000]));
        const res = await agent.admin(
          "PUT",
          "/v1/functions/hello",
          tarGz([{ name: "index.js", data: code }]),
        );
        assert.equal(res.status, 422, JSON.stringify(res.json));
        assert.match((res.json.error as { message: string }).message, message);
        assert.equal((await bystander).status, 200);
        const after = await agent.admin("GET", "/v1/functions/hello");
        assert.deepEqual(after.json.function, before.json.function);
        assert.equal((await agent.call("hello", HELLO_CALL)).json().result, "Hello world!");
      });
    }
  });
});
