/**
 * The peers the warm path is compared with in the same run: the one-hop proxy (node:http in front of a
 * minimal runtime on a Unix socket) and workerd (Cloudflare's runtime, from the npm registry). Each is a
 * child process stopped by the run.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { request } from "undici";
import { freePort, REPO_ROOT, stopChild, track } from "./processes.ts";

export interface Peer {
  readonly origin: string;
  /** The processes that serve a call (the front first): their CPU is what one call costs. */
  readonly pids: () => number[];
  stop(): Promise<void>;
}

function portLine(child: ChildProcess, what: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", (l) =>
      resolve((JSON.parse(l) as { port: number }).port),
    );
    child.once("exit", () => reject(new Error(`${what} exited before listening`)));
  });
}

/** The minimal runtime on a Unix socket, and the one-hop proxy in front of it. */
export async function startOneHopProxy(): Promise<Peer> {
  const dir = await mkdtemp(path.join(tmpdir(), "faas-bench-proxy-"));
  const sock = path.join(dir, "runtime.sock");
  const tsx = ["--import", "tsx"];
  const runtime = track(
    spawn(
      process.execPath,
      [...tsx, path.join(REPO_ROOT, "bench", "baseline-server.ts"), "--listen", `unix:${sock}`],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    ),
  );
  await portLine(runtime, "the minimal runtime");
  const proxy = track(
    spawn(
      process.execPath,
      [...tsx, path.join(REPO_ROOT, "bench", "peers", "one-hop-proxy.ts"), "--upstream", sock],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    ),
  );
  const port = await portLine(proxy, "the one-hop proxy");
  return {
    origin: `http://127.0.0.1:${port}`,
    pids: () => [proxy.pid!, runtime.pid!],
    async stop() {
      await stopChild(proxy);
      await stopChild(runtime);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Where the registry's workerd binary is, or why there is none. */
export function workerdBinary(): { path: string } | { missing: string } {
  if (process.platform !== "linux" || process.arch !== "x64")
    return {
      missing: `workerd's npm package here is for linux x64, this is ${process.platform} ${process.arch}`,
    };
  try {
    const pkg = createRequire(import.meta.url).resolve("@cloudflare/workerd-linux-64/package.json");
    const bin = path.join(path.dirname(pkg), "bin", "workerd");
    return existsSync(bin) ? { path: bin } : { missing: `${bin} is not there` };
  } catch {
    return { missing: "@cloudflare/workerd-linux-64 is not installed (an optional dependency: npm ci)" };
  }
}

/** workerd serving bench/peers/workerd-hello.js on a free port; rejects when it cannot run here. */
export async function startWorkerd(bin: string): Promise<Peer> {
  const dir = await mkdtemp(path.join(tmpdir(), "faas-bench-workerd-"));
  const port = await freePort();
  const config = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const hello :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-23",
);
`;
  const file = path.join(dir, "config.capnp");
  await writeFile(file, config);
  // embed paths are relative to the config file.
  await copyFile(path.join(REPO_ROOT, "bench", "peers", "workerd-hello.js"), path.join(dir, "worker.js"));
  let stderr = "";
  const child = track(spawn(bin, ["serve", file], { stdio: ["ignore", "ignore", "pipe"] }));
  child.stderr!.on("data", (c: Buffer) => {
    stderr = `${stderr}${c.toString("utf8")}`.slice(-2000);
  });
  const stop = async () => {
    await stopChild(child);
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      throw new Error(
        `workerd exited (${child.exitCode ?? child.signalCode}): ${stderr.trim().split("\n").at(-1) ?? ""}`,
      );
    }
    try {
      const res = await request(`http://127.0.0.1:${port}/hello-world`, {
        method: "POST",
        body: '{"jsonrpc":"2.0","method":"HelloWorldService.helloWorld","params":[],"id":1}',
      });
      const text = await res.body.text();
      if (res.statusCode === 200 && text.includes("Hello world!")) break;
      throw new Error(`workerd answered ${res.statusCode}: ${text.slice(0, 200)}`);
    } catch (err) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`workerd did not answer within 20 s: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { origin: `http://127.0.0.1:${port}`, pids: () => [child.pid!], stop };
}
