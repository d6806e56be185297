/**
 * A Genezio class called the way Genezio's own generated client calls it, through the running agent:
 * GenezioError's code and info come back, a GnzContext first argument gets the request, browsers get
 * CORS, and results JSON cannot carry are answered as errors by an instance that goes on serving.
 */
import assert from "node:assert/strict";
import { request } from "undici";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

/**
 * The class a user writes. GenezioError is declared here with the shape @genezio/types gives it
 * (`class GenezioError extends Error { code; info }`, constructor(message, code, info)): that package
 * is not in this project's registry, and only its shape reaches the wire.
 */
const SERVICE = `
class GenezioError extends Error {
  constructor(message, code, info) { super(message); this.name = "GenezioError"; this.code = code; this.info = info; }
}
let served = 0;
class TodoService {
  async remove(id) {
    served++;
    if (id !== 1) throw new GenezioError("no such todo", 404, { id, hint: "list them first" });
    return { removed: id };
  }
  plain() { throw new Error("just broken"); }
  whoami(ctx, word) {
    return { token: ctx.token, header: ctx.headers["x-custom"], path: ctx.requestContext.http.path,
             method: ctx.requestContext.http.method, url: String(ctx.requestContext.url), word };
  }
  big() { served++; return { n: 10n }; }
  loop() { served++; const o = { a: 1 }; o.self = o; return o; }
  count() { return served; }
}
module.exports = { TodoService };
`;

/**
 * What Genezio's generated client sends and how it reads the answer, from the genezio 3.2.10 npm
 * package: its bundled Remote (build/src/genezio-remote/dist/lib/remote.node.js) POSTs
 * `{ jsonrpc: "2.0", method, params: args, id: 3 }` with Content-Type: application/json, parses the
 * body whatever the status, and throws an Error carrying `code` and `info` when `error` is set; its JS
 * SDK generator (build/src/generateSdk/sdkGenerator/JsSdkGenerator.js) puts
 * `{"token": <stored token>, "isGnzContext": true}` first for a method that declares a GnzContext.
 */
async function remoteCall(url: string, method: string, ...args: unknown[]): Promise<unknown> {
  const res = await request(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "x-custom": "from-the-browser" },
    body: JSON.stringify({ jsonrpc: "2.0", method, params: args, id: 3 }),
  });
  const response = JSON.parse(await res.body.text()) as {
    result?: unknown;
    error?: { message: string; code?: number; info?: unknown };
  };
  if (response.error) {
    const e = new Error(response.error.message) as Error & { code?: number; info?: unknown };
    e.code = response.error.code;
    e.info = response.error.info;
    throw e;
  }
  return response.result;
}

describe("Genezio classes as Genezio serves them (process sandbox)", function () {
  this.timeout(60_000);
  let agent: TestAgent;
  let url: string;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({ FAAS_CALL_TIMEOUT_MS: "5000" });
    const deployed = await agent.admin(
      "PUT",
      "/v1/functions/todo",
      tarGz([{ name: "index.js", data: SERVICE }]),
    );
    assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
    url = `${agent.dataUrl}/todo`;
  });

  after(async () => {
    await agent?.close();
  });

  it("gives the client a thrown GenezioError's code and info, and -32000 for a plain Error", async () => {
    assert.deepEqual(await remoteCall(url, "TodoService.remove", 1), { removed: 1 });
    await assert.rejects(
      remoteCall(url, "TodoService.remove", 7),
      (err: Error & { code?: number; info?: unknown }) => {
        assert.equal(err.message, "no such todo");
        assert.equal(err.code, 404);
        assert.deepEqual(err.info, { id: 7, hint: "list them first" });
        return true;
      },
    );
    await assert.rejects(
      remoteCall(url, "TodoService.plain"),
      (err: Error & { code?: number; info?: unknown }) => {
        assert.equal(err.message, "just broken");
        assert.equal(err.code, -32000);
        assert.equal(err.info, undefined);
        return true;
      },
    );
  });

  it("fills a GnzContext first argument with the request's headers and context", async () => {
    const got = (await remoteCall(
      url,
      "TodoService.whoami",
      { token: "tok-1", isGnzContext: true },
      "hi",
    )) as Record<string, unknown>;
    assert.deepEqual(got, {
      token: "tok-1",
      header: "from-the-browser",
      path: "/todo",
      method: "POST",
      url: `http://${new URL(agent.dataUrl).host}/todo`,
      word: "hi",
    });
  });

  it("answers the browser's preflight and puts access-control-allow-origin on every answer", async () => {
    const pre = await request(url, {
      method: "OPTIONS",
      headers: {
        origin: "https://app.example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });
    await pre.body.text();
    assert.equal(pre.statusCode, 204);
    assert.equal(pre.headers["access-control-allow-origin"], "*");
    assert.equal(pre.headers["access-control-allow-methods"], "POST");
    assert.equal(pre.headers["access-control-allow-headers"], "content-type");
    for (const params of [[1], [2]]) {
      const res = await agent.call(
        "todo",
        { jsonrpc: "2.0", method: "TodoService.remove", params, id: 1 },
        { headers: { "content-type": "application/json", origin: "https://app.example.com" } },
      );
      assert.equal(res.headers["access-control-allow-origin"], "*", `status ${res.status}`);
    }
  });

  it("answers a BigInt or circular result with a JSON-RPC error, and the same instance goes on serving", async () => {
    const before = (await remoteCall(url, "TodoService.count")) as number;
    for (const method of ["TodoService.big", "TodoService.loop"]) {
      await assert.rejects(remoteCall(url, method), (err: Error & { code?: number }) => {
        assert.equal(err.code, -32603);
        assert.match(err.message, /cannot be sent as JSON/);
        return true;
      });
    }
    // Module state survived: the instance that failed to send those answers is the one counting.
    assert.equal(await remoteCall(url, "TodoService.count"), before + 2);
    assert.ok(!agent.logs.some((l) => String(l.msg).startsWith("instance died")), "no instance died");
  });
});
