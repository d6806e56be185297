/**
 * The process sandbox: each instance is a bubblewrap jail around node started from the runtime's V8
 * startup snapshot. Code is attached after start by hard-linking it into the folder the jail sees
 * read-only at /code, the way a microVM gets its code disk after restore.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { endianness } from "node:os";
import path from "node:path";
import { execa } from "execa";
import type { GuestLogLine } from "../../../contracts/guest-protocol.ts";
import { GuestClient } from "../../guest/client.ts";
import { checkConsoleLine } from "../../guest/console-line.ts";
import type { Logger } from "../../log.ts";
import { forceRemove } from "../../registry/bundle.ts";
import { AGENT_GONE_EXIT } from "../bound-to-agent.ts";
import { onBoundedLines } from "../bounded-lines.ts";
import { execaRunner } from "../command-runner.ts";
import {
  type CodeArtifact,
  type InstanceSpec,
  type PreflightProblem,
  type SandboxDriver,
  type SandboxExit,
  type SandboxInstance,
  SandboxStartError,
} from "../driver.ts";
import { GUEST_SOCKET_NAME, jailCommand } from "./bwrap-args.ts";
import {
  type CgroupMode,
  createInstanceCgroup,
  detectCgroups,
  type InstanceCgroup,
  reclaimCgroups,
  removeScope,
  cgroupScope as scopeOf,
} from "./cgroups.ts";
import { linkCodeTree } from "./code-link.ts";
import { type EgressLink, egressNames, ProcessEgress } from "./egress.ts";
import { type JailProcess, JailSpawner } from "./jail-spawner.ts";
import { bwrapDisablesUserns, findOnPath, jailFolderFacts, processSandboxProblems } from "./preflight.ts";
import { hostSeccompFilter } from "./seccomp.ts";

export interface ProcessDriverOptions {
  /** Instance folders live under <stateDir>/run/instances. */
  readonly stateDir: string;
  /** Where the agent's bases are kept, when it is not under the state folder: preflight checks the jails reach it. */
  readonly baseDir?: string | undefined;
  /** First host uid of the range jails run as; one uid per live instance. */
  readonly uidBase: number;
  readonly uidCount: number;
  readonly log: Logger;
  /** How long a jail may take to answer before its start counts as failed. */
  readonly startTimeoutMs?: number;
  /** Bytes of raw (uncaptured) output one instance may write before the rest is dropped. */
  readonly rawOutputBudget?: number;
  /** Each console line of a user's function, after it is logged (the agent keeps the last ones). */
  readonly onUserLine?: (line: UserConsoleLine) => void;
  /** Per-function egress: overrides of the host's uplink and resolver, and the /24 of the links. */
  readonly egress?: {
    readonly uplink?: string | undefined;
    readonly dnsResolver?: string | undefined;
    readonly subnet?: string | undefined;
  };
}

export interface UserConsoleLine {
  readonly fn: string;
  readonly rid: string | null;
  readonly level: "debug" | "info" | "warn" | "error";
  readonly msg: string;
  readonly instance: string;
}

const STDERR_TAIL = 2048;
/** Longest guest output line kept: a call's console budget (64 KiB) even when JSON escaping inflates it. */
const MAX_LINE_BYTES = 512 * 1024;

export class ProcessDriver implements SandboxDriver {
  readonly kind = "process" as const;
  private readonly instancesDir: string;
  private readonly live = new Map<string, ProcessInstance>();
  private readonly usedUids = new Set<number>();
  /** Starts in flight, so close() can wait for the ones it caught half-way. */
  private readonly starting = new Set<Promise<SandboxInstance>>();
  private closing = false;
  /** The seccomp filter written at init, for bwrap to load in every jail. */
  private seccompFile: string | undefined;
  /** Base roots already checked to be reachable by the jails' uids. */
  private readonly checkedRoots = new Set<string>();
  private readonly isRoot = process.getuid?.() === 0;
  private cgroups: CgroupMode = { version: 0, why: "not detected yet" };
  private readonly cgroupScope: string;
  /** Links out for the instances of functions with egress. */
  private readonly egress: ProcessEgress;
  /** Forks the jails off the agent's event loop. */
  private readonly spawner = new JailSpawner();

  constructor(private readonly opts: ProcessDriverOptions) {
    this.instancesDir = path.join(opts.stateDir, "run", "instances");
    this.cgroupScope = scopeOf(opts.stateDir);
    this.egress = new ProcessEgress({
      names: egressNames(opts.stateDir, opts.egress?.subnet),
      run: execaRunner,
      isRoot: this.isRoot,
      has: (tool) => findOnPath(tool) !== undefined,
      uplink: opts.egress?.uplink,
      dnsResolver: opts.egress?.dnsResolver,
    });
  }

  egressProblems(): Promise<string[]> {
    return this.egress.problems();
  }

  /** Where this driver's instance cgroups live, relative to each hierarchy: faas/<scope>/<instance>. */
  get cgroupPath(): string {
    return `faas/${this.cgroupScope}`;
  }

  async preflight(): Promise<PreflightProblem[]> {
    return processSandboxProblems({
      isRoot: this.isRoot,
      cgroups: detectCgroups(),
      has: (tool) => findOnPath(tool) !== undefined,
      bwrapDisablesUserns: await this.detectDisableUserns(),
      jailFolders: jailFolderFacts(this.opts),
    });
  }

  private disableUserns: boolean | undefined;

  private async detectDisableUserns(): Promise<boolean | undefined> {
    if (this.disableUserns === undefined && findOnPath("bwrap") !== undefined) {
      const help = await execa("bwrap", ["--help"], { reject: false });
      this.disableUserns = bwrapDisablesUserns(`${help.stdout}\n${help.stderr}`);
    }
    return this.disableUserns;
  }

  async init(): Promise<void> {
    await this.detectDisableUserns();
    this.cgroups = this.isRoot ? detectCgroups() : { version: 0, why: "not root" };
    this.spawner.prepare();
    await mkdir(this.instancesDir, { recursive: true });
    // Jailed uids must traverse these to reach their own folders; nobody but root may list them.
    for (const dir of [this.opts.stateDir, path.dirname(this.instancesDir), this.instancesDir])
      await chmod(dir, 0o711);
    if (this.isRoot) await assertTraversable(path.resolve(this.opts.stateDir));
    const filter = hostSeccompFilter(process.arch, endianness() === "LE");
    if (filter) {
      this.seccompFile = path.join(path.dirname(this.instancesDir), "seccomp.bpf");
      await writeFile(this.seccompFile, filter, { mode: 0o600 });
    } else {
      this.opts.log.warn(
        { arch: process.arch },
        "no seccomp filter for this architecture: jails run without one",
      );
    }
    // A crashed agent's jails died with it (--die-with-parent); their folders and cgroups did not.
    let leftovers = 0;
    for (const name of await readdir(this.instancesDir)) {
      await forceRemove(path.join(this.instancesDir, name));
      leftovers++;
    }
    const cgroups = this.cgroups.version === 0 ? 0 : await reclaimCgroups(this.cgroups, this.cgroupScope);
    const egressLinks = await this.egress.reclaim().catch((err: Error) => {
      this.opts.log.warn({ err: err.message }, "could not reclaim a previous agent's egress links");
      return 0;
    });
    if (leftovers + cgroups + egressLinks > 0) {
      this.opts.log.warn(
        { instanceDirs: leftovers, cgroups, egressLinks },
        "reclaimed what a previous agent left behind",
      );
    }
    this.opts.log.info(
      {
        cgroups: this.cgroups.version === 0 ? `none (${this.cgroups.why})` : `v${this.cgroups.version}`,
        root: this.isRoot,
        seccomp: this.seccompFile !== undefined,
        // Said once at start, so an operator knows before a deploy asks for it (each ask checks anew).
        egress: (await this.egress.problems()).join("; ") || "available",
      },
      "process sandbox ready",
    );
  }

  private allocateUid(): number | null {
    if (!this.isRoot) return null;
    for (let i = 0; i < this.opts.uidCount; i++) {
      const uid = this.opts.uidBase + i;
      if (!this.usedUids.has(uid)) {
        this.usedUids.add(uid);
        return uid;
      }
    }
    throw new Error(`all ${this.opts.uidCount} sandbox uids from ${this.opts.uidBase} are in use`);
  }

  async start(spec: InstanceSpec): Promise<SandboxInstance> {
    if (this.closing) throw new SandboxStartError("the process sandbox is shutting down", spec.id);
    const starting = this.startInstance(spec);
    this.starting.add(starting);
    try {
      return await starting;
    } finally {
      this.starting.delete(starting);
    }
  }

  private async startInstance(spec: InstanceSpec): Promise<SandboxInstance> {
    const base = spec.base as InstanceSpec["base"] & { rootDir?: string };
    const rootDir = base.rootDir ?? path.join(base.dir, "root");
    if (this.isRoot && !this.checkedRoots.has(rootDir)) {
      try {
        await assertTraversable(path.join(rootDir, "node"));
      } catch (err) {
        throw new SandboxStartError((err as Error).message, spec.id);
      }
      this.checkedRoots.add(rootDir);
    }
    const dir = path.join(this.instancesDir, spec.id);
    const codeDir = path.join(dir, "code");
    const runDir = path.join(dir, "run");
    let uid: number | null = null;
    let cgroup: InstanceCgroup | undefined;
    /** Gives back what the jail's preparation took, for a start that does not go on to spawn. */
    const unprepare = async () => {
      if (uid !== null) this.usedUids.delete(uid);
      await cgroup?.remove().catch(() => undefined);
      await forceRemove(dir);
    };
    try {
      uid = this.allocateUid();
      await mkdir(codeDir, { recursive: true });
      await mkdir(runDir, { recursive: true, mode: 0o700 });
      if (uid !== null) await chown(runDir, uid, uid);
      cgroup = await createInstanceCgroup(
        this.cgroups,
        this.cgroupScope,
        spec.id,
        spec.limits,
        spec.background === true,
      );
    } catch (err) {
      await unprepare();
      throw new SandboxStartError(`could not prepare the jail: ${(err as Error).message}`, spec.id, {
        cause: err,
      });
    }
    // Checked after the awaits above and before the spawn below, with nothing awaited in between: a start
    // either sees the close, or its instance is in `live` when close() sweeps it.
    if (this.closing) {
      await unprepare();
      throw new SandboxStartError("the process sandbox is shutting down", spec.id);
    }
    const command = jailCommand({
      rootDir,
      codeDir,
      runDir,
      baseVersion: base.version,
      limits: spec.limits,
      hostId: uid,
      agentPid: process.pid,
      cgroupProcs: cgroup.procsFiles,
      disableUserns: this.disableUserns,
      // A generic refill waits for a call it does not know yet: only it gains by rehearsing one.
      warmUp: spec.background === true,
      ...(this.seccompFile === undefined ? {} : { seccompFile: this.seccompFile }),
    });
    const child = this.spawner.spawn(command.file, command.args, command.env);
    const instance = new ProcessInstance(spec, child, dir, codeDir, cgroup, this.opts, this.egress, () => {
      this.live.delete(spec.id);
      if (uid !== null) this.usedUids.delete(uid);
    });
    this.live.set(spec.id, instance);
    try {
      await instance.ready(this.opts.startTimeoutMs ?? 10_000);
      await instance.client.init({
        instanceId: spec.id,
        unixTimeMs: Date.now(),
        entropy: randomBytes(32).toString("base64"),
      });
      // A background start ran at a small CPU share so as not to slow the calls being served; it serves now.
      if (spec.background) await cgroup.serving();
    } catch (err) {
      await instance.destroy("start failed");
      const exit = await instance.exited;
      throw new SandboxStartError(
        `instance ${spec.id} did not start: ${(err as Error).message}${exit.cause === "exited" ? ` (${exit.reason})` : ""}`,
        spec.id,
        { cause: err },
      );
    }
    return instance;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.live.values()].map((i) => i.destroy("agent shutting down")));
    // Starts caught half-way clean up after themselves (their folders are under the state dir).
    await Promise.allSettled([...this.starting]);
    if (this.cgroups.version !== 0) await removeScope(this.cgroups, this.cgroupScope);
    await this.egress.close();
    // Last: the jails' parent-death signal is tied to the spawner's thread.
    await this.spawner.close();
  }
}

/** Every folder above `dir` must let other uids through, or no jail can bind anything below it. */
export async function assertTraversable(dir: string): Promise<void> {
  const { stat } = await import("node:fs/promises");
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) {
      throw new Error(
        `the sandbox's uids cannot reach ${dir}: ${d} is not searchable by others (chmod o+x ${d}, or set FAAS_STATE_DIR to a folder under /var/lib)`,
      );
    }
    if (d === path.dirname(d)) return;
  }
}

class ProcessInstance implements SandboxInstance {
  readonly id: string;
  readonly base: InstanceSpec["base"];
  readonly endpoint;
  readonly exited: Promise<SandboxExit>;
  readonly client: GuestClient;
  private readyWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private isReady = false;
  private destroyReason: string | undefined;
  private lastFatal: string | undefined;
  private stderrTail = "";
  private rawBudget: number;
  private codeAttached = false;
  /** The memory limit now: the base's at start, the function's once limitMemory set it. */
  private memoryMiB: number;
  /** The function whose code this instance runs: its log lines are attributed to it, whatever they say. */
  private functionName: string | null = null;
  /** The instance's link out, when its function has egress. */
  private egressLink: EgressLink | undefined;
  private closed = false;

  constructor(
    spec: InstanceSpec,
    private readonly child: JailProcess,
    private readonly dir: string,
    private readonly codeDir: string,
    private readonly cgroup: InstanceCgroup,
    private readonly opts: ProcessDriverOptions,
    private readonly egress: ProcessEgress,
    private readonly onGone: () => void,
  ) {
    this.id = spec.id;
    this.base = spec.base;
    this.endpoint = { kind: "unix" as const, socketPath: path.join(dir, "run", GUEST_SOCKET_NAME) };
    this.client = new GuestClient(this.endpoint);
    this.rawBudget = opts.rawOutputBudget ?? 1024 * 1024;
    this.memoryMiB = spec.limits.memoryMiB;
    const log = opts.log.child({ instance: spec.id });
    onBoundedLines(child.stdout, MAX_LINE_BYTES, (line, truncated) => {
      if (truncated) this.raw(log, "stdout", line);
      else this.onStdout(line, log);
    });
    onBoundedLines(child.stderr, MAX_LINE_BYTES, (line) => {
      this.stderrTail = `${this.stderrTail}${line}\n`.slice(-STDERR_TAIL);
      this.raw(log, "stderr", line);
    });
    this.exited = child.exited.then(async (result) => {
      const exit = await this.explain(result.exitCode, result.signal, this.memoryMiB, result.error);
      this.readyWaiter?.reject(new Error(exit.reason));
      await this.cleanup();
      log.info({ cause: exit.cause, code: exit.code, signal: exit.signal }, `instance gone: ${exit.reason}`);
      return exit;
    });
  }

  private raw(log: Logger, stream: string, text: string): void {
    if (this.rawBudget <= 0) return;
    this.rawBudget -= text.length;
    log.info(
      { stream },
      this.rawBudget > 0 ? text.trimEnd() : "raw output limit reached: further output dropped",
    );
  }

  private onStdout(line: string, log: Logger): void {
    let parsed: GuestLogLine | undefined;
    if (line.startsWith("{")) {
      try {
        parsed = JSON.parse(line) as GuestLogLine;
      } catch {
        parsed = undefined;
      }
    }
    if (!parsed) {
      this.raw(log, "stdout", line);
      return;
    }
    if (parsed.type === "ready") {
      this.isReady = true;
      this.readyWaiter?.resolve();
      return;
    }
    // The guest writes these lines, so they are untrusted: one not in the protocol's shape is raw output.
    const checked = checkConsoleLine(parsed, this.functionName);
    if (!checked) {
      this.raw(log, "stdout", line);
      return;
    }
    if (parsed.type === "fatal") this.lastFatal = checked.msg;
    const { fn, rid, level, msg } = checked;
    log[level]({ fn, rid, user: true }, msg);
    if (fn && this.opts.onUserLine) this.opts.onUserLine({ fn, rid, level, msg, instance: this.id });
  }

  ready(timeoutMs: number): Promise<void> {
    if (this.isReady) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ready signal within ${timeoutMs} ms`)), timeoutMs);
      this.readyWaiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  private async explain(
    code: number | null,
    signal: string | null,
    memoryMiB: number,
    startError?: string,
  ): Promise<SandboxExit> {
    if (this.destroyReason !== undefined) {
      return { cause: "destroyed", code, signal, reason: `stopped by the agent: ${this.destroyReason}` };
    }
    if (await this.cgroup.oomKilled()) {
      return { cause: "exited", code, signal, reason: `killed by the memory limit (${memoryMiB} MiB)` };
    }
    if (this.lastFatal) {
      return {
        cause: "exited",
        code,
        signal,
        reason: `the function crashed: ${this.lastFatal.split("\n")[0]}`,
      };
    }
    if (startError !== undefined)
      return { cause: "exited", code, signal, reason: `the jail could not be started: ${startError}` };
    if (code === 97) return { cause: "exited", code, signal, reason: "the jail could not join its cgroups" };
    if (code === AGENT_GONE_EXIT) {
      return {
        cause: "exited",
        code,
        signal,
        reason: "the agent that started the jail was gone before it ran",
      };
    }
    const tail = this.stderrTail.trim().split("\n").slice(-1)[0];
    const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
    return {
      cause: "exited",
      code,
      signal,
      reason: tail ? `the instance ${how}: ${tail}` : `the instance ${how}`,
    };
  }

  async attachCode(code: CodeArtifact): Promise<void> {
    if (this.codeAttached) throw new Error(`instance ${this.id} already has code attached`);
    this.codeAttached = true;
    this.functionName = code.functionName;
    await linkCodeTree(code.hostPath, this.codeDir);
  }

  async destroy(reason: string): Promise<void> {
    if (this.destroyReason === undefined && this.child.exitCode === null) {
      this.destroyReason = reason;
      this.child.kill("SIGKILL");
    }
    // Killing bwrap is not enough: a jail killed while bwrap is still setting it up can miss
    // --die-with-parent and live on, holding the output pipes (so `exited` would never resolve). Every
    // process of the jail is in its cgroup: kill them all there, until the instance is gone.
    const gone = this.exited.then(() => true);
    for (let attempt = 0; attempt < 200; attempt++) {
      await this.cgroup.kill().catch(() => undefined);
      if (await Promise.race([gone, new Promise<false>((r) => setTimeout(() => r(false), 50))])) return;
    }
    await this.exited;
  }

  private async cleanup(): Promise<void> {
    this.closed = true;
    await this.client.close();
    if (this.egressLink) await this.egress.release(this.egressLink);
    try {
      await this.cgroup.remove();
    } catch (err) {
      this.opts.log.error({ instance: this.id, err }, "could not remove the instance's cgroup");
    }
    if (existsSync(this.dir)) await forceRemove(this.dir);
    this.onGone();
  }

  /**
   * A link out into the jail's own network namespace (until now it had only a loopback): the process
   * that holds the namespace is bwrap's first child, the jail's pid 1.
   */
  async openEgress(): Promise<void> {
    if (this.egressLink) return;
    const pid = this.child.pid;
    const first =
      pid === undefined ? "" : await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
    const jailPid = Number(first.trim().split(/\s+/)[0]);
    if (!Number.isInteger(jailPid) || jailPid <= 0) {
      throw new Error(`instance ${this.id} has no jail process to open egress in`);
    }
    const link = await this.egress.open(jailPid);
    // Ended while the link was being made: cleanup ran before the link existed, so give it back here.
    if (this.closed) await this.egress.release(link);
    else this.egressLink = link;
  }

  /** A function's own memory, within what the instance started with (the pool reserved that much). */
  async limitMemory(memoryMiB: number): Promise<void> {
    const mib = Math.min(memoryMiB, this.memoryMiB);
    await this.cgroup.setMemoryLimit(mib * 1024 * 1024);
    this.memoryMiB = mib;
  }

  memoryBytes(): Promise<number> {
    return this.cgroup.memoryBytes();
  }
}
