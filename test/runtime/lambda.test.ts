import assert from "node:assert/strict";
import { buildHttpEvent, resultToAnswer } from "../../guest-images/runtime/lambda.ts";

const base = {
  method: "POST",
  path: "/items/7",
  rawQueryString: "a=1&a=2&b=x",
  headers: {
    "content-type": "application/json",
    host: "api.example.test",
    cookie: "s=1; t=2",
    "user-agent": "ua",
  },
  body: Buffer.from('{"k":1}'),
  requestId: "rid-1",
  sourceIp: "10.1.2.3",
  functionName: "fn",
  nowMs: 1_700_000_000_000,
};

describe("API Gateway v2 events", () => {
  it("builds the payload 2.0 shape from a call", () => {
    // biome-ignore lint/suspicious/noExplicitAny: the event is plain JSON; the test reads into it.
    const e = buildHttpEvent(base) as Record<string, any>;
    assert.equal(e.version, "2.0");
    assert.equal(e.routeKey, "$default");
    assert.equal(e.rawPath, "/items/7");
    assert.equal(e.rawQueryString, "a=1&a=2&b=x");
    assert.deepEqual(e.queryStringParameters, { a: "1,2", b: "x" });
    assert.deepEqual(e.cookies, ["s=1", "t=2"]);
    assert.equal(e.headers.cookie, undefined);
    assert.equal(e.requestContext.http.method, "POST");
    assert.equal(e.requestContext.http.sourceIp, "10.1.2.3");
    assert.equal(e.requestContext.requestId, "rid-1");
    assert.equal(e.requestContext.timeEpoch, 1_700_000_000_000);
    assert.equal(e.body, '{"k":1}');
    assert.equal(e.isBase64Encoded, false);
  });

  it("base64-encodes binary bodies and omits empty ones", () => {
    const bin = buildHttpEvent({
      ...base,
      headers: { "content-type": "application/octet-stream" },
      body: Buffer.from([0, 255]),
    }) as Record<string, unknown>;
    assert.equal(bin.isBase64Encoded, true);
    assert.equal(bin.body, "AP8=");
    const empty = buildHttpEvent({ ...base, rawQueryString: "", body: Buffer.alloc(0) }) as Record<
      string,
      unknown
    >;
    assert.equal("body" in empty, false);
    assert.equal("queryStringParameters" in empty, false);
  });

  it("maps a statusCode result with headers, cookies and a base64 body", () => {
    const a = resultToAnswer({
      statusCode: 201,
      headers: { "X-A": "1" },
      cookies: ["c=1"],
      body: "aGk=",
      isBase64Encoded: true,
    });
    assert.equal(a.status, 201);
    assert.deepEqual(a.headers, { "x-a": "1", "set-cookie": ["c=1"] });
    assert.equal(a.body.toString(), "hi");
  });

  it("maps a plain value to 200 JSON, as API Gateway does", () => {
    const a = resultToAnswer({ ok: true });
    assert.equal(a.status, 200);
    assert.equal(a.headers["content-type"], "application/json");
    assert.equal(a.body.toString(), '{"ok":true}');
    assert.equal(resultToAnswer("plain").body.toString(), "plain");
  });

  it("refuses a statusCode outside 100..599", () => {
    assert.throws(() => resultToAnswer({ statusCode: 42 }), /from 100 to 599/);
  });
});
