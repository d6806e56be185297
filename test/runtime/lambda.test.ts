import assert from "node:assert/strict";
import { SOURCE_IP_HEADER } from "../../contracts/guest-protocol.ts";
import {
  buildHttpEvent,
  INTERNAL_ERROR,
  invokeErrorLine,
  requestTime,
  resultToAnswer,
} from "../../guest-images/runtime/lambda.ts";

const base = {
  method: "POST",
  path: "/items/7",
  rawQueryString: "a=1&a=2&b=x%20y",
  // As the runtime receives them from the host: its own connection's headers and x-faas- ones included.
  rawHeaders: [
    "host",
    "api.example.test",
    "connection",
    "keep-alive",
    "content-type",
    "application/json",
    "cookie",
    "s=1; t=2",
    "user-agent",
    "ua",
    "x-forwarded-for",
    "1.1.1.1, 10.1.2.3",
    "x-forwarded-proto",
    "http",
    "x-forwarded-port",
    "8080",
    "accept",
    "text/html",
    "Accept",
    "application/json",
    SOURCE_IP_HEADER,
    "10.1.2.3",
    "x-faas-request-id",
    "rid-1",
    "content-length",
    "7",
  ],
  body: Buffer.from('{"k":1}'),
  requestId: "rid-1",
  peerAddress: "127.0.0.1",
  functionName: "fn",
  nowMs: Date.UTC(2020, 2, 12, 19, 3, 58, 390),
};

// biome-ignore lint/suspicious/noExplicitAny: the event is plain JSON; the tests read into it.
type Json = Record<string, any>;

describe("API Gateway v2 events (payload format 2.0)", () => {
  it("builds every documented field of a call", () => {
    const e = buildHttpEvent(base) as Json;
    assert.deepEqual(e, {
      version: "2.0",
      routeKey: "$default",
      rawPath: "/items/7",
      rawQueryString: "a=1&a=2&b=x%20y",
      cookies: ["s=1", "t=2"],
      headers: {
        host: "api.example.test",
        "content-type": "application/json",
        "user-agent": "ua",
        "x-forwarded-for": "1.1.1.1, 10.1.2.3",
        "x-forwarded-proto": "http",
        "x-forwarded-port": "8080",
        accept: "text/html,application/json",
        "content-length": "7",
      },
      queryStringParameters: { a: "1,2", b: "x y" },
      requestContext: {
        accountId: "anonymous",
        apiId: "fn",
        domainName: "api.example.test",
        domainPrefix: "api",
        http: {
          method: "POST",
          path: "/items/7",
          protocol: "HTTP/1.1",
          sourceIp: "10.1.2.3",
          userAgent: "ua",
        },
        requestId: "rid-1",
        routeKey: "$default",
        stage: "$default",
        time: "12/Mar/2020:19:03:58 +0000",
        timeEpoch: base.nowMs,
      },
      isBase64Encoded: false,
      body: '{"k":1}',
    });
    assert.equal(requestTime(Date.UTC(2024, 0, 5, 3, 4, 5)), "05/Jan/2024:03:04:05 +0000");
  });

  it("hands the path decoded, as HTTP APIs do, and falls back to its own peer without the host's word", () => {
    const e = buildHttpEvent({
      ...base,
      path: "/caf%C3%A9/a%20b/%ZZ",
      rawHeaders: ["host", "h"],
    }) as Json;
    assert.equal(e.rawPath, "/café/a b/%ZZ");
    assert.equal(e.requestContext.http.path, "/café/a b/%ZZ");
    assert.equal(e.requestContext.http.sourceIp, "127.0.0.1");
    assert.equal("cookies" in e, false);
  });

  it("base64-encodes every body AWS does not pass as text, and omits empty ones", () => {
    const body = (contentType: string | undefined) => {
      const e = buildHttpEvent({
        ...base,
        rawHeaders: contentType === undefined ? [] : ["Content-Type", contentType],
        body: Buffer.from("a=1&b=é"),
      }) as Json;
      return [e.isBase64Encoded, e.body];
    };
    const b64 = Buffer.from("a=1&b=é").toString("base64");
    for (const text of [
      "text/plain",
      "text/html; charset=utf-8",
      "application/json",
      "Application/XML",
      "application/javascript",
    ])
      assert.deepEqual(body(text), [false, "a=1&b=é"], text);
    for (const binary of [
      undefined,
      "application/octet-stream",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "image/png",
      "application/jsonp",
    ])
      assert.deepEqual(body(binary), [true, b64], String(binary));
    const empty = buildHttpEvent({ ...base, rawQueryString: "", body: Buffer.alloc(0) }) as Json;
    assert.equal("body" in empty, false);
    assert.equal(empty.isBase64Encoded, false);
    assert.equal("queryStringParameters" in empty, false);
  });
});

describe("API Gateway v2 results", () => {
  it("maps statusCode, headers, multiValueHeaders, cookies and a base64 body", () => {
    const a = resultToAnswer({
      statusCode: 201,
      headers: { "X-A": "1", "Set-Cookie": "h=1" },
      multiValueHeaders: { "x-a": ["2"], "set-cookie": ["m=1"] },
      cookies: ["c=1"],
      body: "aGk=",
      isBase64Encoded: true,
    });
    assert.equal(a.status, 201);
    assert.deepEqual(a.headers, { "x-a": "1,2", "set-cookie": ["h=1", "m=1", "c=1"] });
    assert.equal(a.body.toString(), "hi");
  });

  it("maps a plain value to 200 JSON, as API Gateway does", () => {
    const a = resultToAnswer({ ok: true });
    assert.equal(a.status, 200);
    assert.equal(a.headers["content-type"], "application/json");
    assert.equal(a.body.toString(), '{"ok":true}');
    assert.equal(resultToAnswer("plain").body.toString(), "plain");
    assert.equal(resultToAnswer(undefined).body.length, 0);
  });

  it("refuses a statusCode outside 100..599", () => {
    assert.throws(() => resultToAnswer({ statusCode: 42 }), /from 100 to 599/);
  });

  it("puts root-relative redirects and cookie paths under the function's mount", () => {
    const a = resultToAnswer(
      {
        statusCode: 302,
        headers: { Location: "/new?x=1" },
        cookies: ["s=1; Path=/; HttpOnly", "t=2; path=/cart", "u=3"],
      },
      "/shop",
    );
    assert.equal(a.headers.location, "/shop/new?x=1");
    assert.deepEqual(a.headers["set-cookie"], ["s=1; Path=/shop; HttpOnly", "t=2; path=/shop/cart", "u=3"]);
    for (const kept of ["https://other.example/x", "//cdn.example/x", "relative/x"])
      assert.equal(
        resultToAnswer({ statusCode: 302, headers: { location: kept } }, "/shop").headers.location,
        kept,
      );
    assert.equal(
      resultToAnswer({ statusCode: 302, headers: { location: "/" } }, "/shop").headers.location,
      "/shop",
    );
  });

  it("answers a failure as AWS does, and logs it the way Lambda's runtime does", () => {
    assert.equal(INTERNAL_ERROR.status, 500);
    assert.equal(INTERNAL_ERROR.body.toString(), '{"message":"Internal Server Error"}');
    const line = invokeErrorLine(new RangeError("boom"));
    assert.match(
      line,
      /^Invoke Error \{"errorType":"RangeError","errorMessage":"boom","stack":\["RangeError: boom",/,
    );
    assert.equal(invokeErrorLine("bare"), 'Invoke Error {"errorType":"string","errorMessage":"bare"}');
  });
});
