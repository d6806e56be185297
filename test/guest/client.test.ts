/**
 * GuestClient against a guest that lies: in a microVM the runtime shares its process with user code, so
 * every answer it sends is untrusted. The host bounds what it reads and logs, and cannot be made to loop.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { type ConsoleLine, GuestClient, GuestError } from "../../host-agent/guest/client.ts";
import { waitFor } from "../helpers/wait.ts";

describe("guest client against a hostile guest", () => {
  let server: Server;
  let port: number;
  let consoleFetches = 0;
  let consoleLines = 0;

  before(async () => {
    server = createServer((req, res) => {
      if (req.url === "/_faas/console") {
        consoleFetches++;
        const lines = Array.from({ length: consoleLines }, (_, i) => ({
          type: "log",
          fn: "someone-else",
          rid: `r${i}`,
          level: i === 0 ? "shout" : "info",
          msg: `line ${i}`,
        }));
        // Says more lines wait, on the console answer itself: must not start another fetch.
        res.writeHead(200, { "content-type": "application/json", "x-faas-console": "999" });
        res.end(JSON.stringify({ lines, dropped: 3 }));
        return;
      }
      if (req.url === "/_faas/health") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ status: "ok", pad: "x".repeat(3 * 1024 * 1024) }));
        return;
      }
      if (req.url === "/_faas/load") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ functionName: "mine", style: "jsonrpc", initMs: 1, classes: [] }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "x-faas-console": "5" });
      res.end("{}");
    }).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    port = (server.address() as { port: number }).port;
  });

  after(async () => {
    await new Promise((r) => server.close(r));
  });

  const call = (client: GuestClient) =>
    client.forward({
      method: "POST",
      path: "/mine",
      headers: {},
      body: Buffer.from("{}"),
      signal: new AbortController().signal,
      maxResponseBytes: 1 << 20,
    });

  // protection: GuestClient caps control answers at 2 MiB, lines per console fetch at 2,000, never
  // fetches again because of the console answer's own header, and attributes lines to its own function
  it("takes at most 2,000 lines per fetch, counts the rest, attributes them to its function, and does not loop", async () => {
    consoleFetches = 0;
    consoleLines = 5000;
    const seen: ConsoleLine[] = [];
    const client = new GuestClient(
      { kind: "tcp", host: "127.0.0.1", port },
      { onConsole: (l) => seen.push(l), consoleChannel: true },
    );
    await client.load({ functionName: "mine", entry: "index.js" });
    const answer = await call(client);
    assert.equal(answer.headers["x-faas-console"], undefined);
    await waitFor("the fetched lines", () => seen.length >= 2001, 1000);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(consoleFetches, 1, "one fetch for one answer");
    assert.equal(seen.length, 2001);
    assert.deepEqual(seen[0], { fn: "mine", rid: "r0", level: "info", msg: "line 0" });
    assert.deepEqual(seen.at(-1), {
      fn: "mine",
      rid: null,
      level: "warn",
      msg: "3003 console lines dropped: more than the guest keeps, or the host takes, between two reads",
    });
    await client.close();
  });

  it("fetches waiting lines before a stop only from a channel-console guest", async () => {
    consoleFetches = 0;
    consoleLines = 1;
    const seen: ConsoleLine[] = [];
    const channel = new GuestClient(
      { kind: "tcp", host: "127.0.0.1", port },
      { onConsole: (l) => seen.push(l), consoleChannel: true },
    );
    await channel.flushConsole(1000);
    assert.equal(consoleFetches, 1);
    assert.equal(seen[0]?.msg, "line 0");
    const stdoutGuest = new GuestClient({ kind: "tcp", host: "127.0.0.1", port }, { onConsole: () => {} });
    await stdoutGuest.flushConsole(1000);
    assert.equal(consoleFetches, 1, "a stdout-console guest has nothing waiting");
    await channel.close();
    await stdoutGuest.close();
  });

  it("refuses a control answer over 2 MiB", async () => {
    const client = new GuestClient({ kind: "tcp", host: "127.0.0.1", port });
    await assert.rejects(
      client.health(),
      (e: unknown) =>
        e instanceof GuestError && /answer to health is larger than 2097152 bytes/.test(e.message),
    );
    await client.close();
  });
});
