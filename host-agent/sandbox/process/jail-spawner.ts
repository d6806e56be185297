/**
 * Starts jails from a worker thread, off the agent's event loop. child_process.spawn forks the calling
 * process, and forking a process the agent's size (about 165 MB resident under load) copies its page
 * tables: 5 to 20 ms on a 2-vCPU host (2 ms at 60 MB, 30 ms at 370 MB), during which the event loop
 * that serves every call stood still, so a burst's starts serialized the calls behind them. Forked from
 * a worker the copy still happens, but the agent's own thread goes on serving meanwhile.
 *
 * The jails stay children of the agent's process (their parent-pid check and bwrap's --die-with-parent
 * see the agent), and their parent-death signal is tied to the worker's thread, which lives as long as
 * the spawner: close() only after every jail is gone. Their output and exit come back as messages.
 */
import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";

/** The worker: spawns, relays each jail's stdout/stderr chunks and its exit, kills on request. */
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const { spawn } = require("node:child_process");
const children = new Map();
parentPort.on("message", (m) => {
  if (m.op === "kill") {
    const child = children.get(m.id);
    if (child) child.kill(m.signal);
    return;
  }
  let ended = false;
  const exit = (code, signal, error) => {
    if (ended) return;
    ended = true;
    children.delete(m.id);
    parentPort.postMessage({ op: "exit", id: m.id, code, signal, error });
  };
  let child;
  try {
    child = spawn(m.file, m.args, { env: m.env, stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    exit(null, null, err.message);
    return;
  }
  children.set(m.id, child);
  parentPort.postMessage({ op: "spawned", id: m.id, pid: child.pid });
  child.stdout.on("data", (data) => parentPort.postMessage({ op: "out", id: m.id, fd: 1, data }));
  child.stderr.on("data", (data) => parentPort.postMessage({ op: "out", id: m.id, fd: 2, data }));
  child.on("error", (err) => { if (child.pid === undefined) exit(null, null, err.message); });
  child.on("close", (code, signal) => exit(code, signal, undefined));
});
`;

/** A jail's first process, as the agent sees it through the spawner. */
export interface JailProcess {
  /** Known once the worker has forked it (before any of its output arrives); undefined if the fork failed. */
  readonly pid: number | undefined;
  /** The exit code once it has ended (null while it runs, or when a signal ended it). */
  readonly exitCode: number | null;
  readonly stdout: JailOutput;
  readonly stderr: JailOutput;
  kill(signal: NodeJS.Signals): void;
  /** Resolves once it has exited and all of its output has been delivered. */
  readonly exited: Promise<JailExit>;
}

export interface JailExit {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Why it never ran (the fork or exec failed). */
  readonly error?: string;
}

/** A jail's output stream: "data" with each chunk as a Buffer, then "end" once, after its last chunk. */
export type JailOutput = EventEmitter;

class Jail implements JailProcess {
  pid: number | undefined;
  exitCode: number | null = null;
  readonly stdout = new EventEmitter();
  readonly stderr = new EventEmitter();
  readonly exited: Promise<JailExit>;
  ended!: (exit: JailExit) => void;
  private ran = false;

  constructor(private readonly send: (signal: NodeJS.Signals) => void) {
    this.exited = new Promise((resolve) => {
      this.ended = resolve;
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (!this.ran) this.send(signal);
  }

  finish(exit: JailExit): void {
    this.ran = true;
    this.exitCode = exit.exitCode;
    this.stdout.emit("end");
    this.stderr.emit("end");
    this.ended(exit);
  }
}

export class JailSpawner {
  private worker: Worker | undefined;
  private readonly live = new Map<number, Jail>();
  private nextId = 1;

  spawn(file: string, args: readonly string[], env: Record<string, string>): JailProcess {
    const worker = this.start();
    const id = this.nextId++;
    const proc = new Jail((signal) => worker.postMessage({ op: "kill", id, signal }));
    this.live.set(id, proc);
    // While a jail lives, the worker keeps the agent's process up as a child process would.
    if (this.live.size === 1) worker.ref();
    worker.postMessage({ op: "spawn", id, file, args, env });
    return proc;
  }

  /** Starts the worker now (a thread takes tens of ms to boot), so the first jail does not wait for it. */
  prepare(): void {
    this.start();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    worker.unref();
    worker.on("message", (m: WorkerMessage) => this.onMessage(m));
    worker.on("error", (err) => this.lost(`the jail spawner failed: ${err.message}`));
    worker.on("exit", () => this.lost("the jail spawner stopped"));
    this.worker = worker;
    return worker;
  }

  private onMessage(m: WorkerMessage): void {
    const proc = this.live.get(m.id);
    if (!proc) return;
    if (m.op === "spawned") proc.pid = m.pid;
    else if (m.op === "out") {
      const data = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
      (m.fd === 1 ? proc.stdout : proc.stderr).emit("data", data);
    } else {
      this.end(m.id, {
        exitCode: m.code,
        signal: m.signal,
        ...(m.error === undefined ? {} : { error: m.error }),
      });
    }
  }

  private end(id: number, exit: JailExit): void {
    const proc = this.live.get(id);
    if (!proc) return;
    this.live.delete(id);
    if (this.live.size === 0) this.worker?.unref();
    proc.finish(exit);
  }

  /** The worker died: its jails got their parent-death signal, so each is reported ended. */
  private lost(why: string): void {
    this.worker = undefined;
    for (const id of [...this.live.keys()]) this.end(id, { exitCode: null, signal: "SIGKILL", error: why });
  }

  /** Stops the worker; call once every jail it started has exited (its thread's end kills the rest). */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}

type WorkerMessage =
  | { op: "spawned"; id: number; pid: number | undefined }
  | { op: "out"; id: number; fd: 1 | 2; data: Uint8Array }
  | { op: "exit"; id: number; code: number | null; signal: NodeJS.Signals | null; error?: string };
