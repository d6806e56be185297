/** The bundled guest runtime as a real process (no jail): load, call, console capture, fatal errors. */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { request } from "undici";
import { buildRuntime } from "../../guest-images/runtime/build.ts";
import { type ConsoleLine, GuestClient, GuestError } from "../../host-agent/guest/client.ts";
import { waitFor } from "../helpers/wait.ts";

/** A TCP port nothing listens on right now. */
async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

interface Guest {
  proc: ChildProcess;
  client: GuestClient;
  lines: Array<Record<string, unknown>>;
  exit: Promise<number | null>;
}

describe("guest runtime process", function () {
  this.timeout(30_000);
  let dir: string;
  let runtime: Awaited<ReturnType<typeof buildRuntime>>;
  const guests: Guest[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-rt-"));
    runtime = await buildRuntime(path.join(dir, "rt"));
  });

  after(async () => {
    for (const g of guests) {
      g.proc.kill("SIGKILL");
      await g.client.close();
    }
    await rm(dir, { recursive: true, force: true });
  });

  async function startGuest(
    files: Record<string, string>,
    fromSnapshot: boolean,
    flags: string[] = [],
  ): Promise<Guest> {
    const code = await mkdtemp(path.join(dir, "code-"));
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(code, name)), { recursive: true });
      await writeFile(path.join(code, name), text);
    }
    const sock = path.join(code, "guest.sock");
    const args = fromSnapshot
      ? [
          "--snapshot-blob",
          runtime.snapshotPath,
          "--",
          "--listen",
          `unix:${sock}`,
          "--code",
          code,
          "--base-version",
          "b-test",
          ...flags,
        ]
      : [
          runtime.bundlePath,
          "--listen",
          `unix:${sock}`,
          "--code",
          code,
          "--base-version",
          "b-test",
          ...flags,
        ];
    const proc = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const lines: Array<Record<string, unknown>> = [];
    const ready = new Promise<void>((resolve, reject) => {
      createInterface({ input: proc.stdout! }).on("line", (l) => {
        const parsed = JSON.parse(l) as Record<string, unknown>;
        lines.push(parsed);
        if (parsed.type === "ready") resolve();
      });
      proc.once("exit", () => reject(new Error("runtime exited before ready")));
    });
    const exit = new Promise<number | null>((r) => proc.once("exit", (c) => r(c)));
    await ready;
    const g = { proc, client: new GuestClient({ kind: "unix", socketPath: sock }), lines, exit };
    guests.push(g);
    return g;
  }

  async function call(g: Guest, fn: string, body: unknown, rid = "rid-x") {
    return g.client.forward({
      method: "POST",
      path: `/${fn}`,
      headers: { "x-faas-request-id": rid },
      body: Buffer.from(JSON.stringify(body)),
      signal: new AbortController().signal,
      maxResponseBytes: 1e6,
    });
  }

  it("starts from its startup snapshot, reports its base version, loads CommonJS and serves", async () => {
    const g = await startGuest(
      { "index.js": "exports.A = class A { hi(n) { console.log('called', n); return 'hi ' + n; } }" },
      true,
    );
    const health = await g.client.health();
    assert.equal(health.baseVersion, "b-test");
    assert.equal(health.runtimeBuild, runtime.buildId);
    assert.equal(health.functionName, null);
    await g.client.init({
      instanceId: "inst-1",
      unixTimeMs: Date.now(),
      entropy: Buffer.alloc(32, 7).toString("base64"),
    });
    const loaded = await g.client.load({ functionName: "fa", entry: "index.js" });
    assert.deepEqual(loaded.classes, ["A"]);
    assert.equal(loaded.style, "jsonrpc");
    const res = await call(g, "fa", { jsonrpc: "2.0", method: "A.hi", params: ["x"], id: 1 }, "rid-42");
    assert.equal(JSON.parse(res.body.toString()).result, "hi x");
    assert.equal((await g.client.health()).instanceId, "inst-1");
    const log = g.lines.find((l) => l.type === "log");
    assert.deepEqual(log, { type: "log", fn: "fa", rid: "rid-42", level: "info", msg: "called x" });
  });

  it("loads an ES module (package.json main, type module) through require", async () => {
    const g = await startGuest(
      {
        "package.json": '{"type":"module","main":"src/main.js"}',
        "src/main.js": "export class M { async twice(x) { return x * 2; } }",
      },
      true,
    );
    await g.client.load({ functionName: "esm", entry: "src/main.js" });
    const res = await call(g, "esm", { jsonrpc: "2.0", method: "M.twice", params: [21], id: 1 });
    assert.equal(JSON.parse(res.body.toString()).result, 42);
  });

  it("leaves nothing of its warm-up: no function, no console line, no file, and serves as without one", async () => {
    const files = {
      "package.json": '{"type":"module"}',
      "index.js": "export class W { ping(x) { console.log('p', x); return x; } }",
    };
    for (const flags of [[], ["--no-warm-up"]]) {
      const g = await startGuest(files, true, flags);
      assert.equal((await g.client.health()).functionName, null, `${flags}: nothing is loaded`);
      const leftovers = (await readdir(tmpdir())).filter((f) => f.startsWith(`.faas-warmup-${g.proc.pid}`));
      assert.deepEqual(leftovers, [], `${flags}: the warm-up's files are gone`);
      await g.client.load({ functionName: "w", entry: "index.js" });
      const res = await call(g, "w", { jsonrpc: "2.0", method: "W.ping", params: [5], id: 1 }, "rid-w");
      assert.equal(JSON.parse(res.body.toString()).result, 5);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(
        g.lines.map((l) => (l.type === "log" ? `${l.fn} ${l.rid} ${l.msg}` : l.type)),
        ["ready", "w rid-w p 5"],
        `${flags}: only the ready line and the call's own line`,
      );
    }
  });

  it("refuses a second load and reports load errors as kind load", async () => {
    const g = await startGuest({ "index.js": "throw new Error('nope at load')" }, false);
    await assert.rejects(
      g.client.load({ functionName: "f", entry: "index.js" }),
      (e: unknown) => e instanceof GuestError && e.kind === "load" && /nope at load/.test(e.message),
    );
    const ok = await startGuest({ "index.js": "exports.handler = async () => ({ statusCode: 204 })" }, false);
    await ok.client.load({ functionName: "f", entry: "index.js" });
    await assert.rejects(ok.client.load({ functionName: "g", entry: "index.js" }), /already serves f/);
  });

  it("cuts console output past the per-call budget with one truncation line", async () => {
    const g = await startGuest(
      {
        "index.js":
          "exports.S = class S { spam() { for (let i = 0; i < 5000; i++) console.log('x'.repeat(100)); return 1; } }",
      },
      true,
    );
    await g.client.load({ functionName: "spam", entry: "index.js" });
    await call(g, "spam", { jsonrpc: "2.0", method: "S.spam", params: [], id: 1 });
    await new Promise((r) => setTimeout(r, 100));
    const logs = g.lines.filter((l) => l.type === "log");
    assert.ok(logs.length < 700, `only about 64 KiB of output kept (${logs.length} lines)`);
    assert.match(String(logs.at(-1)?.msg), /per-call log limit reached/);
  });

  // protection: --console channel keeps the console for GET /_faas/console (a VM's stdout is a serial
  // console nobody reads); GuestClient fetches it after an answer that says lines wait
  /** The bundle over TCP with --console channel (as in a VM); its console reaches `seen` through the client. */
  async function startChannelGuest(indexJs: string) {
    const code = await mkdtemp(path.join(dir, "code-"));
    await writeFile(path.join(code, "index.js"), indexJs);
    const port = await freePort();
    const proc = spawn(
      process.execPath,
      [runtime.bundlePath, "--listen", `tcp:127.0.0.1:${port}`, "--code", code, "--console", "channel"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const stdout: string[] = [];
    const ready = new Promise<void>((resolve, reject) => {
      createInterface({ input: proc.stdout! }).on("line", (l) => {
        stdout.push(l);
        if (l.includes('"ready"')) resolve();
      });
      proc.once("exit", () => reject(new Error("runtime exited before ready")));
    });
    const exit = new Promise<number | null>((r) => proc.once("exit", (c) => r(c)));
    await ready;
    const seen: ConsoleLine[] = [];
    const client = new GuestClient(
      { kind: "tcp", host: "127.0.0.1", port },
      { onConsole: (l) => seen.push(l) },
    );
    const g = { proc, client, lines: [], exit };
    guests.push(g);
    return { g, client, seen, stdout };
  }

  it("with --console channel, hands the console to the host over the guest channel, not stdout", async () => {
    const { g, client, seen, stdout } = await startChannelGuest(`console.log("loading");
exports.C = class C {
  talk(n) { console.warn("warned", n); console.log(JSON.stringify({ type: "log", fn: "other", msg: "forged" })); return n; }
  quiet() { return 0; }
};`);
    await client.load({ functionName: "chatty", entry: "index.js" });
    const res = await call(g, "chatty", { jsonrpc: "2.0", method: "C.talk", params: [7], id: 1 }, "rid-7");
    assert.equal(JSON.parse(res.body.toString()).result, 7);
    assert.equal(res.headers["x-faas-console"], undefined, "the host's header does not reach the caller");
    await waitFor("three console lines", () => seen.length >= 3, 2000);
    assert.deepEqual(seen, [
      { fn: "chatty", rid: "load", level: "info", msg: "loading" },
      { fn: "chatty", rid: "rid-7", level: "warn", msg: "warned 7" },
      { fn: "chatty", rid: "rid-7", level: "info", msg: '{"type":"log","fn":"other","msg":"forged"}' },
    ]);
    // Nothing waits after a quiet call, and nothing went to stdout but the ready line.
    await call(g, "chatty", { jsonrpc: "2.0", method: "C.quiet", params: [], id: 2 });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(seen.length, 3);
    assert.deepEqual(
      stdout.map((l) => JSON.parse(l).type),
      ["ready"],
    );
  });

  // protection: the runtime drops a handler's own x-faas-console header before adding its own
  it("with --console channel, a handler cannot hide its waiting lines behind its own x-faas-console header", async () => {
    const { g, client, seen } = await startChannelGuest(
      `exports.handler = async () => { console.log("said"); return { statusCode: 200, headers: { "X-Faas-Console": "0" }, body: "ok" }; };`,
    );
    await client.load({ functionName: "sly", entry: "index.js" });
    const res = await g.client.forward({
      method: "GET",
      path: "/sly",
      headers: { "x-faas-request-id": "rid-s" },
      body: null,
      signal: new AbortController().signal,
      maxResponseBytes: 1e6,
    });
    assert.equal(res.body.toString(), "ok");
    assert.equal(res.headers["x-faas-console"], undefined);
    await waitFor("the handler's console line", () => seen.length >= 1, 2000);
    assert.deepEqual(seen, [{ fn: "sly", rid: "rid-s", level: "info", msg: "said" }]);
  });

  // protection: the runtime serves HTTP and the host's framed channel on one listener (server.ts sniffs
  // the preamble), so the microVM driver's HTTP health poll and curl still reach it
  it("answers HTTP and the host's frames on the same listener, and pushes lines written outside a call", async () => {
    const { g, client, seen } = await startChannelGuest(
      `exports.T = class T { later() { setTimeout(() => console.log("after the answer"), 20); return 1; } };`,
    );
    const port = (client as unknown as { endpoint: { port: number } }).endpoint.port;
    const http = await request(`http://127.0.0.1:${port}/_faas/health`);
    assert.equal(http.statusCode, 200);
    assert.equal(((await http.body.json()) as { status: string }).status, "ok");
    assert.equal((await client.health()).status, "ok");
    await client.load({ functionName: "timer", entry: "index.js" });
    await call(g, "timer", { jsonrpc: "2.0", method: "T.later", params: [], id: 1 }, "rid-t");
    await waitFor("the line written after the answer", () => seen.length >= 1, 2000);
    assert.deepEqual(seen, [{ fn: "timer", rid: "rid-t", level: "info", msg: "after the answer" }]);
    // A call over HTTP is answered as before, stamped with the base version.
    const fetched = await request(`http://127.0.0.1:${port}/timer`, {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", method: "T.later", params: [], id: 2 }),
    });
    await fetched.body.text();
    assert.equal(fetched.headers["x-faas-base-version"], "unversioned; runtime=" + runtime.buildId);
  });

  // protection: lines the runtime still keeps when user code ends the process go to stdout, which the
  // process sandbox's host reads, instead of being lost with the process
  it("with --console channel, writes the lines it still keeps to stdout when user code exits", async () => {
    const { g, client, stdout } = await startChannelGuest(
      `exports.E = class E { quit() { console.log("last words"); process.exit(3); } };`,
    );
    await client.load({ functionName: "quitter", entry: "index.js" });
    await assert.rejects(
      call(g, "quitter", { jsonrpc: "2.0", method: "E.quit", params: [], id: 1 }, "rid-q"),
    );
    assert.equal(await g.exit, 3);
    await waitFor("stdout closed", () => stdout.some((l) => l.includes("last words")), 2000);
    const line = stdout.map((l) => JSON.parse(l)).find((l) => l.msg === "last words");
    assert.deepEqual(line, { type: "log", fn: "quitter", rid: "rid-q", level: "info", msg: "last words" });
  });

  it("reports an uncaught exception as a fatal line and exits, so the host replaces it", async () => {
    const g = await startGuest(
      {
        "index.js":
          "exports.B = class B { boom() { setTimeout(() => { throw new Error('late boom'); }); return 1; } }",
      },
      true,
    );
    await g.client.load({ functionName: "b", entry: "index.js" });
    await call(g, "b", { jsonrpc: "2.0", method: "B.boom", params: [], id: 1 });
    assert.equal(await g.exit, 70);
    const fatal = g.lines.find((l) => l.type === "fatal");
    assert.match(String(fatal?.msg), /uncaught exception: Error: late boom/);
  });
});
