/**
 * Every framework example in examples/, deployed with `faas deploy <folder>` into a running agent and
 * called over HTTP the way a browser or a client library calls it. The frameworks are the real packages
 * (devDependencies of the project, so `npm ci` installs them); `faas deploy` ships them from the
 * repository's node_modules, where npm hoisted them.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "examples");

async function http(
  agent: TestAgent,
  method: string,
  urlPath: string,
  body?: unknown,
): Promise<{ status: number; type: string; text: string }> {
  const res = await request(`${agent.dataUrl}${urlPath}`, {
    method: method as "GET",
    ...(body === undefined
      ? {}
      : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  return {
    status: res.statusCode,
    type: String(res.headers["content-type"] ?? ""),
    text: await res.body.text(),
  };
}

describe("framework examples, deployed with faas deploy and called over HTTP", function () {
  this.timeout(120_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({ FAAS_CALL_TIMEOUT_MS: "10000" });
  });

  after(async () => {
    await agent?.close();
  });

  async function deploy(folder: string): Promise<string> {
    const { code, printed } = await runCli(agent, ["deploy", path.join(EXAMPLES, folder)]);
    assert.equal(code, 0, printed.join("\n"));
    assert.match(printed.join("\n"), new RegExp(`deployed ${folder} \\(revision 1, handler`));
    return folder;
  }

  it("express through serverless-http: routes, JSON bodies, express.static and res.sendFile", async () => {
    const fn = await deploy("express-serverless-http");
    const page = await http(agent, "GET", `/${fn}`);
    assert.equal(page.status, 200);
    assert.match(page.type, /^text\/html/);
    assert.match(page.text, /<h1>Hello from express<\/h1>/);
    const css = await http(agent, "GET", `/${fn}/static/style.css`);
    assert.equal(css.status, 200);
    assert.match(css.type, /^text\/css/);
    assert.equal(css.text, "body {\n  font-family: sans-serif;\n}\n");
    const user = await http(agent, "GET", `/${fn}/users/42?sort=name`);
    assert.deepEqual(JSON.parse(user.text), { id: "42", query: { sort: "name" } });
    const echo = await http(agent, "POST", `/${fn}/echo`, { a: [1, 2] });
    assert.equal(echo.status, 201);
    assert.deepEqual(JSON.parse(echo.text), { received: { a: [1, 2] } });
    const missing = await http(agent, "GET", `/${fn}/static/README.md`);
    assert.equal(missing.status, 404, "README.md is in the example's .faasignore");
  });

  it("hono through hono/aws-lambda: an ES module with top-level await reading a file by import.meta.url", async () => {
    const fn = await deploy("hono");
    const root = await http(agent, "GET", `/${fn}`);
    assert.equal(root.status, 200);
    assert.equal(root.text, "Hello from hono");
    const book = await http(agent, "GET", `/${fn}/books/7?q=ts`);
    assert.deepEqual(JSON.parse(book.text), { id: "7", q: "ts" });
    const created = await http(agent, "POST", `/${fn}/books`, { title: "Dune" });
    assert.equal(created.status, 201);
    assert.deepEqual(JSON.parse(created.text), { created: { title: "Dune" } });
  });

  it("fastify through @fastify/aws-lambda, ready before the first event (top-level await)", async () => {
    const fn = await deploy("fastify");
    assert.deepEqual(JSON.parse((await http(agent, "GET", `/${fn}`)).text), { hello: "fastify" });
    assert.deepEqual(JSON.parse((await http(agent, "GET", `/${fn}/items/abc`)).text), { id: "abc" });
    const created = await http(agent, "POST", `/${fn}/items`, { n: 1 });
    assert.equal(created.status, 201);
    assert.deepEqual(JSON.parse(created.text), { created: { n: 1 } });
  });

  it("middy with a JSON body parser, the handler named the Lambda way (src/lambda.handler)", async () => {
    const fn = await deploy("middy");
    const res = await http(agent, "POST", `/${fn}`, { name: "Ada" });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.text), { message: "Hello, Ada!" });
  });

  it("Powertools Logger: its JSON lines reach faas logs with the call's request id", async () => {
    const fn = await deploy("powertools-logger");
    const res = await http(agent, "POST", `/${fn}/orders`, { item: "book" });
    assert.equal(res.status, 202);
    assert.deepEqual(JSON.parse(res.text), { accepted: "book" });
    type Line = { level: string; rid: string | null; msg: string };
    let line: Line | undefined;
    for (const deadline = Date.now() + 10_000; !line && Date.now() < deadline; ) {
      const { json } = await agent.admin("GET", `/v1/functions/${fn}/logs?limit=20`);
      line = (json.lines as Line[]).find((l) => l.msg.includes("order received"));
      if (!line) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(line, "the Logger's line reaches the function's logs");
    const entry = JSON.parse(line.msg) as Record<string, unknown>;
    assert.equal(entry.message, "order received");
    assert.equal(entry.service, "orders");
    assert.equal(entry.item, "book");
    assert.equal(entry.path, "/orders");
    assert.equal(entry.function_request_id, line.rid);
    assert.equal(line.level, "info");
  });
});
