/** Child processes the benchmark measures: the baseline server and host agents, each stopped by the run. */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { request } from "undici";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/** Killed when the bench exits, however it exits. */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await gone;
  clearTimeout(timer);
}

export async function startBaseline(): Promise<{ origin: string; child: ChildProcess }> {
  const child = track(
    spawn(process.execPath, ["--import", "tsx", path.join(REPO_ROOT, "bench", "baseline-server.ts")], {
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", resolve);
    child.once("exit", () => reject(new Error("baseline server exited")));
  });
  return { origin: `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`, child };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface AgentProcess {
  readonly origin: string;
  readonly admin: string;
  readonly token: string;
  readonly stateDir: string;
  readonly child: ChildProcess;
  adminCall(
    method: string,
    route: string,
    body?: Buffer,
    headers?: Record<string, string>,
  ): Promise<{ status: number; text: string }>;
}

/**
 * Extra node flags for every agent the bench starts, from BENCH_AGENT_NODE_ARGS (space-separated): for
 * example `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the agent under the bench's load.
 */
const AGENT_NODE_ARGS = (process.env.BENCH_AGENT_NODE_ARGS ?? "").split(" ").filter(Boolean);

/** Starts `node host-agent/main.ts` with its own state dir and ports; resolves once it answers. */
export async function startAgent(env: Record<string, string>, stateDir?: string): Promise<AgentProcess> {
  const dir = stateDir ?? (await mkdtemp(path.join(tmpdir(), "faas-bench-")));
  const [port, adminPort] = [await freePort(), await freePort()];
  const token = randomBytes(24).toString("base64url");
  const child = track(
    spawn(
      process.execPath,
      [...AGENT_NODE_ARGS, "--import", "tsx", path.join(REPO_ROOT, "host-agent", "main.ts")],
      {
        env: {
          ...process.env,
          PORT: String(port),
          ADMIN_PORT: String(adminPort),
          FAAS_STATE_DIR: dir,
          FAAS_ADMIN_TOKEN: token,
          FAAS_LOG_LEVEL: "warn",
          ...env,
        },
        stdio: ["ignore", "ignore", "inherit"],
      },
    ),
  );
  const admin = `http://127.0.0.1:${adminPort}`;
  const adminCall = async (
    method: string,
    route: string,
    body?: Buffer,
    headers?: Record<string, string>,
  ) => {
    const res = await request(`${admin}${route}`, {
      method: method as "GET",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/gzip", ...headers },
      body,
    });
    return { status: res.statusCode, text: await res.body.text() };
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the agent exited with code ${child.exitCode}`);
    try {
      if ((await adminCall("GET", "/healthz")).status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error("the agent did not answer within 60 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { origin: `http://127.0.0.1:${port}`, admin, token, stateDir: dir, child, adminCall };
}

/** Reads one counter or gauge (summed over labels matching `labelFilter`) from the agent's /metrics. */
export async function metric(agent: AgentProcess, name: string, labelFilter = ""): Promise<number> {
  const { text } = await agent.adminCall("GET", "/metrics");
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || !line.includes(labelFilter)) continue;
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m) sum += Number(m[2]);
  }
  return sum;
}
