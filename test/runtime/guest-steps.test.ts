/**
 * The runtime's microVM-only steps, run for real in runtime processes: the code disk mounted on load
 * (a mount command double that records the order), the control secret, and what init does to a clone's
 * random state and clock. Clones are simulated with a V8 startup snapshot taken after node's random
 * caches were filled, and the same --random-seed: every process started from it begins in the same state.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { execa } from "execa";
import { Agent, request } from "undici";
import { CONTROL_SECRET_HEADER } from "../../contracts/guest-protocol.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { bundleStampedRuntime } from "../../guest-images/runtime/build.ts";
import { GuestClient, type GuestError } from "../../host-agent/guest/client.ts";
import { jailCommand } from "../../host-agent/sandbox/process/bwrap-args.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const entropy = () => randomBytes(32).toString("base64");
const secret = () => randomBytes(32).toString("base64url");

interface Runtime {
  proc: ChildProcess;
  sock: string;
  client: (controlSecret?: string) => GuestClient;
  stderr: () => string;
}

describe("guest runtime: microVM steps", function () {
  this.timeout(60_000);
  let dir: string;
  let bundle: string;
  const procs: ChildProcess[] = [];
  const clients: GuestClient[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-guest-steps-"));
    bundle = (await bundleStampedRuntime(path.join(dir, "rt"))).bundlePath;
  });

  after(async () => {
    for (const p of procs) p.kill("SIGKILL");
    for (const c of clients) await c.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function start(
    code: string,
    flags: string[],
    opts: { node?: string[]; wrap?: string[] } = {},
  ): Promise<Runtime> {
    const sock = path.join(await mkdtemp(path.join(dir, "run-")), "guest.sock");
    const argv = [
      ...(opts.node ?? [bundle]),
      "--listen",
      `unix:${sock}`,
      "--code",
      code,
      "--console",
      "channel",
      ...flags,
    ];
    const [file, ...args] = [...(opts.wrap ?? []), process.execPath, ...argv];
    const proc = spawn(file!, args, { stdio: ["ignore", "pipe", "pipe"] });
    procs.push(proc);
    let err = "";
    proc.stderr!.on("data", (c: Buffer) => {
      err += c.toString();
    });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: proc.stdout! }).on("line", (l) => {
        if ((JSON.parse(l) as { type?: string }).type === "ready") resolve();
      });
      proc.once("exit", (c) => reject(new Error(`runtime exited (${c}) before ready: ${err}`)));
    });
    return {
      proc,
      sock,
      stderr: () => err,
      client: (controlSecret) => {
        const c = new GuestClient({ kind: "unix", socketPath: sock, controlSecret });
        clients.push(c);
        return c;
      },
    };
  }

  async function codeDir(files: Record<string, string> = {}): Promise<string> {
    const code = await mkdtemp(path.join(dir, "code-"));
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(code, name), text);
    return code;
  }

  describe("code disk read from its block device on load (--code-device, OSv)", () => {
    async function rofsDisk(files: Record<string, string>): Promise<string> {
      const src = await codeDir(files);
      const disk = path.join(dir, `${path.basename(src)}.rofs`);
      await buildCodeDisk(src, disk, { format: "rofs", sizeBytes: 1024 * 1024 });
      return disk;
    }

    it("unpacks the disk into --code at load, after the disk was swapped, and loads from there", async () => {
      const target = path.join(dir, "unpacked-code");
      const device = path.join(dir, "vblk1");
      // What the VM had at boot (the placeholder), then the function's disk swapped in before load.
      await copyFile(await rofsDisk({}), device);
      const rt = await start(target, ["--code-device", device]);
      await copyFile(
        await rofsDisk({ "index.js": 'exports.P = class P { ping() { return "pong"; } };' }),
        device,
      );
      const client = rt.client();
      await client.init({ instanceId: "i-d", unixTimeMs: Date.now(), entropy: entropy() });
      const loaded = await client.load({ functionName: "fa" } as never);
      assert.deepEqual(loaded.classes, ["P"]);
      assert.ok(existsSync(path.join(target, "index.js")));
    });

    it("answers 422 naming the device when it holds no ROFS image", async () => {
      const device = path.join(dir, "not-rofs");
      await writeFile(device, Buffer.alloc(4096, 7));
      const rt = await start(path.join(dir, "unpacked-2"), ["--code-device", device]);
      const client = rt.client();
      await client.init({ instanceId: "i-e", unixTimeMs: Date.now(), entropy: entropy() });
      await assert.rejects(client.load({ functionName: "fa", entry: "index.js" }), (err: GuestError) => {
        assert.equal(err.status, 422);
        assert.match(err.message, /code disk .*not-rofs: bad ROFS magic/);
        return true;
      });
    });
  });

  describe("code disk mounted on load (--code-mount)", () => {
    /** A stand-in for /bin/remount-code: records that it ran, then makes the function's files appear. */
    async function mountDouble(code: string, exitCode = 0): Promise<{ cmd: string; log: string }> {
      const log = path.join(dir, `mount-${path.basename(code)}.log`);
      const cmd = path.join(dir, `mount-${path.basename(code)}.sh`);
      await writeFile(
        cmd,
        [
          "#!/bin/sh",
          `echo "mount $(ls -A '${code}' | wc -l)" >> '${log}'`,
          exitCode === 0
            ? `echo 'exports.P = class P { ping() { return "pong"; } };' > '${code}/index.js'`
            : `echo "mount: mounting /dev/vdb on /code failed: Invalid argument" >&2; exit ${exitCode}`,
          "",
        ].join("\n"),
      );
      await chmod(cmd, 0o755);
      return { cmd, log };
    }

    it("runs the mount command before it resolves the entry, once", async () => {
      const code = await codeDir();
      const { cmd, log } = await mountDouble(code);
      const rt = await start(code, ["--code-mount", cmd]);
      const client = rt.client();
      await client.init({ instanceId: "i-1", unixTimeMs: Date.now(), entropy: entropy() });
      // No entry given: the runtime resolves index.js, which only the mount makes exist.
      const loaded = await client.load({ functionName: "fa" } as never);
      assert.deepEqual(loaded.classes, ["P"]);
      // The mount ran once, and saw /code empty: it came before anything read the code path.
      assert.equal(await readFile(log, "utf8"), "mount 0\n");
    });

    it("answers 422 with the mount command's own words when mounting fails", async () => {
      const code = await codeDir();
      const { cmd } = await mountDouble(code, 3);
      const rt = await start(code, ["--code-mount", cmd]);
      const client = rt.client();
      await client.init({ instanceId: "i-2", unixTimeMs: Date.now(), entropy: entropy() });
      await assert.rejects(client.load({ functionName: "fa", entry: "index.js" }), (err: GuestError) => {
        assert.equal(err.status, 422);
        assert.equal(err.kind, "load");
        assert.match(err.message, /mounting the code disk at .* failed: .* 3: mount: mounting \/dev\/vdb/);
        return true;
      });
    });

    it("is never run by the process sandbox: its runtime command has no microVM flag", () => {
      const cmd = jailCommand({
        rootDir: "/s/base/v1/root",
        codeDir: "/s/code",
        runDir: "/s/run",
        baseVersion: "v1",
        limits: { memoryMiB: 256, cpuPercent: 50, pids: 64, tmpMiB: 32, openFiles: 512, fileSizeMiB: 8 },
        hostId: null,
        agentPid: 1,
        cgroupProcs: [],
      });
      const runtimeArgs = cmd.args.slice(cmd.args.lastIndexOf("--") + 1);
      assert.ok(runtimeArgs.includes("--listen"), "found the runtime's arguments");
      for (const flag of ["--code-mount", "--native", "--set-clock", "--require-control-secret"]) {
        assert.ok(!runtimeArgs.includes(flag), `${flag} is not passed`);
      }
    });
  });

  describe("control secret", () => {
    let rt: Runtime;
    const key = secret();
    before(async () => {
      rt = await start(await codeDir({ "index.js": "exports.P = class P { ping() { return 1; } };" }), []);
    });

    const raw = (route: string, method: string, headers: Record<string, string> = {}, body?: unknown) =>
      request(`http://guest/_faas/${route}`, {
        method: method as "GET",
        headers: { "content-type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: new Agent({ connect: { socketPath: rt.sock } }),
      }).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));

    it("is set by the first init; later control calls without it or with another are refused 403", async () => {
      await rt.client(key).init({ instanceId: "i-s", unixTimeMs: Date.now(), entropy: entropy() });
      const tries: Record<string, string>[] = [
        {},
        { [CONTROL_SECRET_HEADER]: secret() },
        { [CONTROL_SECRET_HEADER]: "" },
      ];
      for (const headers of tries) {
        const load = await raw("load", "POST", headers, { functionName: "x", entry: "index.js" });
        assert.equal(load.status, 403, load.text);
        assert.match(load.text, new RegExp(CONTROL_SECRET_HEADER));
        assert.equal((await raw("console", "GET", headers)).status, 403);
        const reinit = await raw("init", "POST", headers, {
          instanceId: "evil",
          unixTimeMs: 1,
          entropy: entropy(),
          controlSecret: secret(),
        });
        assert.equal(reinit.status, 403);
      }
      // Health stays open: the host polls it before init. It still names the first identity.
      const health = await raw("health", "GET");
      assert.equal(health.status, 200);
      assert.equal(JSON.parse(health.text).instanceId, "i-s");
      // The host, which holds the secret, goes on.
      const loaded = await rt.client(key).load({ functionName: "fa", entry: "index.js" });
      assert.deepEqual(loaded.classes, ["P"]);
    });

    it("with --require-control-secret, refuses control calls before init and an init without one", async () => {
      const strict = await start(await codeDir(), ["--require-control-secret"]);
      await assert.rejects(
        strict.client().load({ functionName: "x", entry: "index.js" }),
        (err: GuestError) => {
          assert.equal(err.status, 403);
          assert.match(err.message, /refused before the host's init/);
          return true;
        },
      );
      await assert.rejects(
        strict.client().init({ instanceId: "i", unixTimeMs: Date.now(), entropy: entropy() }),
        (err: GuestError) => err.status === 400 && /init needs controlSecret/.test(err.message),
      );
      await assert.rejects(
        strict.client("short").init({ instanceId: "i", unixTimeMs: Date.now(), entropy: entropy() }),
        (err: GuestError) => err.status === 400 && /at least 32 characters/.test(err.message),
      );
      await strict.client(key).init({ instanceId: "i", unixTimeMs: Date.now(), entropy: entropy() });
      assert.equal((await strict.client(key).health()).instanceId, "i");
    });

    it("refuses an init whose entropy is not 32 bytes", async () => {
      const other = await start(await codeDir(), []);
      await assert.rejects(
        other.client().init({ instanceId: "i", unixTimeMs: Date.now(), entropy: "AAAA" }),
        (err: GuestError) =>
          err.status === 400 && /entropy: 32 random bytes, base64 \(got 3 bytes\)/.test(err.message),
      );
    });
  });

  describe("clones of one state (V8 startup snapshot + same --random-seed)", () => {
    let blob: string;
    const probe = [
      "const crypto = require('node:crypto');",
      "exports.Probe = class Probe {",
      "  facts(native) {",
      "    return {",
      "      math: [Math.random(), Math.random()],",
      "      uuid: crypto.randomUUID(),",
      "      int: crypto.randomInt(2 ** 40),",
      "      bytes: crypto.randomBytes(16).toString('hex'),",
      "      drbg: native ? require(native).reseedCounts() : null,",
      "      now: Date.now(),",
      "    };",
      "  }",
      "};",
    ].join("\n");

    before(async () => {
      // The state a VM snapshot freezes: node's UUID and randomInt caches already filled.
      const source = path.join(dir, "clone-state.js");
      await writeFile(
        source,
        `require("node:crypto").randomUUID();require("node:crypto").randomInt(10);\n${await readFile(bundle, "utf8")}`,
      );
      blob = path.join(dir, "clone-state.blob");
      await execa(process.execPath, ["--snapshot-blob", blob, "--build-snapshot", source], { cwd: dir });
    });

    async function clone(flags: string[] = []) {
      const rt = await start(await codeDir({ "index.js": probe }), flags, {
        node: ["--random-seed=4242", "--snapshot-blob", blob, "--"],
      });
      const client = rt.client();
      await client.load({ functionName: "probe", entry: "index.js" });
      const facts = async (native?: string) => {
        const res = await client.forward({
          method: "POST",
          path: "/probe",
          headers: {},
          body: Buffer.from(
            JSON.stringify({ jsonrpc: "2.0", method: "Probe.facts", params: [native], id: 1 }),
          ),
          signal: AbortSignal.timeout(5000),
          maxResponseBytes: 1e6,
        });
        return JSON.parse(res.body.toString()).result as Record<string, unknown>;
      };
      return { client, facts };
    }

    it("start alike, and differ after init with different entropy (Math.random, randomUUID, randomInt)", async () => {
      const [a, b] = [await clone(), await clone()];
      const [a0, b0] = [await a.facts(), await b.facts()];
      // The simulation holds: before init, two clones draw the same numbers (the problem).
      assert.deepEqual(a0.math, b0.math);
      assert.equal(a0.uuid, b0.uuid);
      assert.equal(a0.int, b0.int);
      await a.client.init({ instanceId: "a", unixTimeMs: Date.now(), entropy: entropy() });
      await b.client.init({ instanceId: "b", unixTimeMs: Date.now(), entropy: entropy() });
      const [a1, b1] = [await a.facts(), await b.facts()];
      assert.notDeepEqual(a1.math, b1.math);
      assert.notEqual(a1.uuid, b1.uuid);
      assert.notEqual(a1.int, b1.int);
      assert.notEqual(a1.bytes, b1.bytes);
      for (const v of a1.math as number[]) assert.ok(v >= 0 && v < 1);
    });

    it("are the same after init with the same entropy (what init does is derived from it)", async () => {
      const seed = entropy();
      const [a, b] = [await clone(), await clone()];
      await a.client.init({ instanceId: "a", unixTimeMs: Date.now(), entropy: seed });
      await b.client.init({ instanceId: "b", unixTimeMs: Date.now(), entropy: seed });
      const [a1, b1] = [await a.facts(), await b.facts()];
      assert.deepEqual(a1.math, b1.math);
    });

    describe("with the native helper (--native)", () => {
      let native: string;
      before(async function () {
        native = path.join(dir, "guest-native.node");
        // Only a missing toolchain or missing headers skip; a helper that does not compile fails.
        const missing = !existsSync(path.join(nodeInclude(), "node_api.h"))
          ? `no node headers at ${nodeInclude()}`
          : (await execa("g++", ["--version"], { reject: false })).exitCode !== 0
            ? "g++ is not installed (apt-get install -y g++)"
            : undefined;
        if (missing) {
          console.log(`      skip: the native helper cannot be built here: ${missing}`);
          this.skip();
        }
        const built = await execa(
          "bash",
          [path.join(REPO, "guest-images/runtime/native/build-native.sh"), nodeInclude(), native],
          { reject: false },
        );
        assert.equal(built.exitCode, 0, `build-native.sh failed: ${built.stderr}`);
      });

      it("reseeds OpenSSL's primary and public DRBGs at init", async () => {
        const a = await clone(["--native", native]);
        const before = (await a.facts(native)).drbg as { primary: number; public: number };
        assert.ok(before.primary >= 0 && before.public >= 0, "the counters are readable");
        await a.client.init({ instanceId: "a", unixTimeMs: Date.now(), entropy: entropy() });
        const after = (await a.facts(native)).drbg as { primary: number; public: number };
        assert.equal(after.primary, before.primary + 1);
        assert.ok(after.public > before.public);
      });

      it("steps the wall clock at init with --set-clock (seen here as the kernel's refusal without CAP_SYS_TIME)", async () => {
        // This host's clock must not be stepped by a test: the runtime runs without the capability,
        // so clock_settime answers EPERM, which proves init called it (and would step it as root in a VM).
        const rt = await start(await codeDir(), ["--native", native, "--set-clock"], {
          wrap: ["setpriv", "--inh-caps=-sys_time", "--bounding-set=-sys_time", "--"],
        });
        await assert.rejects(
          rt.client().init({ instanceId: "c", unixTimeMs: Date.now() + 60_000, entropy: entropy() }),
          (err: GuestError) =>
            err.status === 500 &&
            /clock_settime\(CLOCK_REALTIME\) failed: Operation not permitted/.test(err.message),
        );
        // Without --set-clock the same init succeeds: the clock is only touched when asked.
        const plain = await start(await codeDir(), ["--native", native], {
          wrap: ["setpriv", "--inh-caps=-sys_time", "--bounding-set=-sys_time", "--"],
        });
        await plain.client().init({ instanceId: "d", unixTimeMs: Date.now() + 60_000, entropy: entropy() });
      });

      it("refuses to start when the helper does not load, in one line", async () => {
        const bad = path.join(dir, "not-an-addon.node");
        await writeFile(bad, "not an ELF file");
        const run = await execa(
          process.execPath,
          [bundle, "--listen", `unix:${path.join(dir, "x.sock")}`, "--native", bad],
          {
            reject: false,
          },
        );
        assert.equal(run.exitCode, 2);
        assert.match(
          run.stderr,
          /^runtime: --native .* does not load \(build it for this node with .*build-native\.sh\)/,
        );
        assert.equal(run.stderr.trim().split("\n").length, 1);
      });
    });
  });
});

/** The include/node folder of the node running the tests (what build-rootfs.sh derives the same way). */
function nodeInclude(): string {
  return path.join(path.dirname(process.execPath), "..", "include", "node");
}
