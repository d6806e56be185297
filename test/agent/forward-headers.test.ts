import assert from "node:assert/strict";
import { REQUEST_ID_HEADER, SOURCE_IP_HEADER, TIMEOUT_HEADER } from "../../contracts/guest-protocol.ts";
import { ConfigError, loadAgentConfig } from "../../host-agent/config.ts";
import {
  forwardHeaders,
  resolveClient,
  TrustedProxies,
  TrustedProxyError,
} from "../../host-agent/http/forward-headers.ts";

const ALB = TrustedProxies.parse(["10.40.0.0/16", "fd00::/8"]);

function forward(rawHeaders: string[], peerAddress: string, trustedProxies = TrustedProxies.none) {
  return forwardHeaders({
    rawHeaders,
    peerAddress,
    localPort: 8080,
    trustedProxies,
    requestId: "rid-1",
    timeoutMs: 1234,
  });
}

describe("forwarded call headers (host-agent/http/forward-headers.ts)", () => {
  // protection: a client's X-Forwarded-For never sets the address its handler sees
  it("names the peer as the client, whatever X-Forwarded-For claims, and appends the peer to it", () => {
    const h = forward(["Host", "fn.example", "X-Forwarded-For", "1.2.3.4, 5.6.7.8"], "203.0.113.9");
    assert.equal(h[SOURCE_IP_HEADER], "203.0.113.9");
    assert.equal(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 203.0.113.9");
    const bare = forward(["Host", "fn.example"], "::ffff:198.51.100.7");
    assert.equal(bare[SOURCE_IP_HEADER], "198.51.100.7", "an IPv4 peer on a dual-stack socket");
    assert.equal(bare["x-forwarded-for"], "198.51.100.7");
  });

  it("believes a trusted proxy's X-Forwarded-For up to the first address it does not trust", () => {
    // The client claimed 1.1.1.1; the load balancer appended the address it saw, 198.51.100.7.
    const h = forward(["X-Forwarded-For", "1.1.1.1, 198.51.100.7"], "10.40.1.20", ALB);
    assert.equal(h[SOURCE_IP_HEADER], "198.51.100.7");
    assert.equal(h["x-forwarded-for"], "1.1.1.1, 198.51.100.7", "the trusted hop is not the client's");
    // Two trusted hops (load balancer behind another of the operator's proxies).
    assert.deepEqual(resolveClient(["198.51.100.7", "10.40.9.9"], "10.40.1.20", ALB), {
      sourceIp: "198.51.100.7",
      forwardedFor: ["198.51.100.7"],
    });
    // A trusted proxy that names no client is itself the client, and one that passes on garbage too.
    assert.equal(resolveClient([], "10.40.1.20", ALB).sourceIp, "10.40.1.20");
    assert.equal(resolveClient(["not-an-ip"], "10.40.1.20", ALB).sourceIp, "10.40.1.20");
    // An untrusted peer inside the claimed chain changes nothing.
    assert.equal(
      forward(["X-Forwarded-For", "10.40.0.1"], "203.0.113.9", ALB)[SOURCE_IP_HEADER],
      "203.0.113.9",
    );
  });

  it("takes the scheme and port from a trusted proxy only, else says how the agent was reached", () => {
    const claimed = ["X-Forwarded-Proto", "https", "X-Forwarded-Port", "443"];
    const direct = forward(claimed, "203.0.113.9", ALB);
    assert.equal(direct["x-forwarded-proto"], "http");
    assert.equal(direct["x-forwarded-port"], "8080");
    const behind = forward(claimed, "10.40.1.20", ALB);
    assert.equal(behind["x-forwarded-proto"], "https");
    assert.equal(behind["x-forwarded-port"], "443");
    assert.equal(forward(["X-Forwarded-Proto", "https"], "10.40.1.20", ALB)["x-forwarded-port"], "443");
  });

  it("keeps the client's headers, lower-cased, repeats joined with ',', without its connection's", () => {
    const h = forward(
      [
        "Host",
        "fn.example",
        "Accept",
        "text/html",
        "accept",
        "application/json",
        "Cookie",
        "a=1",
        "Cookie",
        "b=2",
        "Connection",
        "keep-alive, X-Secret-Hop",
        "X-Secret-Hop",
        "1",
        "Keep-Alive",
        "timeout=5",
        "Transfer-Encoding",
        "chunked",
        "Content-Length",
        "12",
        "X-Faas-Source-Ip",
        "9.9.9.9",
        "X-Faas-Request-Id",
        "forged",
        "User-Agent",
        "curl/8",
        "Host",
        "other.example",
      ],
      "203.0.113.9",
    );
    assert.deepEqual(h, {
      host: "fn.example",
      accept: "text/html,application/json",
      cookie: "a=1; b=2",
      "user-agent": "curl/8",
      "x-forwarded-for": "203.0.113.9",
      "x-forwarded-proto": "http",
      "x-forwarded-port": "8080",
      [SOURCE_IP_HEADER]: "203.0.113.9",
      [REQUEST_ID_HEADER]: "rid-1",
      [TIMEOUT_HEADER]: "1234",
    });
  });

  it("refuses a trusted proxy that is not an address range, naming it (and so does the agent's config)", () => {
    for (const bad of ["10.0.0.0/33", "10.0.0/8", "example.com", "fd00::/129", "10.0.0.0/8/1"]) {
      assert.throws(() => TrustedProxies.parse([bad]), TrustedProxyError, bad);
    }
    assert.equal(TrustedProxies.parse(["192.0.2.1"]).trusts("192.0.2.1"), true, "a bare address");
    assert.equal(TrustedProxies.parse(["192.0.2.1"]).trusts("192.0.2.2"), false);
    assert.equal(ALB.trusts("fd12::1"), true);
    assert.deepEqual(loadAgentConfig({}).trustedProxies, [], "no proxy is trusted by default");
    assert.deepEqual(loadAgentConfig({ FAAS_TRUSTED_PROXIES: "10.40.0.0/16, fd00::/8" }).trustedProxies, [
      "10.40.0.0/16",
      "fd00::/8",
    ]);
    assert.throws(
      () => loadAgentConfig({ FAAS_TRUSTED_PROXIES: "10.40.0.0/16,lb.internal" }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /FAAS_TRUSTED_PROXIES="10.40.0.0\/16,lb.internal": trusted proxy "lb.internal" is not an address range/.test(
          err.message,
        ),
    );
  });
});
