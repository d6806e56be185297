/**
 * Starts Firecracker through the jailer (production SpawnVmm). With --daemonize the jailer exits once
 * Firecracker runs, so the process is followed by the pid the jailer writes into the jail.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { execa } from "execa";
import { onBoundedLines } from "../bounded-lines.ts";
import type { SpawnVmm, VmmExit, VmmProcess } from "./vmm-process.ts";

export interface JailerSpawnerOptions {
  readonly jailerPath: string;
  /** How long to wait for the pid file after the jailer returned. */
  readonly pidFileTimeoutMs?: number;
  /** How often to check that a daemonized Firecracker is still alive. */
  readonly pollIntervalMs?: number;
}

export function jailerSpawner(options: JailerSpawnerOptions): SpawnVmm {
  return async (request) => {
    const daemonize = request.jailerArgv.includes("--daemonize");
    const child = execa(options.jailerPath, request.jailerArgv, {
      reject: false,
      stdin: "ignore",
      // Without --daemonize Firecracker stays our child for its whole life, and its stdout is the guest's
      // serial console: not collected (see docs/security.md) and never buffered, so a chatty guest
      // neither stalls on a full pipe nor grows the agent's memory. Its stderr keeps a bounded tail.
      stdout: daemonize ? "pipe" : "ignore",
      stderr: "pipe",
      buffer: daemonize,
    });
    if (daemonize) {
      const result = await child;
      if (result.exitCode !== 0) {
        throw new Error(
          `jailer exited with ${result.exitCode ?? result.signal}: ${String(result.stderr).trim().slice(0, 500)}`,
        );
      }
    }
    const pid = await readPidFile(request.pidFilePath, options.pidFileTimeoutMs ?? 2_000).catch(
      (err: unknown) => {
        child.kill("SIGKILL");
        throw err;
      },
    );
    if (!daemonize) {
      // The jailer exec'd into Firecracker: our child is the VMM.
      return childProcessVmm(child, pid, request.apiSocketPath);
    }
    return watchPid(pid, request.apiSocketPath, options.pollIntervalMs ?? 50);
  };
}

async function readPidFile(path: string, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const text = await readFile(path, "utf8").catch(() => "");
    const pid = Number.parseInt(text.trim(), 10);
    if (Number.isInteger(pid) && pid > 0) return pid;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error(`no pid file at ${path} after ${timeoutMs} ms`);
}

/** Keeps the last stderr lines of a Firecracker that is our child, for the description of its exit. */
const STDERR_TAIL = 2048;

function childProcessVmm(child: ReturnType<typeof execa>, pid: number, apiSocketPath: string): VmmProcess {
  let stderrTail = "";
  if (child.stderr) {
    onBoundedLines(child.stderr, STDERR_TAIL, (line) => {
      stderrTail = `${stderrTail}${line}\n`.slice(-STDERR_TAIL);
    });
  }
  const exited: Promise<VmmExit> = child.then(
    (r) => ({
      code: r.exitCode ?? null,
      signal: r.signal ?? null,
      description: `firecracker exited (${r.exitCode ?? r.signal}): ${stderrTail.trim().slice(-300)}`,
    }),
    (err: unknown) => ({ code: null, signal: null, description: `firecracker failed: ${String(err)}` }),
  );
  return {
    pid,
    apiSocketPath,
    exited,
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Follows a process that is not our child. Exit codes of a daemonized Firecracker are not visible
 * to us; the agent learns the why from the API (a failed load) or from the guest channel.
 */
export function watchPid(pid: number, apiSocketPath: string, pollIntervalMs: number): VmmProcess {
  let resolveExit!: (exit: VmmExit) => void;
  const exited = new Promise<VmmExit>((resolve) => {
    resolveExit = resolve;
  });
  let killed = false;
  const timer = setInterval(() => {
    if (!isAlive(pid)) {
      clearInterval(timer);
      resolveExit({
        code: null,
        signal: killed ? "SIGKILL" : null,
        description: killed ? "killed by the agent" : `firecracker (pid ${pid}) is gone`,
      });
    }
  }, pollIntervalMs);
  timer.unref();
  return {
    pid,
    apiSocketPath,
    exited,
    async kill() {
      killed = true;
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
      await exited;
    },
  };
}

/**
 * A daemonized Firecracker is reparented to init; an init that does not reap (common in containers)
 * leaves a zombie that still answers kill(pid, 0). /proc tells the two apart.
 */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
