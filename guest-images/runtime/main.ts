/**
 * Guest runtime entry. Bundled into one CommonJS file; the process sandbox starts it from a V8 startup
 * snapshot of that file (built by `node --build-snapshot`), microVMs from a VM snapshot. Started plainly
 * with `node runtime.js`, it behaves the same, only slower to start.
 *
 * Arguments: --listen unix:/path | tcp:host:port   --code /code   --base-version <version>
 *            --console stdout | channel   (channel: console lines are kept for the host, which gets them in
 *                                          batches on its framed connection, or at GET /_faas/console)
 *            --no-warm-up       say ready at once: for a start a call waits for (see warmUp)
 * microVM guests only (the process sandbox passes none of these):
 *            --code-mount CMD   run CMD (no arguments) on load, before the entry is resolved: the code disk
 *                               is attached after restore (Linux: /bin/remount-code)
 *            --code-device DEV  on load, unpack the ROFS code disk on block device DEV into --code (OSv:
 *                               /dev/vblk1 into a ramfs folder; OSv cannot remount, see code-device.ts)
 *            --native PATH      the native helper (guest-native.node): init reseeds OpenSSL with it
 *            --set-clock        init steps the wall clock to the host's (needs --native; root)
 *            --require-control-secret   init must carry a control secret (the port is on a network)
 */
import type * as AsyncHooks from "node:async_hooks";
import type * as ChildProcess from "node:child_process";
import type * as Crypto from "node:crypto";
import type * as Fs from "node:fs";
import type * as Http from "node:http";
import type * as Module from "node:module";
import type * as Net from "node:net";
import type * as Stream from "node:stream";
import type * as Util from "node:util";
import type * as V8 from "node:v8";
import { CHANNEL_PREAMBLE, encodeRequest, FrameReader } from "../../contracts/guest-channel.ts";
import { unpackCodeDevice } from "./code-device.ts";
import type { WritableLike } from "./console-capture.ts";
import { ConsoleQueue } from "./console-queue.ts";
import { dispatchRpc, exportedClasses, isAnswer, parseRpcRequest } from "./jsonrpc.ts";
import { resolveFunction } from "./loader.ts";
import { createRuntimeServer, type GuestSteps, type RuntimeServer } from "./server.ts";

/** Console kept for the host between its reads (channel mode): four calls' worth of the per-call budget. */
const CONSOLE_QUEUE_BYTES = 256 * 1024;

declare const require: (id: string) => unknown;
declare const __RUNTIME_BUILD__: string;

interface Args {
  listen: { kind: "unix"; path: string } | { kind: "tcp"; host: string; port: number };
  code: string;
  baseVersion: string;
  console: "stdout" | "channel";
  codeMount: string | null;
  codeDevice: string | null;
  native: string | null;
  setClock: boolean;
  requireControlSecret: boolean;
  /** False with --no-warm-up. */
  warmUp: boolean;
}

/** What the native helper (native/guest-native.cc) exports. */
interface GuestNative {
  reseed(entropy: Buffer): void;
  setClock(unixTimeMs: number): void;
}

function parseArgs(argv: string[]): Args {
  const get = (flag: string, fallback: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
  };
  const listen = get("--listen", "tcp:127.0.0.1:8123");
  const code = get("--code", "/code");
  const baseVersion = get("--base-version", "unversioned");
  const consoleTo = get("--console", "stdout");
  if (consoleTo !== "stdout" && consoleTo !== "channel")
    throw new Error(`--console must be stdout or channel, got ${consoleTo}`);
  const codeMount = get("--code-mount", "") || null;
  const codeDevice = get("--code-device", "") || null;
  if (codeMount && codeDevice)
    throw new Error("--code-mount and --code-device are two ways to attach code: give one");
  const native = get("--native", "") || null;
  const setClock = argv.includes("--set-clock");
  if (setClock && !native)
    throw new Error("--set-clock needs --native PATH (the native helper sets the clock)");
  const rest = {
    code,
    baseVersion,
    console: consoleTo,
    codeMount,
    codeDevice,
    native,
    setClock,
    requireControlSecret: argv.includes("--require-control-secret"),
    warmUp: !argv.includes("--no-warm-up"),
  } as const;
  if (listen.startsWith("unix:")) return { listen: { kind: "unix", path: listen.slice(5) }, ...rest };
  const m = /^tcp:(.+):(\d+)$/.exec(listen);
  if (!m) throw new Error(`--listen must be unix:/path or tcp:host:port, got ${listen}`);
  return { listen: { kind: "tcp", host: m[1]!, port: Number(m[2]) }, ...rest };
}

/** The microVM-only steps the flags ask for. A helper that cannot load is a startup error. */
function guestSteps(args: Args, loadNative: (path: string) => GuestNative, fs: typeof Fs): GuestSteps {
  const native = args.native ? loadNative(args.native) : null;
  const steps: { -readonly [K in keyof GuestSteps]: GuestSteps[K] } = {};
  if (native) steps.reseedOpenssl = (entropy) => native.reseed(entropy);
  if (native && args.setClock) steps.setClock = (ms) => native.setClock(ms);
  const device = args.codeDevice;
  if (device) {
    steps.mountCode = async () => {
      unpackCodeDevice(fs, device, args.code);
    };
  }
  const cmd = args.codeMount;
  if (cmd) {
    const { execFile } = require("node:child_process") as typeof ChildProcess;
    steps.mountCode = () =>
      new Promise<void>((resolve, reject) => {
        execFile(cmd, [], { timeout: 30_000 }, (err, _stdout, stderr) => {
          if (!err) resolve();
          else
            reject(
              new Error(
                `${cmd} ${err.code ?? err.signal ?? "failed"}: ${String(stderr).trim() || err.message}`,
              ),
            );
        });
      });
  }
  return steps;
}

function run(): void {
  restoreConsoleClass();
  const http = require("node:http") as typeof Http;
  const fs = require("node:fs") as typeof Fs;
  // Flags are looked up by name: a snapshot-started process has no script path in argv.
  const crypto = require("node:crypto") as typeof Crypto;
  let args: Args;
  let guest: GuestSteps;
  try {
    args = parseArgs(process.argv.slice(1));
    guest = guestSteps(
      args,
      (p) => {
        const mod = { exports: {} as GuestNative };
        try {
          process.dlopen(mod, p);
        } catch (err) {
          throw new Error(
            `--native ${p} does not load (build it for this node with guest-images/runtime/native/build-native.sh): ${(err as Error).message}`,
          );
        }
        return mod.exports;
      },
      fs,
    );
  } catch (err) {
    // One line for whoever reads the console: the runtime cannot start as asked.
    process.stderr.write(`runtime: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const writeStdout = (line: string) => {
    try {
      fs.writeSync(1, line);
    } catch {
      // The host stopped reading; nothing useful left to do with the line.
    }
  };
  // One import() for the code's ES modules, compiled by the warm-up's first import (see runtimeImport).
  const codeImport = runtimeImport(args.code);
  const server = createRuntimeServer(
    {
      http,
      net: require("node:net") as typeof Net,
      AsyncLocalStorage: (require("node:async_hooks") as typeof AsyncHooks).AsyncLocalStorage,
      createRequire: (require("node:module") as typeof Module).createRequire,
      importModule: codeImport,
      fs,
      format: (require("node:util") as typeof Util).format,
      randomUUID: crypto.randomUUID,
      writeStdout,
      now: Date.now,
      crypto,
      math: Math,
      guest,
      streams: [
        [standInStream("stdout"), "info"],
        [standInStream("stderr"), "error"],
      ],
      ...(args.console === "channel" ? { consoleQueue: new ConsoleQueue(CONSOLE_QUEUE_BYTES) } : {}),
    },
    {
      codePath: args.code,
      baseVersion: args.baseVersion,
      runtimeBuild: typeof __RUNTIME_BUILD__ === "string" ? __RUNTIME_BUILD__ : "dev",
      logBytesPerCall: 64 * 1024,
      maxBodyBytes: 1024 * 1024,
      requireControlSecret: args.requireControlSecret,
    },
  );
  const announce = () => writeStdout(`${JSON.stringify({ type: "ready", pid: process.pid })}\n`);
  // Warm the paths a first call takes (module loaders, the call path, the framed channel, the HTTP
  // server) before saying ready: a generic instance pays for it while it waits, not the first call it serves.
  const ready = () => {
    // A start a call waits for loads that call's function next: its load compiles what it needs, and a
    // warm-up first would only delay it.
    if (!args.warmUp) {
      announce();
      return;
    }
    void warmUp(
      server,
      http,
      require("node:net") as typeof Net,
      fs,
      args.listen,
      (require("node:module") as typeof Module).createRequire,
      codeImport,
    ).finally(announce);
  };
  if (args.listen.kind === "unix") {
    try {
      fs.unlinkSync(args.listen.path);
    } catch {
      // No stale socket to remove.
    }
    server.listen(args.listen.path, ready);
  } else {
    server.listen(args.listen.port, args.listen.host, ready);
  }
}

/**
 * process.stdout/stderr for the function's code: a Writable whose writes the console capture turns into
 * log lines. The real streams are never made: making process.stdout puts fd 1 (a pipe) in non-blocking
 * mode, and the runtime's own lines (written with fs.writeSync) would then fail with EAGAIN.
 */
function standInStream(name: "stdout" | "stderr"): WritableLike {
  const { Writable } = require("node:stream") as typeof Stream;
  const stream = new Writable({ write: (_chunk, _enc, done) => done() });
  Object.defineProperty(process, name, { configurable: true, enumerable: true, get: () => stream });
  return stream as unknown as WritableLike;
}

/**
 * import() for the function's ES modules. Code in a V8 startup snapshot (this bundle) has no dynamic
 * import callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING), but a CommonJS module compiled after start
 * gets node's default one: so a one-line module, compiled now, does the import. Its file name is a
 * path in the code folder that no file has, so relative resolution and the module's paths are the code's.
 */
function runtimeImport(codeRoot: string): (url: string) => Promise<unknown> {
  let compiled: ((url: string) => Promise<unknown>) | undefined;
  return (url) => {
    if (!compiled) {
      const ModuleClass = require("node:module") as typeof Module & {
        new (
          id: string,
        ): { filename: string; paths: string[]; exports: unknown; _compile(src: string, file: string): void };
        _nodeModulePaths(dir: string): string[];
      };
      const filename = `${codeRoot}/.faas-runtime-import.cjs`;
      const mod = new ModuleClass(filename);
      mod.filename = filename;
      mod.paths = ModuleClass._nodeModulePaths(codeRoot);
      mod._compile("module.exports = (url) => import(url);", filename);
      compiled = mod.exports as (url: string) => Promise<unknown>;
    }
    return compiled(url);
  };
}

async function warmUp(
  server: RuntimeServer,
  http: typeof Http,
  net: typeof Net,
  fs: typeof Fs,
  listen: Args["listen"],
  createRequire: (p: string) => (id: string) => unknown,
  importModule: (url: string) => Promise<unknown>,
): Promise<void> {
  // The global `performance` is made on its first use (node:perf_hooks and seven internal modules, 1 to
  // 3 ms compiled at run time in a process started from a snapshot): the load route reads it.
  performance.now();
  const base = `/tmp/.faas-warmup-${process.pid}`;
  try {
    fs.writeFileSync(`${base}.js`, "class Warm { ping(x) { return x; } }\nmodule.exports = { Warm };\n");
    const classes = exportedClasses(createRequire(`${base}.js`)(`${base}.js`) as Record<string, unknown>);
    const call = parseRpcRequest('{"jsonrpc":"2.0","method":"Warm.ping","params":[1],"id":1}');
    if (!isAnswer(call)) await dispatchRpc(call, classes, new Map());
    fs.unlinkSync(`${base}.js`);
    // The ES module loader, on a package laid out as a function's code is: it starts on its first import,
    // and the entry's resolution, format detection and package scope lookup compile on their first use.
    fs.mkdirSync(base);
    fs.writeFileSync(`${base}/package.json`, '{"type":"module"}\n');
    fs.writeFileSync(`${base}/index.js`, "export class Warm { ping(x) { return x; } }\n");
    const entry = resolveFunction(base, {
      exists: fs.existsSync,
      readFile: (p: string) => fs.readFileSync(p, "utf8"),
    });
    await importModule(`file://${base}/${entry.file}`);
    fs.rmSync(base, { recursive: true });
  } catch {
    // A read-only or missing /tmp only costs the warm-up.
  }
  await server.rehearse().catch(() => undefined);
  await framedRoundTrip(net, listen).catch(() => undefined);
  await new Promise<void>((resolve) => {
    const req = http.get(
      listen.kind === "unix"
        ? { socketPath: listen.path, path: "/_faas/health" }
        : { host: loopbackOf(listen.host), port: listen.port, path: "/_faas/health" },
      (res) => {
        res.resume();
        res.on("end", resolve);
      },
    );
    req.on("error", () => resolve());
  });
}

function loopbackOf(host: string): string {
  return host === "0.0.0.0" ? "127.0.0.1" : host;
}

/** One health request over the host's framed channel, to the runtime's own listener, and its answer. */
function framedRoundTrip(net: typeof Net, listen: Args["listen"]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket =
      listen.kind === "unix"
        ? net.connect({ path: listen.path })
        : net.connect({ host: loopbackOf(listen.host), port: listen.port });
    const done = (err?: Error) => {
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const reader = new FrameReader(
      () => done(),
      () => 64 * 1024,
      () => done(new Error("warm-up answer too large")),
    );
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", done);
    socket.on("close", () => done());
    socket.write(
      Buffer.concat([
        CHANNEL_PREAMBLE,
        encodeRequest(1, { method: "GET", path: "/_faas/health", headers: {}, body: null }),
      ]),
    );
  });
}

// A process started from a startup snapshot finds console.Console undefined (node 22 and 24: the key
// survives, its value does not). Loggers that make their own Console (Powertools) need it: the class is
// kept here while the snapshot is built and put back when the process starts, before any code imports
// node:console (whose ES module face reads the value then).
const ConsoleClass = (require("node:console") as { Console: unknown }).Console;
function restoreConsoleClass(): void {
  const target = console as unknown as { Console: unknown };
  if (typeof target.Console !== "function") target.Console = ConsoleClass;
}

const v8 = require("node:v8") as typeof V8;
if (v8.startupSnapshot?.isBuildingSnapshot()) {
  v8.startupSnapshot.setDeserializeMainFunction(run);
} else {
  run();
}
