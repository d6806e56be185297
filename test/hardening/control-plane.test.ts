/**
 * The control plane's own defences: the admin token compared in constant time and refused in every
 * shape but the right one, the admin API on loopback unless configured, limits and timeouts configured,
 * and clients the agent refuses cannot keep streaming into it.
 */
import assert from "node:assert/strict";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { connect } from "node:net";
import { request } from "undici";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { bearerToken, tokenMatches } from "../../host-agent/http/auth.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";

const crypto = createRequire(import.meta.url)("node:crypto") as typeof import("node:crypto");
const TOKEN = "s3cret-token-for-the-admin-api";

describe("hardening: control plane", () => {
  describe("the admin token", () => {
    // protection: auth.ts tokenMatches hashes both sides and compares with crypto.timingSafeEqual
    it("is compared with timingSafeEqual over equal-length digests", () => {
      const original = crypto.timingSafeEqual;
      const seen: Array<[number, number]> = [];
      crypto.timingSafeEqual = ((a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
        seen.push([a.byteLength, b.byteLength]);
        return original(a, b);
      }) as typeof crypto.timingSafeEqual;
      syncBuiltinESMExports();
      try {
        assert.equal(tokenMatches(TOKEN, TOKEN), true);
        assert.equal(tokenMatches("x", TOKEN), false);
      } finally {
        crypto.timingSafeEqual = original;
        syncBuiltinESMExports();
      }
      assert.deepEqual(seen, [
        [32, 32],
        [32, 32],
      ]);
    });

    // protection: auth.ts hashes first, so no length ever reaches timingSafeEqual unequal (it would throw)
    it("refuses a prefix, an extension and tokens of any length without throwing", () => {
      const wrong = [
        "",
        TOKEN.slice(0, 1),
        TOKEN.slice(0, -1),
        `${TOKEN}x`,
        TOKEN.toUpperCase(),
        `${TOKEN}\0`,
        "é".repeat(31),
        "a".repeat(1_000_000),
      ];
      for (const presented of wrong)
        assert.equal(tokenMatches(presented, TOKEN), false, presented.slice(0, 40));
      assert.equal(tokenMatches(undefined, TOKEN), false);
    });

    // protection: auth.ts bearerToken accepts exactly "Bearer <one token>"
    it("reads only a well-formed bearer header", () => {
      assert.equal(bearerToken(`Bearer ${TOKEN}`), TOKEN);
      assert.equal(bearerToken(`bearer ${TOKEN}`), TOKEN);
      for (const header of [TOKEN, `Basic ${TOKEN}`, `Bearer ${TOKEN} extra`, `Bearer`, `Token ${TOKEN}`]) {
        assert.equal(bearerToken(header), undefined, header);
      }
    });
  });

  describe("configuration", () => {
    // protection: config.ts defaults ADMIN_HOST (and HOST) to 127.0.0.1
    it("keeps the admin API on loopback unless ADMIN_HOST says otherwise", () => {
      assert.equal(loadAgentConfig({}).adminHost, "127.0.0.1");
      assert.equal(
        loadAgentConfig({ ADMIN_HOST: "" }).adminHost,
        "127.0.0.1",
        "an empty value is the default",
      );
      assert.equal(loadAgentConfig({ ADMIN_HOST: "10.0.0.5" }).adminHost, "10.0.0.5");
    });

    // protection: config.ts FAAS_HEADERS_TIMEOUT_MS / FAAS_REQUEST_TIMEOUT_MS / FAAS_ADMIN_REQUEST_TIMEOUT_MS
    it("has finite, configurable header and request timeouts and body limits", () => {
      const c = loadAgentConfig({});
      assert.equal(c.headersTimeoutMs, 10_000);
      assert.equal(c.requestTimeoutMs, 60_000);
      assert.equal(c.adminRequestTimeoutMs, 300_000);
      assert.equal(c.maxBodyBytes, 6 * 1024 * 1024);
      const t = loadAgentConfig({
        FAAS_HEADERS_TIMEOUT_MS: "500",
        FAAS_REQUEST_TIMEOUT_MS: "700",
        FAAS_ADMIN_REQUEST_TIMEOUT_MS: "900",
      });
      assert.deepEqual([t.headersTimeoutMs, t.requestTimeoutMs, t.adminRequestTimeoutMs], [500, 700, 900]);
      assert.throws(() => loadAgentConfig({ FAAS_HEADERS_TIMEOUT_MS: "0" }), /FAAS_HEADERS_TIMEOUT_MS/);
      assert.throws(() => loadAgentConfig({ FAAS_MAX_BODY_BYTES: "1" }), /FAAS_MAX_BODY_BYTES/);
    });
  });

  describe("through a running agent", function () {
    this.timeout(60_000);
    let agent: TestAgent;

    before(async function () {
      requireJailHost(this);
      agent = await startTestAgent({
        FAAS_ADMIN_TOKEN: TOKEN,
        FAAS_MAX_BODY_BYTES: "65536",
        FAAS_MAX_BUNDLE_BYTES: "65536",
      });
    });

    after(async () => {
      await agent?.close();
    });

    // protection: agent.ts listens on config.adminHost (loopback by default)
    it("listens on loopback only", () => {
      assert.equal(new URL(agent.adminUrl).hostname, "127.0.0.1");
      assert.equal(new URL(agent.dataUrl).hostname, "127.0.0.1");
    });

    // protection: control-plane route() checks the token before anything else, with tokenMatches
    it("answers 401 (never 5xx) to a prefix, an extension and tokens of many lengths, on every route", async () => {
      const wrong = ["", "a", TOKEN.slice(0, 16), TOKEN.slice(0, -1), `${TOKEN}x`, "z".repeat(8000)];
      for (const route of ["/v1/functions", "/v1/functions/hello", "/v1/pool", "/metrics", "/healthz"]) {
        for (const token of wrong) {
          const res = await request(`${agent.adminUrl}${route}`, {
            headers: { authorization: `Bearer ${token}` },
          });
          assert.equal(res.statusCode, 401, `${route} with a ${token.length}-character token`);
          assert.match(await res.body.text(), /admin token/);
        }
      }
      const right = await request(`${agent.adminUrl}/v1/functions`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(right.statusCode, 200);
      await right.body.text();
    });

    // protection: the data plane serves no admin route (they live on their own port, behind the token)
    it("does not answer admin routes on the data port", async () => {
      const res = await request(`${agent.dataUrl}/v1/functions`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(res.statusCode, 404);
      await res.body.text();
    });

    /** Streams a body forever; resolves with the status line and how long until the agent closed the socket. */
    function endlessUpload(url: string, head: string) {
      const { hostname, port } = new URL(url);
      return new Promise<{ status: string; closedAfterMs: number }>((resolve) => {
        const t0 = Date.now();
        let text = "";
        const socket = connect({ host: hostname, port: Number(port) });
        socket.write(head);
        const chunk = `400\r\n${"a".repeat(1024)}\r\n`;
        const timer = setInterval(() => {
          if (!socket.destroyed) socket.write(chunk);
        }, 5);
        const giveUp = setTimeout(() => socket.destroy(), 8000);
        socket.on("data", (d) => {
          text += d.toString("latin1");
        });
        socket.on("error", () => undefined);
        socket.on("close", () => {
          clearInterval(timer);
          clearTimeout(giveUp);
          resolve({ status: text.split("\r\n")[0] ?? "", closedAfterMs: Date.now() - t0 });
        });
      });
    }

    // protection: a refused request's answer carries connection: close, so the client cannot keep streaming
    it("closes the connection of an unauthenticated upload instead of draining it", async () => {
      const res = await endlessUpload(
        agent.adminUrl,
        "PUT /v1/functions/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
      );
      assert.match(res.status, / 401 /);
      assert.ok(res.closedAfterMs < 3000, `closed after ${res.closedAfterMs} ms`);
    });

    // protection: readBody's 413 carries connection: close (data plane and control plane)
    it("closes the connection of an oversized streamed body after its 413", async () => {
      const data = await endlessUpload(
        agent.dataUrl,
        "POST /anything HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
      );
      assert.match(data.status, / 404 /, "unknown function: refused before reading");
      assert.ok(data.closedAfterMs < 3000, `closed after ${data.closedAfterMs} ms`);
      const deploy = await endlessUpload(
        agent.adminUrl,
        `PUT /v1/functions/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\n\r\n`,
      );
      assert.match(deploy.status, / 413 /);
      assert.ok(deploy.closedAfterMs < 3000, `closed after ${deploy.closedAfterMs} ms`);
    });
  });
});
