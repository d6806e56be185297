/**
 * GuestClient against a guest that lies: in a microVM the runtime shares its process with user code, so
 * every answer it sends is untrusted. The host bounds what it reads and logs, and cannot be made to loop.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import {
  CHANNEL_PREAMBLE,
  decodeRequest,
  encodeConsole,
  encodeResponse,
  FrameReader,
} from "../../contracts/guest-channel.ts";
import type { GuestLogLine } from "../../contracts/guest-protocol.ts";
import {
  CallCancel,
  type ConsoleLine,
  GuestClient,
  GuestError,
  ResponseTooLargeError,
} from "../../host-agent/guest/client.ts";
import { waitFor } from "../helpers/wait.ts";

describe("guest client against a hostile guest", () => {
  let server: Server;
  let port: number;
  let consoleFetches = 0;
  let consoleLines = 0;
  /** What the guest pushes before a call's answer: a console batch of this many lines (0: none). */
  let pushLines = 0;
  /** A call's answer body of this many bytes. */
  let answerBytes = 2;

  const lines = (n: number): GuestLogLine[] =>
    Array.from({ length: n }, (_, i) => ({
      type: "log",
      fn: "someone-else",
      rid: `r${i}`,
      level: i === 0 ? ("shout" as "info") : "info",
      msg: `line ${i}`,
    }));

  // The guest's side of the framed channel, written from the contract: every answer it gives is a lie
  // the host must survive.
  before(async () => {
    server = createServer((socket) => {
      let preamble = true;
      const reader = new FrameReader(
        (_type, id, payload) => {
          const req = decodeRequest(payload);
          const json = (body: unknown, headers: Record<string, string> = {}) =>
            socket.write(
              encodeResponse(
                id,
                200,
                { "content-type": "application/json", ...headers },
                JSON.stringify(body),
              ),
            );
          if (req.path === "/_faas/console") {
            consoleFetches++;
            // Says more lines wait, on the console answer itself: must not start another fetch.
            json({ lines: lines(consoleLines), dropped: 3 }, { "x-faas-console": "999" });
          } else if (req.path === "/_faas/health") json({ status: "ok", pad: "x".repeat(3 * 1024 * 1024) });
          else if (req.path === "/_faas/load")
            json({ functionName: "mine", style: "jsonrpc", initMs: 1, classes: [] });
          else {
            if (pushLines > 0) socket.write(encodeConsole(lines(pushLines), 7));
            socket.write(encodeResponse(id, 200, { "x-faas-console": "5" }, "x".repeat(answerBytes)));
          }
        },
        () => 1 << 30,
        () => socket.destroy(),
      );
      socket.on("data", (chunk: Buffer) => {
        if (preamble) {
          assert.ok(
            chunk.subarray(0, CHANNEL_PREAMBLE.length).equals(CHANNEL_PREAMBLE),
            "the host opens with the preamble",
          );
          preamble = false;
          chunk = chunk.subarray(CHANNEL_PREAMBLE.length);
        }
        reader.push(chunk);
      });
      socket.on("error", () => undefined);
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
    pushLines = 0;
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

  // protection: GuestClient bounds a console batch pushed beside an answer as it bounds a fetch, and has it
  // before the answer
  it("takes at most 2,000 lines of a pushed batch, before the answer it came with, attributed to its function", async () => {
    consoleFetches = 0;
    consoleLines = 0;
    pushLines = 5000;
    const seen: ConsoleLine[] = [];
    const client = new GuestClient(
      { kind: "tcp", host: "127.0.0.1", port },
      { onConsole: (l) => seen.push(l), consoleChannel: true },
    );
    await client.load({ functionName: "mine", entry: "index.js" });
    await call(client);
    assert.ok(seen.length >= 2001, `the pushed lines are there with the answer (${seen.length})`);
    assert.deepEqual(seen[1], { fn: "mine", rid: "r1", level: "info", msg: "line 1" });
    assert.deepEqual(seen[2000], {
      fn: "mine",
      rid: null,
      level: "warn",
      msg: "3007 console lines dropped: more than the guest keeps, or the host takes, between two reads",
    });
    pushLines = 0;
    await client.close();
  });

  // protection: GuestClient refuses an answer past maxResponseBytes from its frame's length, before
  // buffering it, and the next call gets a new connection
  it("refuses an answer larger than the call's limit, then serves the next call", async () => {
    const client = new GuestClient({ kind: "tcp", host: "127.0.0.1", port });
    answerBytes = 4 << 20;
    await assert.rejects(
      call(client),
      (e: unknown) =>
        e instanceof ResponseTooLargeError && /larger than the limit of 1048576 bytes/.test(e.message),
    );
    answerBytes = (1 << 20) + 1;
    await assert.rejects(
      call(client),
      (e: unknown) =>
        e instanceof ResponseTooLargeError && /is 1048577 bytes; the limit is 1048576/.test(e.message),
    );
    answerBytes = 2;
    assert.equal((await call(client)).body.toString(), "xx");
    await client.close();
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

describe("guest client, several calls on one connection", () => {
  // A guest that holds each call's answer until told, and answers in whatever order it is told.
  let server: Server;
  let port: number;
  let connections = 0;
  const held = new Map<string, () => void>();

  before(async () => {
    server = createServer((socket) => {
      connections++;
      let preamble = true;
      const reader = new FrameReader(
        (_type, id, payload) => {
          const req = decodeRequest(payload);
          const name = req.path.slice(1);
          held.set(name, () => socket.write(encodeResponse(id, 200, {}, `answer to ${name}`)));
        },
        () => 1 << 30,
        () => socket.destroy(),
      );
      socket.on("data", (chunk: Buffer) => {
        if (preamble) {
          preamble = false;
          chunk = chunk.subarray(CHANNEL_PREAMBLE.length);
        }
        reader.push(chunk);
      });
      socket.on("error", () => undefined);
    }).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    port = (server.address() as { port: number }).port;
  });

  after(async () => {
    await new Promise((r) => server.close(r));
  });

  const call = (client: GuestClient, name: string, signal: CallCancel | AbortSignal) =>
    client.forward({
      method: "POST",
      path: `/${name}`,
      headers: {},
      body: null,
      signal,
      maxResponseBytes: 1 << 20,
    });

  it("matches answers to calls by id whatever their order, and an aborted call leaves the others be", async () => {
    const client = new GuestClient({ kind: "tcp", host: "127.0.0.1", port });
    const cancel = new CallCancel();
    const a = call(client, "a", new AbortController().signal);
    const b = call(client, "b", cancel);
    const c = call(client, "c", new AbortController().signal);
    await waitFor("all three calls at the guest", () => held.size === 3);
    held.get("c")!();
    assert.equal((await c).body.toString(), "answer to c");
    cancel.abort(new Error("past its deadline"));
    await assert.rejects(b, /past its deadline/);
    held.get("b")!(); // the late answer is read and dropped
    held.get("a")!();
    assert.equal((await a).body.toString(), "answer to a");
    assert.equal(connections, 1, "one connection carried every call, the aborted one too");
    held.clear();
    await client.close();
  });
});
