/**
 * Runs the agent as a child process (`node --import tsx host-agent/main.ts`), so tests can SIGKILL it
 * like a crash would and start it again on the same state dir. Only the pid started here is ever killed.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** `n` distinct ports that were free a moment ago (held together while picking, so no two are the same). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

export interface ChildAgent {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dataUrl: string;
  readonly adminUrl: string;
  readonly output: () => string;
  /** Resolves with the exit code/signal once the process is gone. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ChildAgentOptions {
  readonly stateDir: string;
  readonly token: string;
  readonly port: number;
  readonly adminPort: number;
  readonly env?: Record<string, string>;
}

export async function startChildAgent(opts: ChildAgentOptions): Promise<ChildAgent> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO, "host-agent", "main.ts")], {
    cwd: REPO,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      PORT: String(opts.port),
      ADMIN_PORT: String(opts.adminPort),
      FAAS_STATE_DIR: opts.stateDir,
      FAAS_ADMIN_TOKEN: opts.token,
      FAAS_LOG_LEVEL: "info",
      ...opts.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => {
    output = (output + d.toString()).slice(-200_000);
  });
  child.stderr!.on("data", (d: Buffer) => {
    output = (output + d.toString()).slice(-200_000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const agent: ChildAgent = {
    child,
    pid: child.pid!,
    dataUrl: `http://127.0.0.1:${opts.port}`,
    adminUrl: `http://127.0.0.1:${opts.adminPort}`,
    output: () => output,
    exited,
  };
  const deadline = Date.now() + 60_000;
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  while (Date.now() < deadline) {
    if (gone) throw new Error(`the agent exited while starting:\n${output}`);
    try {
      const res = await request(`${agent.adminUrl}/healthz`, {
        headers: { authorization: `Bearer ${opts.token}` },
      });
      await res.body.text();
      if (res.statusCode === 200) return agent;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGKILL");
  throw new Error(`the agent did not come up within 60 s:\n${output}`);
}
