/**
 * Bad input through the real agent, beyond what test/e2e/agent.test.ts checks: hostile archives, header
 * and body limits, slow clients, invalid UTF-8, racing deploys, deploys during calls. Each one gets a
 * clear 4xx (or JSON-RPC error) with a message; the agent stays up; the earlier deployment is intact.
 */
import assert from "node:assert/strict";
import { connect } from "node:net";
import { Readable } from "node:stream";
import { request } from "undici";
import { HELLO_CALL, startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { rawZip } from "../helpers/raw-zip.ts";
import { HELLO_MODULE, helloBundle, type TarEntry, tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";

const ENV = {
  FAAS_CALL_TIMEOUT_MS: "3000",
  FAAS_MAX_BODY_BYTES: "65536",
  FAAS_MAX_FILES: "2000",
  FAAS_HEADERS_TIMEOUT_MS: "1000",
  FAAS_REQUEST_TIMEOUT_MS: "2000",
  FAAS_ADMIN_REQUEST_TIMEOUT_MS: "2000",
  FAAS_POOL_GENERIC: "2",
};

/** A module answering with a marker, so a call shows which deploy serves. */
const markedModule = (marker: string) =>
  `exports.Marked = class Marked { which() { return ${JSON.stringify(marker)}; } };`;

type RawResult = { status: number | null; closed: boolean; text: string; ms: number };

/** Writes `head` on a raw socket, then `drip` every `everyMs` until the server closes the connection. */
function slowClient(url: string, head: string, drip: string, everyMs: number, giveUpMs = 8000) {
  const { hostname, port } = new URL(url);
  return new Promise<RawResult>((resolve) => {
    const t0 = Date.now();
    let text = "";
    const socket = connect({ host: hostname, port: Number(port) }, () => socket.write(head));
    const timer = setInterval(() => {
      if (!socket.destroyed) socket.write(drip);
    }, everyMs);
    const done = (closed: boolean) => {
      clearInterval(timer);
      clearTimeout(giveUp);
      socket.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : null, closed, text, ms: Date.now() - t0 });
    };
    const giveUp = setTimeout(() => done(false), giveUpMs);
    socket.on("data", (d) => {
      text += d.toString("latin1");
    });
    socket.on("close", () => done(true));
    socket.on("error", () => undefined);
  });
}

/** Sends raw bytes as one request and reads the answer. */
function rawRequest(url: string, bytes: Buffer): Promise<RawResult> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const t0 = Date.now();
    let text = "";
    const socket = connect({ host: hostname, port: Number(port) }, () => socket.write(bytes));
    socket.on("data", (d) => {
      text += d.toString("latin1");
      if (/\r\n\r\n/.test(text)) socket.end();
    });
    socket.on("close", () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : null, closed: true, text, ms: Date.now() - t0 });
    });
    socket.on("error", () => undefined);
  });
}

describe("hardening: bad input", function () {
  this.timeout(60_000);
  let agent: TestAgent;
  let helloRecord: unknown;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent(ENV);
    const res = await agent.admin("PUT", "/v1/functions/hello", helloBundle());
    assert.equal(res.status, 201, JSON.stringify(res.json));
    helloRecord = res.json.function;
  });

  after(async () => {
    await agent?.close();
  });

  /** The agent is up, hello's record is exactly what was first deployed, and it still answers. */
  async function assertIntact() {
    const got = await agent.admin("GET", "/v1/functions/hello");
    assert.equal(got.status, 200);
    assert.deepEqual(got.json.function, helloRecord, "the earlier deployment is unchanged");
    const res = await agent.call("hello", HELLO_CALL);
    assert.equal(res.json().result, "Hello world!");
  }

  const messageOf = (res: { json: Record<string, unknown> }) =>
    (res.json.error as { message?: string } | undefined)?.message ?? "";

  describe("hostile archives", () => {
    const cases: Array<[string, string, () => Buffer, number, RegExp]> = [
      [
        "bundle.ts safeEntryPath rejects '..' after a folder",
        "a/../../x",
        () => helloBundle([{ name: "a/../../x.js", data: "x" }]),
        400,
        /"\.\." is not allowed/,
      ],
      [
        "bundle.ts safeEntryPath drops '.' and still sees '..'",
        "./../x",
        () => helloBundle([{ name: "./../x.js", data: "x" }]),
        400,
        /"\.\." is not allowed/,
      ],
      [
        "bundle.ts safeEntryPath treats backslashes as separators",
        "..\\..\\x",
        () => helloBundle([{ name: "..\\..\\x.js", data: "x" }]),
        400,
        /"\.\." is not allowed/,
      ],
      [
        "bundle.ts safeEntryPath rejects Windows drive paths",
        "C:\\x",
        () => helloBundle([{ name: "C:\\Windows\\x.js", data: "x" }]),
        400,
        /absolute paths are not allowed/,
      ],
      [
        "bundle.ts refuses tar hard links",
        "a hard link to /etc/shadow",
        () => helloBundle([{ name: "shadow", type: "1", linkname: "/etc/shadow" }]),
        400,
        /hard links are not allowed/,
      ],
      [
        "bundle.ts refuses FIFOs",
        "a FIFO",
        () => helloBundle([{ name: "pipe", type: "6" }]),
        400,
        /FIFO entries are not allowed/,
      ],
      [
        "bundle.ts checkMode refuses setgid",
        "a setgid file",
        () => helloBundle([{ name: "sg", data: "x", mode: 0o2755 }]),
        400,
        /setuid, setgid and sticky bits/,
      ],
      [
        "bundle.ts MAX_PATH_DEPTH",
        "nesting 40 folders deep",
        () => helloBundle([{ name: `${"d/".repeat(40)}x.js`, data: "x" }]),
        400,
        /nested deeper than 32 levels/,
      ],
      [
        "bundle.ts writeEntries refuses writing through an in-bundle symlink",
        "a file written through a symlinked folder",
        () =>
          helloBundle([
            { name: "up", type: "2", linkname: "." },
            { name: "up/x.js", data: "x" },
          ]),
        400,
        /lies inside the symlink/,
      ],
      [
        "bundle.ts EntryCollector maxFiles (a huge file count)",
        "5000 entries against a limit of 2000",
        () =>
          tarGz([
            { name: "index.js", data: HELLO_MODULE },
            ...Array.from({ length: 5000 }, (_, i): TarEntry => ({ name: `f/${i}`, data: "" })),
          ]),
        413,
        /more than 2000 entries/,
      ],
      [
        "yauzl's name validation, then bundle.ts safeEntryPath, reject '..' in zip names",
        "a zip entry ../x",
        () =>
          rawZip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "../x.js", data: "x" },
          ]),
        400,
        /invalid relative path|"\.\." is not allowed/,
      ],
      [
        "yauzl's name validation, then bundle.ts safeEntryPath, reject absolute zip names",
        "a zip entry /etc/x",
        () =>
          rawZip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "/etc/cron.d/x", data: "x" },
          ]),
        400,
        /absolute path/,
      ],
      [
        "bundle.ts refuses zip entries whose mode is a device",
        "a zip char device",
        () =>
          rawZip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "kmem", mode: 0o020644 },
          ]),
        400,
        /only files, folders and symlinks/,
      ],
      [
        "bundle.ts checkMode on zip modes",
        "a setuid zip entry",
        () =>
          rawZip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "su", data: "x", mode: 0o104755 },
          ]),
        400,
        /setuid/,
      ],
      [
        "yauzl validateEntrySizes (a bomb that declares 100 bytes and inflates to 32 MiB)",
        "a zip bomb declared small, real large",
        () =>
          rawZip([
            { name: "index.js", data: HELLO_MODULE },
            { name: "bomb", data: Buffer.alloc(32 * 1024 * 1024), declaredSize: 100, deflate: true },
          ]),
        400,
        /damaged|too many bytes/,
      ],
    ];
    for (const [protection, what, bundle, status, message] of cases) {
      it(`refuses ${what} with ${status} (protection: ${protection})`, async () => {
        const res = await agent.admin("PUT", "/v1/functions/hello", bundle());
        assert.equal(res.status, status, JSON.stringify(res.json));
        assert.match(messageOf(res), message);
        await assertIntact();
      });
    }

    // protection: safeEntryPath splits on "/" and "\" only: look-alike dots are plain names inside the bundle
    it("keeps unicode names as plain names inside the bundle (full-width dots are not '..')", async () => {
      const res = await agent.admin(
        "PUT",
        "/v1/functions/unicode-names",
        tarGz([
          { name: "index.js", data: HELLO_MODULE },
          { name: "\uff0e\uff0e/\u202egnp.js", data: "x" },
          { name: "caf\u00e9/\u6587\u4ef6.txt", data: "y" },
        ]),
      );
      assert.equal(res.status, 201, JSON.stringify(res.json));
      assert.equal((res.json.function as { fileCount: number }).fileCount, 3);
      await assertIntact();
    });
  });

  describe("headers, bodies, slow clients", () => {
    // protection: createServer maxHeaderSize (16 KiB) on the data plane
    it("answers a request with more than 16 KiB of headers with 431 (data plane)", async () => {
      const res = await request(`${agent.dataUrl}/hello`, {
        method: "POST",
        headers: { "x-big": "a".repeat(17 * 1024) },
        body: JSON.stringify(HELLO_CALL),
      });
      await res.body.text();
      assert.equal(res.statusCode, 431);
      await assertIntact();
    });

    // protection: createServer maxHeaderSize (16 KiB) on the control plane
    it("answers a request with more than 16 KiB of headers with 431 (control plane)", async () => {
      const res = await request(`${agent.adminUrl}/v1/functions`, {
        headers: { authorization: `Bearer ${agent.adminToken}`, "x-big": "a".repeat(17 * 1024) },
      });
      await res.body.text();
      assert.equal(res.statusCode, 431);
      await assertIntact();
    });

    // protection: server.headersTimeout (FAAS_HEADERS_TIMEOUT_MS) with a short connectionsCheckingInterval
    it("drops a client that sends its headers slowly, after the headers timeout (data plane)", async () => {
      const res = await slowClient(
        agent.dataUrl,
        "POST /hello HTTP/1.1\r\nHost: x\r\n",
        "X-Slow: 1\r\n",
        200,
      );
      assert.ok(res.closed, "the agent closed the connection");
      assert.ok(res.ms >= 900 && res.ms < 4000, `after ~1000 ms (${res.ms})`);
      assert.ok(res.status === null || res.status === 408, res.text);
      await assertIntact();
    });

    // protection: server.headersTimeout on the control plane (before the token is even checked)
    it("drops a client that sends its headers slowly (control plane)", async () => {
      const res = await slowClient(
        agent.adminUrl,
        "GET /v1/functions HTTP/1.1\r\nHost: x\r\n",
        "X: 1\r\n",
        200,
      );
      assert.ok(res.closed && res.ms < 4000, `closed after ${res.ms} ms`);
      await assertIntact();
    });

    // protection: server.requestTimeout (FAAS_REQUEST_TIMEOUT_MS): the whole body must arrive in time
    it("drops a client that sends its body slowly, after the request timeout (data plane)", async () => {
      const head =
        "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
      const res = await slowClient(agent.dataUrl, head, " ", 200);
      assert.ok(res.closed, "the agent closed the connection");
      assert.ok(res.ms >= 1500 && res.ms < 5000, `after ~2000 ms (${res.ms})`);
      await assertIntact();
    });

    // protection: server.requestTimeout (FAAS_ADMIN_REQUEST_TIMEOUT_MS) on deploys
    it("drops a deploy whose bundle arrives slowly (control plane)", async () => {
      const head = `PUT /v1/functions/hello HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${agent.adminToken}\r\nContent-Type: application/gzip\r\nContent-Length: 100000\r\n\r\n`;
      const res = await slowClient(agent.adminUrl, head, "\x1f", 200);
      assert.ok(res.closed && res.ms < 5000, `closed after ${res.ms} ms`);
      await assertIntact();
    });

    // protection: json.ts readBody counts streamed bytes (no content-length to trust)
    it("refuses a chunked request body over the limit with 413 (data plane)", async () => {
      const res = await request(`${agent.dataUrl}/hello`, {
        method: "POST",
        body: Readable.from(
          (function* () {
            for (let i = 0; i < 100; i++) yield Buffer.alloc(1024, 0x20);
          })(),
        ),
      });
      assert.equal(res.statusCode, 413);
      assert.match(await res.body.text(), /larger than the limit of 65536/);
      await assertIntact();
    });

    // protection: control-plane deploy reads the bundle through readBody with maxBundleBytes
    it("refuses a chunked bundle over the bundle limit with 413 (control plane)", async () => {
      const small = await startTestAgent({ FAAS_MAX_BUNDLE_BYTES: "4096" });
      try {
        const res = await request(`${small.adminUrl}/v1/functions/big`, {
          method: "PUT",
          headers: { authorization: `Bearer ${small.adminToken}`, "content-type": "application/gzip" },
          body: Readable.from(
            (function* () {
              for (let i = 0; i < 16; i++) yield Buffer.alloc(1024, 1);
            })(),
          ),
        });
        assert.equal(res.statusCode, 413);
        assert.match(await res.body.text(), /bundle limit/);
        assert.equal((await small.admin("GET", "/healthz")).status, 200);
      } finally {
        await small.close();
      }
    });

    // protection: control-plane content-type allow list
    it("refuses a bundle sent as application/json or multipart with 415", async () => {
      for (const type of ["application/json", "multipart/form-data; boundary=x"]) {
        const res = await agent.admin("PUT", "/v1/functions/hello", helloBundle(), { "content-type": type });
        assert.equal(res.status, 415, type);
        assert.match(messageOf(res), /application\/gzip/);
      }
      await assertIntact();
    });

    // protection: control-plane allow() answers 405 with an Allow header
    it("refuses a wrong method on a function with 405 and Allow", async () => {
      const res = await agent.admin("POST", "/v1/functions/hello", helloBundle());
      assert.equal(res.status, 405);
      assert.equal(res.headers.allow, "GET, PUT, DELETE");
      await assertIntact();
    });
  });

  describe("invalid UTF-8 and odd names", () => {
    // protection: jsonrpc.ts parseRpcBody decodes strictly (fatal TextDecoder)
    it("answers a JSON-RPC body with invalid UTF-8 inside a string with -32700", async () => {
      const body = Buffer.concat([
        Buffer.from('{"jsonrpc":"2.0","method":"HelloWorldService.helloWorld","params":["'),
        Buffer.from([0xff, 0xfe, 0xc3]),
        Buffer.from('"],"id":7}'),
      ]);
      const res = await agent.call("hello", body);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.json().error.code, -32700);
      assert.match(res.json().error.message, /not valid UTF-8/);
      await assertIntact();
    });

    // protection: control-plane decodes the name inside try/catch (URIError -> 400, not 500)
    it("refuses a function name with percent-escaped invalid UTF-8 with 400 (control plane)", async () => {
      for (const name of ["%ff", "a%c3", "%e2%82"]) {
        const res = await agent.admin("PUT", `/v1/functions/${name}`, helloBundle());
        assert.equal(res.status, 400, `${name}: ${JSON.stringify(res.json)}`);
        assert.match(messageOf(res), /not valid UTF-8/);
        assert.equal((await agent.admin("GET", `/v1/functions/${name}`)).status, 400);
      }
      await assertIntact();
    });

    // protection: checkFunctionName after decoding: an escaped "/" or ".." cannot reach the store
    it("refuses escaped slashes, dots and unicode in function names with 400", async () => {
      for (const name of ["..%2f..%2fetc", "a%2fb", "caf%c3%a9", "a%00b", "%20hello"]) {
        const res = await agent.admin("PUT", `/v1/functions/${name}`, helloBundle());
        assert.equal(res.status, 400, `${name}: ${JSON.stringify(res.json)}`);
        assert.match(messageOf(res), /invalid function name/);
      }
      // The URL parser resolves an escaped ".." segment: no function route is reached at all.
      assert.equal((await agent.admin("PUT", "/v1/functions/%2e%2e", helloBundle())).status, 404);
      await assertIntact();
    });

    // protection: data plane looks names up verbatim: invalid UTF-8 or raw bytes are just unknown names
    it("answers calls to names with invalid UTF-8 (escaped or raw bytes) with 404 or 400, never 5xx", async () => {
      const escaped = await agent.call("x", HELLO_CALL, { path: "/%ff%fe" });
      assert.equal(escaped.status, 404);
      const raw = await rawRequest(
        agent.dataUrl,
        Buffer.concat([
          Buffer.from("POST /"),
          Buffer.from([0xff, 0xc3]),
          Buffer.from(" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        ]),
      );
      assert.ok(raw.status === 400 || raw.status === 404, raw.text);
      await assertIntact();
    });
  });

  describe("deploys racing each other and calls", () => {
    // protection: Registry.withNameLock serialises deploys of one name; commit writes one atomic record
    it("10 concurrent deploys of different code to one name: each ends 200/201 or a clean error, the final record matches the code served", async () => {
      const markers = Array.from({ length: 10 }, (_, i) => `build-${i}`);
      const bundles = markers.map((m) => tarGz([{ name: "index.js", data: markedModule(m) }]));
      const results = await Promise.all(bundles.map((b) => agent.admin("PUT", "/v1/functions/racer", b)));
      for (const r of results) {
        assert.ok(
          [200, 201].includes(r.status) || (r.status === 503 && messageOf(r).length > 0),
          `${r.status} ${JSON.stringify(r.json)}`,
        );
      }
      assert.equal(results.filter((r) => r.status === 201).length, 1, "exactly one created the function");
      const ok = results.filter((r) => r.status < 300);
      const revisions = ok
        .map((r) => (r.json.function as { revision: number }).revision)
        .sort((a, b) => a - b);
      assert.deepEqual(
        revisions,
        Array.from({ length: ok.length }, (_, i) => i + 1),
        "revisions in order",
      );
      const final = (await agent.admin("GET", "/v1/functions/racer")).json.function as { codeHash: string };
      const winner = results.findIndex(
        (r) => r.status < 300 && (r.json.function as { codeHash: string }).codeHash === final.codeHash,
      );
      assert.ok(winner >= 0, "the stored record is one of the deploys");
      const served = await agent.call("racer", { jsonrpc: "2.0", method: "Marked.which", params: [], id: 1 });
      assert.equal(served.json().result, markers[winner], "the code served matches the record");
      await assertIntact();
    });

    // protection: deploy swaps the record only after the new code loaded; pool.retireFunction lets calls finish
    it("keeps serving every call while the function is redeployed three times", async () => {
      const deploy = (m: string) =>
        agent.admin("PUT", "/v1/functions/live", tarGz([{ name: "index.js", data: markedModule(m) }]));
      assert.ok([200, 201].includes((await deploy("v0")).status));
      let stop = false;
      const seen = new Set<string>();
      const failures: string[] = [];
      const caller = async () => {
        while (!stop) {
          const res = await agent.call("live", { jsonrpc: "2.0", method: "Marked.which", params: [], id: 1 });
          if (res.status !== 200) failures.push(`${res.status} ${res.text}`);
          else seen.add(res.json().result as string);
        }
      };
      const callers = [caller(), caller(), caller()];
      for (const m of ["v1", "v2", "v3"]) assert.equal((await deploy(m)).status, 200);
      // Calls queued for retired code wait for a fresh instance: give the callers time to reach v3.
      await waitFor("a caller to reach v3", () => seen.has("v3"));
      stop = true;
      await Promise.all(callers);
      assert.deepEqual(failures, [], "no call failed during the redeploys");
      assert.ok(seen.has("v3"), `the last deploy serves (${[...seen].join(", ")})`);
      await assertIntact();
    });
  });
});
