/**
 * End to end through the real agent with the process sandbox: deploy, call, and every kind of bad input
 * from the foundation issue, each answered with a clear 4xx while earlier deployments stay intact.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { packFunction } from "../../host-agent/cli/pack.ts";
import { HELLO_CALL, startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";
import { HELLO_MODULE, helloBundle, tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";
import { zip } from "../helpers/zip-builder.ts";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "examples");

const ENV = { FAAS_CALL_TIMEOUT_MS: "3000", FAAS_MAX_BODY_BYTES: "65536" };

describe("agent end to end (process sandbox)", function () {
  this.timeout(60_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent(ENV);
    const deployed = await agent.admin(
      "PUT",
      "/v1/functions/hello-world",
      await packFunction(path.join(EXAMPLES, "hello-world")),
    );
    assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
  });

  after(async () => {
    await agent?.close();
  });

  it("serves the seed's hello-world over JSON-RPC with the exact answer", async () => {
    const res = await agent.call("hello-world", HELLO_CALL);
    assert.equal(res.status, 200);
    assert.equal(res.text.trim(), '{"jsonrpc":"2.0","result":"Hello world!","error":null,"id":1}');
    assert.match(String(res.headers["x-faas-base-version"]), new RegExp(`^${agent.base.version}; runtime=`));
  });

  it("passes parameters and reuses the warm instance for later calls", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await agent.call("hello-world", {
        jsonrpc: "2.0",
        method: "HelloWorldService.hello",
        params: ["Ada", `call ${i}`],
        id: i,
      });
      assert.deepEqual(res.json(), {
        jsonrpc: "2.0",
        result: `Hello, Ada, from call ${i}!`,
        error: null,
        id: i,
      });
    }
    const pool = await agent.admin("GET", "/v1/pool");
    const fns = pool.json.functions as Record<string, { idle: number; busy: number }>;
    assert.equal(fns["hello-world"]?.idle, 1, "one specialized instance served every call");
  });

  it("tags the user's console output with the function name and the call's request id", async () => {
    const res = await agent.call("hello-world", HELLO_CALL);
    const rid = res.headers["x-faas-request-id"];
    assert.ok(rid);
    await waitFor("the console line", () => agent.logs.some((l) => l.rid === rid && l.user === true));
    const line = agent.logs.find((l) => l.rid === rid && l.user === true);
    assert.ok(line, "the console line carries the request id");
    assert.equal(line.fn, "hello-world");
    assert.equal(line.msg, "Hello world - request received!");
  });

  // protection: FunctionLogs keeps each function's last console lines for GET /v1/functions/<name>/logs
  // and faas logs; the limit is checked and a function that never existed is 404
  it("shows a function's last console lines with their request ids (GET /v1/functions/<name>/logs, faas logs)", async () => {
    const rids: string[] = [];
    for (let i = 0; i < 3; i++)
      rids.push(String((await agent.call("hello-world", HELLO_CALL)).headers["x-faas-request-id"]));
    await waitFor("the last console line", () =>
      agent.logs.some((l) => l.rid === rids[2] && l.user === true),
    );
    const res = await agent.admin("GET", "/v1/functions/hello-world/logs?limit=2");
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const lines = res.json.lines as Array<{
      rid: string;
      level: string;
      msg: string;
      instance: string;
      time: string;
    }>;
    assert.deepEqual(
      lines.map((l) => [l.rid, l.level, l.msg]),
      [
        [rids[1], "info", "Hello world - request received!"],
        [rids[2], "info", "Hello world - request received!"],
      ],
    );
    assert.ok(lines.every((l) => l.instance && !Number.isNaN(Date.parse(l.time))));
    for (const bad of ["0", "501", "ten", "1.5"]) {
      const r = await agent.admin("GET", `/v1/functions/hello-world/logs?limit=${bad}`);
      assert.equal(r.status, 400, bad);
      assert.match(
        (r.json.error as { message: string }).message,
        /limit must be a whole number from 1 to 500/,
      );
    }
    assert.equal((await agent.admin("GET", "/v1/functions/never-deployed/logs")).status, 404);

    const { code, printed } = await runCli(agent, ["logs", "hello-world", "--limit", "1"]);
    assert.equal(code, 0);
    assert.equal(printed.length, 1);
    assert.match(printed[0]!, new RegExp(`^\\S+Z info  ${rids[2]}  Hello world - request received!$`));
  });

  it("runs Lambda-style handlers with an API Gateway v2 event", async () => {
    const put = await agent.admin(
      "PUT",
      "/v1/functions/http-echo",
      await packFunction(path.join(EXAMPLES, "http-echo")),
    );
    assert.equal(put.status, 201, JSON.stringify(put.json));
    assert.equal((put.json.load as { style: string }).style, "handler");
    const res = await agent.call("http-echo", "ping", {
      method: "PUT",
      path: "/http-echo/items/7?x=1&x=2",
      headers: { "content-type": "text/plain" },
    });
    assert.equal(res.status, 200);
    const body = res.json() as Record<string, unknown>;
    assert.equal(body.method, "PUT");
    assert.equal(body.path, "/items/7");
    assert.equal(body.query, "x=1&x=2");
    assert.equal(body.body, "ping");
    assert.equal(body.requestId, res.headers["x-faas-request-id"]);
  });

  describe("bad input gets a clear error and loses nothing", () => {
    const cases: Array<[string, () => Promise<Buffer> | Buffer, number, RegExp]> = [
      [
        "a body that is neither tar.gz nor zip",
        () => Buffer.from("hello, not an archive"),
        400,
        /neither a tar\.gz nor a zip/,
      ],
      [
        "an entry with ..",
        () => helloBundle([{ name: "../escape.js", data: "x" }]),
        400,
        /"\.\." is not allowed/,
      ],
      [
        "an absolute path",
        () => helloBundle([{ name: "/etc/cron.d/x", data: "x" }]),
        400,
        /absolute paths are not allowed/,
      ],
      [
        "a symlink pointing outside",
        () => helloBundle([{ name: "leak", type: "2", linkname: "../../../../etc/shadow" }]),
        400,
        /points outside the bundle/,
      ],
      [
        "an absolute symlink",
        () => helloBundle([{ name: "leak", type: "2", linkname: "/etc/shadow" }]),
        400,
        /must be relative/,
      ],
      [
        "a device file",
        () => helloBundle([{ name: "kmem", type: "3" }]),
        400,
        /CharacterDevice entries are not allowed/,
      ],
      ["a setuid file", () => helloBundle([{ name: "su", data: "x", mode: 0o4755 }]), 400, /setuid/],
      [
        "no entry module",
        () => tarGz([{ name: "lib/util.js", data: "module.exports = 1" }]),
        400,
        /no entry module/,
      ],
      [
        "a zip with a symlink outside",
        () =>
          zip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "l", data: "../../x", mode: 0o120777 },
          ]),
        400,
        /points outside/,
      ],
    ];
    for (const [what, bundle, status, message] of cases) {
      it(`refuses ${what} with ${status}`, async () => {
        const before = await agent.admin("GET", "/v1/functions/hello-world");
        const res = await agent.admin("PUT", "/v1/functions/hello-world", await bundle());
        assert.equal(res.status, status, JSON.stringify(res.json));
        assert.match((res.json.error as { message: string }).message, message);
        const after = await agent.admin("GET", "/v1/functions/hello-world");
        assert.deepEqual(after.json.function, before.json.function, "the earlier deployment is unchanged");
        assert.equal((await agent.call("hello-world", HELLO_CALL)).status, 200, "and still serves");
      });
    }

    it("refuses an oversized bundle (compressed, unpacked, file count) with 413", async () => {
      const small = await startTestAgent({
        FAAS_MAX_BUNDLE_BYTES: "2048",
        FAAS_MAX_UNPACKED_BYTES: "100000",
        FAAS_MAX_FILES: "5",
      });
      try {
        const big = tarGz([
          { name: "index.js", data: HELLO_MODULE },
          { name: "noise", data: randomBytes(4096) },
        ]);
        let res = await small.admin("PUT", "/v1/functions/a", big);
        assert.equal(res.status, 413);
        assert.match((res.json.error as { message: string }).message, /limit/);
        res = await small.admin(
          "PUT",
          "/v1/functions/a",
          tarGz([
            { name: "index.js", data: HELLO_MODULE },
            { name: "zeros", data: Buffer.alloc(200_000) },
          ]),
        );
        assert.equal(res.status, 413);
        assert.match((res.json.error as { message: string }).message, /unpacks to more than 100000 bytes/);
        res = await small.admin(
          "PUT",
          "/v1/functions/a",
          tarGz([
            { name: "index.js", data: HELLO_MODULE },
            ...[1, 2, 3, 4, 5].map((i) => ({ name: `f${i}`, data: "x" })),
          ]),
        );
        assert.equal(res.status, 413);
        assert.match((res.json.error as { message: string }).message, /more than 5 entries/);
      } finally {
        await small.close();
      }
    });

    it("refuses a module that throws while loading with 422 and keeps the old code serving", async () => {
      const res = await agent.admin(
        "PUT",
        "/v1/functions/hello-world",
        tarGz([{ name: "index.js", data: "throw new Error('broken at load')" }]),
      );
      assert.equal(res.status, 422);
      assert.match((res.json.error as { message: string }).message, /broken at load/);
      assert.equal((await agent.call("hello-world", HELLO_CALL)).json().result, "Hello world!");
    });

    it("refuses a bad function name with 400 naming the rule", async () => {
      for (const name of ["Hello", "1abc", "a_b", "x".repeat(64), "healthz"]) {
        const res = await agent.admin("PUT", `/v1/functions/${name}`, helloBundle());
        assert.equal(res.status, 400, name);
        assert.match((res.json.error as { message: string }).message, /invalid function name|reserved/);
      }
    });

    it("answers an unknown function with 404", async () => {
      const res = await agent.call("no-such-fn", HELLO_CALL);
      assert.equal(res.status, 404);
      assert.match(res.text, /no function named no-such-fn/);
      assert.equal((await agent.admin("GET", "/v1/functions/no-such-fn")).status, 404);
    });

    it("answers malformed JSON-RPC with JSON-RPC errors", async () => {
      let res = await agent.call("hello-world", "{not json");
      assert.equal(res.status, 400);
      assert.equal((res.json() as { error: { code: number } }).error.code, -32700);
      res = await agent.call("hello-world", {
        jsonrpc: "1.0",
        method: "HelloWorldService.helloWorld",
        id: 1,
      });
      assert.equal((res.json() as { error: { code: number } }).error.code, -32600);
      res = await agent.call("hello-world", {
        jsonrpc: "2.0",
        method: "HelloWorldService.nope",
        params: [],
        id: 2,
      });
      assert.equal(res.status, 404);
      assert.deepEqual(res.json(), {
        jsonrpc: "2.0",
        error: { code: -32601, message: "Method not found: HelloWorldService.nope" },
        id: 2,
      });
    });

    it("refuses an oversized request body with 413", async () => {
      const res = await agent.call("hello-world", "x".repeat(70_000));
      assert.equal(res.status, 413);
      assert.match(res.text, /limit is 65536 bytes|larger than the limit of 65536/);
    });

    it("refuses a missing or wrong admin token with 401", async () => {
      const { request } = await import("undici");
      for (const authorization of [undefined, "Bearer wrong-token-wrong-token", "Basic abc"]) {
        const res = await request(`${agent.adminUrl}/v1/functions`, {
          headers: authorization ? { authorization } : {},
        });
        assert.equal(res.statusCode, 401);
        assert.match(await res.body.text(), /admin token/);
      }
    });

    it("refuses a wrong content type with 415", async () => {
      const res = await agent.admin("PUT", "/v1/functions/hello-world", helloBundle(), {
        "content-type": "text/plain",
      });
      assert.equal(res.status, 415);
    });
  });

  it("stops a call past its deadline with 504, replaces the instance and keeps serving", async () => {
    const put = await agent.admin(
      "PUT",
      "/v1/functions/spin",
      tarGz([
        { name: "index.js", data: "exports.S = class S { loop() { for (;;) {} } ok() { return 'fine'; } };" },
      ]),
    );
    assert.equal(put.status, 201, JSON.stringify(put.json));
    const res = await agent.call("spin", { jsonrpc: "2.0", method: "S.loop", params: [], id: 1 });
    assert.equal(res.status, 504);
    assert.match(res.text, /deadline of 3000 ms/);
    const again = await agent.call("spin", { jsonrpc: "2.0", method: "S.ok", params: [], id: 2 });
    assert.equal((again.json() as { result: string }).result, "fine");
    assert.equal((await agent.call("hello-world", HELLO_CALL)).status, 200);
  });

  it("reports a crash during a call with 502 and the reason, and recovers", async () => {
    await agent.admin(
      "PUT",
      "/v1/functions/crash",
      tarGz([
        {
          name: "index.js",
          data: "exports.C = class C { die() { setTimeout(() => { throw new Error('async boom'); }); return new Promise(() => {}); } ok() { return 1; } };",
        },
      ]),
    );
    const res = await agent.call("crash", { jsonrpc: "2.0", method: "C.die", params: [], id: 1 });
    assert.equal(res.status, 502);
    assert.match(res.text, /async boom/);
    assert.equal(
      (await agent.call("crash", { jsonrpc: "2.0", method: "C.ok", params: [], id: 2 })).json().result,
      1,
    );
  });

  it("keeps every function across a restart of the agent", async () => {
    const list = (await agent.admin("GET", "/v1/functions")).json.functions as Array<{
      name: string;
      codeHash: string;
    }>;
    await agent.close(true);
    agent = await startTestAgent(ENV, { stateDir: agent.stateDir });
    const again = (await agent.admin("GET", "/v1/functions")).json.functions as Array<{
      name: string;
      codeHash: string;
    }>;
    assert.deepEqual(again, list);
    assert.equal((await agent.call("hello-world", HELLO_CALL)).json().result, "Hello world!");
  });

  it("deletes a function: 404 afterwards, others unaffected", async () => {
    const res = await agent.admin("DELETE", "/v1/functions/http-echo");
    assert.equal(res.status, 200);
    assert.equal((await agent.call("http-echo", "x")).status, 404);
    assert.equal((await agent.call("hello-world", HELLO_CALL)).status, 200);
  });

  it("exposes Prometheus metrics and health", async () => {
    const { request } = await import("undici");
    const res = await request(`${agent.adminUrl}/metrics`, {
      headers: { authorization: `Bearer ${agent.adminToken}` },
    });
    const text = await res.body.text();
    assert.match(text, /faas_calls_total\{function="hello-world",outcome="ok"\} \d+/);
    assert.match(text, /faas_pool_instances\{state="generic"\}/);
    const health = await agent.admin("GET", "/healthz");
    assert.equal(health.json.status, "ok");
    assert.equal(health.json.baseVersion, agent.base.version);
  });
});
