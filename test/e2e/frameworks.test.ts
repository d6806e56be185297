/**
 * Lambda apps as people write them (express through serverless-http, hono through hono/aws-lambda),
 * bundled as `faas deploy` bundles them, deployed into a running agent and called over HTTP: what the
 * framework saw (address, headers, cookies, query, body) and what the client got back.
 */
import assert from "node:assert/strict";
import { type OutgoingHttpHeaders, request } from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { packFunction } from "../../host-agent/cli/pack.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";
import { waitFor } from "../helpers/wait.ts";

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "frameworks");
/** The test's stand-in for a load balancer calls from this loopback address, which the agent trusts. */
const PROXY_ADDRESS = "127.0.0.2";

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  // biome-ignore lint/suspicious/noExplicitAny: tests read whatever the function answered.
  json: () => any;
}

/** One call with node:http: repeated header lines (array values) and a chosen local address. */
function call(
  agent: TestAgent,
  method: string,
  target: string,
  headers: OutgoingHttpHeaders,
  body?: Buffer,
  localAddress = "127.0.0.1",
): Promise<Answer> {
  const url = new URL(target, agent.dataUrl);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, localAddress },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const data = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: data,
            json: () => JSON.parse(data.toString("utf8")),
          });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

describe("Lambda frameworks through the agent (process sandbox)", function () {
  this.timeout(90_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({
      FAAS_CALL_TIMEOUT_MS: "5000",
      FAAS_TRUSTED_PROXIES: `${PROXY_ADDRESS}/32`,
    });
    for (const [name, dir] of [
      ["shop", "express-app"],
      ["hono", "hono-app"],
      ["throws", "throws"],
    ] as const) {
      const put = await agent.admin(
        "PUT",
        `/v1/functions/${name}`,
        await packFunction(path.join(FIXTURES, dir)),
      );
      assert.equal(put.status, 201, `${name}: ${JSON.stringify(put.json)}`);
    }
  });

  after(async () => {
    await agent?.close();
  });

  // protection: forward-headers.ts never takes a client's X-Forwarded-For as its address
  it("express sees the caller's real address, its headers, cookies, query and binary body as sent", async () => {
    const bytes = Buffer.from([0, 1, 2, 200, 255]);
    const res = await call(
      agent,
      "POST",
      "/shop/echo/7?tag=a&tag=b&q=x%20y",
      {
        "content-type": "application/octet-stream",
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-proto": "https",
        cookie: "a=1; b=2",
        "x-multi": ["1", "2"],
        "user-agent": "fixture/1",
      },
      bytes,
    );
    assert.equal(res.status, 200, res.body.toString());
    const seen = res.json();
    assert.equal(seen.ip, "127.0.0.1", "the peer, not the address the caller claimed");
    assert.equal(seen.path, "/echo/7", "below the function's mount");
    assert.deepEqual(seen.query, { tag: ["a", "b"], q: "x y" });
    assert.equal(seen.body, bytes.toString("base64"), "the binary body arrives intact");
    assert.equal(seen.headers.cookie, "a=1; b=2");
    assert.equal(seen.headers["x-multi"], "1,2");
    assert.equal(seen.headers["x-forwarded-for"], "6.6.6.6, 127.0.0.1", "the caller's chain, appended to");
    assert.equal(seen.headers["x-forwarded-proto"], "http", "an untrusted caller's scheme is not believed");
    assert.equal(seen.headers.connection, undefined);

    const event = seen.event;
    assert.equal(event.version, "2.0");
    assert.equal(event.routeKey, "$default");
    assert.equal(event.rawPath, "/echo/7");
    assert.equal(event.rawQueryString, "tag=a&tag=b&q=x%20y");
    assert.deepEqual(event.queryStringParameters, { tag: "a,b", q: "x y" });
    assert.deepEqual(event.cookies, ["a=1", "b=2"]);
    assert.equal(event.isBase64Encoded, true);
    assert.equal(event.body, bytes.toString("base64"));
    assert.equal(event.requestContext.http.sourceIp, "127.0.0.1");
    assert.equal(event.requestContext.http.method, "POST");
    assert.equal(event.requestContext.http.userAgent, "fixture/1");
    assert.equal(event.requestContext.stage, "$default");
    assert.match(event.requestContext.time, /^\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d \+0000$/);
    assert.ok(Math.abs(event.requestContext.timeEpoch - Date.now()) < 60_000);
    assert.equal(event.requestContext.requestId, res.headers["x-faas-request-id"]);
    assert.deepEqual(
      Object.keys(event.headers).filter(
        (h) => h.startsWith("x-faas-") || h === "connection" || h === "cookie",
      ),
      [],
    );

    assert.equal(res.headers["x-answer"], "42");
    assert.deepEqual(
      res.headers["set-cookie"],
      ["seen=7; Path=/shop; HttpOnly"],
      "the cookie stays the function's",
    );
  });

  it("believes a trusted proxy's X-Forwarded-For and scheme, and only its", async () => {
    const res = await call(
      agent,
      "POST",
      "/shop/echo/1",
      {
        "content-type": "application/json",
        // The caller claimed 6.6.6.6; the proxy appended the address it saw.
        "x-forwarded-for": "6.6.6.6, 198.51.100.7",
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
      },
      Buffer.from("{}"),
      PROXY_ADDRESS,
    );
    assert.equal(res.status, 200, res.body.toString());
    const seen = res.json();
    assert.equal(seen.ip, "198.51.100.7");
    assert.equal(seen.event.requestContext.http.sourceIp, "198.51.100.7");
    assert.equal(seen.headers["x-forwarded-for"], "6.6.6.6, 198.51.100.7");
    assert.equal(seen.headers["x-forwarded-proto"], "https");
    assert.equal(seen.headers["x-forwarded-port"], "443");
    assert.equal(seen.event.isBase64Encoded, false, "JSON arrives as text");
  });

  it("a root-relative redirect lands on the function again", async () => {
    const moved = await call(agent, "GET", "/shop/old", {});
    assert.equal(moved.status, 302);
    assert.equal(moved.headers.location, "/shop/landing");
    const landed = await call(agent, "GET", String(moved.headers.location), {});
    assert.equal(landed.status, 200);
    assert.equal(landed.body.toString(), "landed");
    const hono = await call(agent, "GET", "/hono/old", {});
    assert.equal(hono.headers.location, "/hono/new");
  });

  it("hono reads the address, a base64-encoded form body and cookies, and answers binary bytes", async () => {
    const res = await call(
      agent,
      "POST",
      "/hono/form?x=1",
      {
        "content-type": "application/x-www-form-urlencoded",
        host: "fn.example.test",
        cookie: "session=abc",
        "x-forwarded-for": "6.6.6.6",
      },
      Buffer.from("name=Ada+L&city=Z%C3%BCrich"),
    );
    assert.equal(res.status, 200, res.body.toString());
    assert.deepEqual(res.json(), {
      ip: "127.0.0.1",
      url: "https://fn.example.test/form?x=1",
      form: { name: "Ada L", city: "Zürich" },
      cookies: { session: "abc" },
      forwardedFor: "6.6.6.6, 127.0.0.1",
      proto: "http",
      isBase64Encoded: true,
    });
    const bytes = await call(agent, "GET", "/hono/bytes", {});
    assert.equal(bytes.status, 200);
    assert.deepEqual([...bytes.body], [0, 1, 254, 255]);
    assert.equal(bytes.headers["content-type"], "application/octet-stream");
  });

  // protection: a handler's error text never reaches the client; it is in the function's logs
  it("a handler that throws or rejects answers AWS's 500, and its error is in the function's logs", async () => {
    for (const [route, secret] of [
      ["/throws", "hunter2"],
      ["/throws/reject", "s3cr3t"],
    ] as const) {
      const res = await call(agent, "GET", route, {});
      assert.equal(res.status, 500);
      assert.equal(res.headers["content-type"], "application/json");
      assert.equal(res.body.toString(), '{"message":"Internal Server Error"}');
      const rid = String(res.headers["x-faas-request-id"]);
      await waitFor("the error's console line", () =>
        agent.logs.some((l) => l.rid === rid && l.user === true),
      );
      const logs = await agent.admin("GET", "/v1/functions/throws/logs");
      const lines = logs.json.lines as Array<{ rid: string; level: string; msg: string }>;
      const line = lines.find((l) => l.rid === rid);
      assert.equal(line?.level, "error", JSON.stringify(lines));
      assert.match(line.msg, new RegExp(`^Invoke Error .*${secret}`));
    }
    const { code, printed } = await runCli(agent, ["logs", "throws", "--limit", "1"]);
    assert.equal(code, 0);
    assert.match(
      printed.join("\n"),
      /error +\S+ +Invoke Error \{"errorType":"TypeError","errorMessage":"rejected with the token s3cr3t"/,
    );
  });
});
