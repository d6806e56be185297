/**
 * A `SpawnVmm` that runs the QEMU adapter instead of the jailer + Firecracker, confined the way the
 * jailer would confine Firecracker: its files are the staged jail (jail paths are mapped under the
 * jail root; QEMU itself is not chrooted because its exec: migrations need /bin/sh), it runs in the
 * slot's network namespace (nsenter on the jailer's --netns path), under the VM's own cgroup (v2 when
 * the controllers are there, the v1 hierarchies otherwise), with the jailer's rlimits (prlimit), drops
 * to the VM's uid/gid (-runas) once its files and devices are open, and is bound to the agent: it runs
 * in a PID namespace whose init is killed when the agent dies (as the jailer's --new-pid-ns gives Firecracker one).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chown, mkdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AGENT_GONE_EXIT, AGENT_PID_ENV, boundToAgentCommand } from "../bound-to-agent.ts";
import { onBoundedLines } from "../bounded-lines.ts";
import { AdapterApiServer, type BodyValidator } from "./qemu-api-server.ts";
import { type Accelerator, type QemuMachine, withQemuMemoryOverhead } from "./qemu-argv.ts";
import { type QemuProcess, QemuVmm } from "./qemu-vmm.ts";
import type { SpawnVmm, VmmExit, VmmProcess } from "./vmm-process.ts";

/** What the spawner takes from the jailer's argv (built by jailer-args.ts). */
export interface JailerArgvPlan {
  readonly id: string;
  readonly uid: number;
  readonly gid: number;
  readonly netnsPath?: string;
  readonly parentCgroup: string;
  /** `file=value` cgroup v2 settings. */
  readonly cgroups: readonly string[];
  /** `fsize=N`, `no-file=N`. */
  readonly resourceLimits: readonly string[];
}

export function parseJailerArgv(argv: readonly string[]): JailerArgvPlan {
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    const end = argv.indexOf("--");
    if (i < 0 || (end >= 0 && i > end)) return undefined;
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`jailer argv: ${flag} has no value`);
    return v;
  };
  const all = (flag: string): string[] => {
    const out: string[] = [];
    const end = argv.indexOf("--") < 0 ? argv.length : argv.indexOf("--");
    for (let i = 0; i < end; i++) if (argv[i] === flag && argv[i + 1] !== undefined) out.push(argv[i + 1]!);
    return out;
  };
  const id = value("--id");
  const uid = Number(value("--uid"));
  const gid = Number(value("--gid"));
  if (!id) throw new Error("jailer argv has no --id");
  if (!Number.isInteger(uid) || uid <= 0 || !Number.isInteger(gid) || gid <= 0)
    throw new Error(`jailer argv: a VM never runs as root (--uid ${uid} --gid ${gid})`);
  const netnsPath = value("--netns");
  return {
    id,
    uid,
    gid,
    ...(netnsPath ? { netnsPath } : {}),
    parentCgroup: value("--parent-cgroup") ?? "snapfaas",
    cgroups: all("--cgroup"),
    resourceLimits: all("--resource-limit"),
  };
}

export type CgroupLayout = "v2" | "v1";

export interface CgroupPlan {
  /** Folders to create, parents first. */
  readonly dirs: string[];
  readonly writes: { readonly file: string; readonly value: string }[];
  /** `cgroup.procs` files the VMM joins before it execs QEMU. */
  readonly procs: string[];
  /** Folders to remove (rmdir) after the VMM is gone, children first. */
  readonly removeDirs: string[];
}

/**
 * Where a VM's cgroup settings go. v2: `<root>/<parent>/<id>/<file>`, as the jailer does. v1 (hybrid
 * hosts whose v2 hierarchy has no controllers): each setting mapped to its controller's file under
 * `<root>/<controller>/<parent>/<id>`. Pure.
 */
export function planCgroups(
  layout: CgroupLayout,
  cgroupRoot: string,
  parent: string,
  id: string,
  settings: readonly string[],
): CgroupPlan {
  const root = cgroupRoot.replace(/\/+$/, "");
  const parsed = settings.map((s) => {
    const eq = s.indexOf("=");
    if (eq < 0) throw new Error(`cgroup setting must be file=value: ${s}`);
    return { file: s.slice(0, eq), value: s.slice(eq + 1) };
  });
  if (layout === "v2") {
    const dir = `${root}/${parent}/${id}`;
    return {
      dirs: [...ancestors(root, parent), dir],
      writes: parsed.map((p) => ({ file: `${dir}/${p.file}`, value: p.value })),
      procs: [`${dir}/cgroup.procs`],
      removeDirs: [],
    };
  }
  const writes: { controller: string; file: string; value: string }[] = [];
  for (const { file, value } of parsed) {
    if (file === "memory.max")
      writes.push({
        controller: "memory",
        file: "memory.limit_in_bytes",
        value: value === "max" ? "-1" : value,
      });
    else if (file === "cpu.max") {
      const [quota, period] = value.split(" ");
      if (period) writes.push({ controller: "cpu", file: "cpu.cfs_period_us", value: period });
      writes.push({
        controller: "cpu",
        file: "cpu.cfs_quota_us",
        value: quota === "max" ? "-1" : String(quota),
      });
    } else if (file === "pids.max") writes.push({ controller: "pids", file: "pids.max", value });
    else if (file === "io.max") {
      const [device, ...budgets] = value.split(" ");
      const v1File: Record<string, string> = {
        rbps: "blkio.throttle.read_bps_device",
        wbps: "blkio.throttle.write_bps_device",
        riops: "blkio.throttle.read_iops_device",
        wiops: "blkio.throttle.write_iops_device",
      };
      for (const budget of budgets) {
        const [key, n] = budget.split("=");
        const target = v1File[key ?? ""];
        if (!target || !n) throw new Error(`io.max budget must be rbps|wbps|riops|wiops=N: ${budget}`);
        writes.push({ controller: "blkio", file: target, value: `${device} ${n}` });
      }
    } else
      throw new Error(`no cgroup v1 equivalent for ${file} (allowed: memory.max, cpu.max, io.max, pids.max)`);
  }
  const controllers = [...new Set(writes.map((w) => w.controller))];
  const dirOf = (c: string) => `${root}/${c}/${parent}/${id}`;
  return {
    dirs: controllers.flatMap((c) => [...ancestors(`${root}/${c}`, parent), dirOf(c)]),
    writes: writes.map((w) => ({ file: `${dirOf(w.controller)}/${w.file}`, value: w.value })),
    procs: controllers.map((c) => `${dirOf(c)}/cgroup.procs`),
    removeDirs: controllers.map(dirOf),
  };
}

function ancestors(root: string, parent: string): string[] {
  const parts = parent.split("/").filter((p) => p.length > 0);
  return parts.map((_, i) => `${root}/${parts.slice(0, i + 1).join("/")}`);
}

/** v2 when `<root>/cgroup.controllers` lists every controller the settings need; v1 otherwise. */
export async function detectCgroupLayout(
  cgroupRoot: string,
  settings: readonly string[],
): Promise<CgroupLayout> {
  const needed = new Set(settings.map((s) => s.slice(0, s.indexOf("."))));
  const text = await readFile(join(cgroupRoot, "cgroup.controllers"), "utf8").catch(() => undefined);
  if (text === undefined) return "v1";
  const available = new Set(text.trim().split(/\s+/));
  return [...needed].every((c) => available.has(c)) ? "v2" : "v1";
}

/** prlimit flags for the jailer's `--resource-limit` values. */
export function prlimitArgs(resourceLimits: readonly string[]): string[] {
  return resourceLimits.map((limit) => {
    const match = /^(fsize|no-file)=(\d+)$/.exec(limit);
    if (!match) throw new Error(`resource limit must be fsize=N or no-file=N: ${limit}`);
    return match[1] === "fsize" ? `--fsize=${match[2]}` : `--nofile=${match[2]}`;
  });
}

/**
 * As pid 1 of QEMU's PID namespace: joins the cgroups listed in $SNAPFAAS_CGROUP_PROCS, then runs QEMU
 * as its child and ends with it. Not `exec`: this shell stays pid 1, so when it is killed (with its
 * agent, below) the kernel kills QEMU with it, though QEMU's -runas cleared QEMU's own death signal.
 * The child writes its host pid (what the host's /proc/self names) to $SNAPFAAS_PID_FILE, as the jailer
 * writes Firecracker's, before it becomes QEMU.
 */
const JOIN_AND_RUN = [
  'for f in $SNAPFAAS_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done',
  "unset SNAPFAAS_CGROUP_PROCS",
  '(read -r pid _ < /proc/self/stat && echo "$pid" > "$SNAPFAAS_PID_FILE" || exit 124; unset SNAPFAAS_PID_FILE; exec "$@")',
  "exit $?",
].join("; ");

/**
 * The full command: nsenter (slot netns) -> setpriv (parent-death signal) -> sh (exits unless the agent is
 * still the parent) -> unshare (a PID namespace whose init dies with it) -> prlimit -> sh (cgroups, pid 1)
 * -> QEMU, which drops to the VM's uid itself (-runas) once its files and devices are open. Everything up
 * to unshare is one pid, the agent's child: killing it kills the namespace.
 */
export function confinedCommand(
  plan: JailerArgvPlan,
  qemuPath: string,
  qemuArgv: readonly string[],
): string[] {
  return [
    ...(plan.netnsPath ? ["nsenter", `--net=${plan.netnsPath}`, "--"] : []),
    ...boundToAgentCommand("snapfaas-qemu-bound"),
    "unshare",
    "--pid",
    "--fork",
    "--kill-child=SIGKILL",
    "--",
    "prlimit",
    ...prlimitArgs(plan.resourceLimits),
    "--",
    "/bin/sh",
    "-c",
    JOIN_AND_RUN,
    "snapfaas-qemu",
    qemuPath,
    ...qemuArgv,
  ];
}

/** The environment the confined command reads (besides the agent's own). */
export function confinedEnv(cgroupProcs: readonly string[], pidFilePath: string): Record<string, string> {
  return {
    SNAPFAAS_CGROUP_PROCS: cgroupProcs.join(" "),
    SNAPFAAS_PID_FILE: pidFilePath,
    [AGENT_PID_ENV]: String(process.pid),
  };
}

export interface QemuSpawnerOptions {
  readonly qemuPath: string;
  /** The accelerator, or how to decide it once (the "auto" probe runs at the first spawn). */
  readonly accelerator: Accelerator | (() => Promise<Accelerator>);
  /** Host TSC in kHz, passed to TCG guests as tsc_early_khz. */
  readonly tscKhz?: number;
  /** The machine of a cold boot (a bake): qemuMachineForGuest(the base's guest). Restores read theirs from the vmstate. */
  readonly machine?: QemuMachine;
  readonly cgroupRoot: string;
  /** An additional check of every API body (tests pass the official spec's). */
  readonly extraValidator?: BodyValidator;
  readonly migrationTimeoutMs?: number;
  /** Added to the jailer's memory.max: QEMU's own memory beyond Firecracker's (default 128 MiB). */
  readonly memoryOverheadMiB?: number;
  /** Each line of the guest's serial console (not kept otherwise, beyond a short tail for exit reasons). */
  readonly onConsoleLine?: (id: string, line: string) => void;
}

const TAIL = 2048;
/** QEMU's RSS beyond the guest: ~40 MiB of device model and libraries plus the bounded TCG cache, with room. */
const QEMU_MEMORY_OVERHEAD_MIB = 128;

export function qemuSpawner(options: QemuSpawnerOptions): SpawnVmm {
  let decided: Promise<Accelerator> | undefined;
  const accelerator = (): Promise<Accelerator> => {
    const choice = options.accelerator;
    decided ??= typeof choice === "function" ? choice() : Promise.resolve(choice);
    return decided;
  };
  return async (request) => {
    const accel = await accelerator();
    const plan = parseJailerArgv(request.jailerArgv);
    const runDir = join(request.jailRoot, "run");
    await mkdir(runDir, { recursive: true, mode: 0o700 });
    await chown(runDir, plan.uid, plan.gid);
    const settings = withQemuMemoryOverhead(
      plan.cgroups,
      options.memoryOverheadMiB ?? QEMU_MEMORY_OVERHEAD_MIB,
    );
    const layout = await detectCgroupLayout(options.cgroupRoot, settings);
    const cgroups = planCgroups(layout, options.cgroupRoot, plan.parentCgroup, plan.id, settings);
    let resolveExit!: (exit: VmmExit) => void;
    const exited = new Promise<VmmExit>((resolve) => {
      resolveExit = resolve;
    });
    let api: AdapterApiServer | undefined;
    let ended = false;
    const end = async (exit: VmmExit): Promise<void> => {
      if (ended) return;
      ended = true;
      await vmm.kill().catch(() => undefined);
      await api?.close().catch(() => undefined);
      for (const dir of cgroups.removeDirs) await rmdir(dir).catch(() => undefined);
      resolveExit(exit);
    };
    const vmm = new QemuVmm({
      id: plan.id,
      accelerator: accel,
      ...(options.machine ? { machine: options.machine } : {}),
      ...(options.tscKhz !== undefined ? { tscKhz: options.tscKhz } : {}),
      hostPath: (jailPath) => join(request.jailRoot, jailPath),
      qmpSocketPath: join(runDir, "qemu-qmp.socket"),
      bootMemoryPath: join(runDir, "qemu-guest-memory"),
      runAs: { uid: plan.uid, gid: plan.gid },
      ...(options.migrationTimeoutMs !== undefined ? { migrationTimeoutMs: options.migrationTimeoutMs } : {}),
      launch: async (qemuArgv) => {
        await applyCgroups(cgroups);
        // Where the jailer writes Firecracker's pid: a later agent's init() finds and ends a leftover.
        await rm(request.pidFilePath, { force: true });
        return launchConfined(
          confinedCommand(plan, options.qemuPath, qemuArgv),
          confinedEnv(cgroups.procs, request.pidFilePath),
          request.pidFilePath,
          (line) => options.onConsoleLine?.(plan.id, line),
        );
      },
    });
    vmm.onQemuExit((reason) => void end({ code: null, signal: null, description: reason }));
    api = await AdapterApiServer.listen({
      socketPath: request.apiSocketPath,
      handler: (route, id, body) => vmm.handle(route, id, body),
      onFatalAnswer: (fault) =>
        void end({ code: null, signal: null, description: `the VMM exited: ${fault}` }),
      ...(options.extraValidator ? { extraValidator: options.extraValidator } : {}),
    });
    const process: VmmProcess & { readonly api: AdapterApiServer; readonly vmm: QemuVmm } = {
      get pid() {
        return vmm.pid;
      },
      apiSocketPath: request.apiSocketPath,
      exited,
      api,
      vmm,
      async kill() {
        await end({ code: null, signal: "SIGKILL", description: "killed by the agent" });
      },
    };
    return process;
  };
}

async function applyCgroups(plan: CgroupPlan): Promise<void> {
  for (const dir of plan.dirs) {
    await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
  }
  for (const w of plan.writes) {
    await writeFile(w.file, w.value).catch((err: Error) => {
      throw new Error(`cannot set ${w.file} = ${w.value}: ${err.message}`);
    });
  }
}

async function launchConfined(
  command: string[],
  env: Record<string, string>,
  pidFilePath: string,
  onConsoleLine: (line: string) => void,
): Promise<QemuProcess> {
  const [file, ...args] = command as [string, ...string[]];
  const child: ChildProcess = spawn(file, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
    // Its own process group: a terminal's Ctrl-C reaches only the agent, which stops its VMs in order
    // (as the jailer's daemonized Firecracker is out of the terminal's reach).
    detached: true,
  });
  let consoleTail = "";
  let stderrTail = "";
  if (child.stdout)
    onBoundedLines(child.stdout, TAIL, (line) => {
      consoleTail = `${consoleTail}${line}\n`.slice(-TAIL);
      onConsoleLine(line);
    });
  if (child.stderr)
    onBoundedLines(child.stderr, TAIL, (line) => {
      stderrTail = `${stderrTail}${line}\n`.slice(-TAIL);
    });
  const exited = new Promise<string>((resolve) => {
    child.once("error", (err) => resolve(`QEMU could not start: ${err.message}`));
    child.once("close", (code, signal) => {
      const how =
        code === 125
          ? "could not join its cgroup"
          : code === 124
            ? "could not write its pid file"
            : code === AGENT_GONE_EXIT
              ? "did not start: its agent is gone"
              : `exited (${code ?? signal})`;
      resolve(
        `QEMU ${how}: ${stderrTail.trim().slice(-400) || "no stderr"}; console: ${consoleTail.trim().slice(-300)}`,
      );
    });
  });
  let done = false;
  void exited.then(() => {
    done = true;
  });
  const pid = await qemuPid(pidFilePath, () => done);
  return {
    pid,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        // QEMU itself, so its parent (pid 1 of the namespace) reaps it and the chain ends in order: a
        // process orphaned by the namespace's end waits for the host's init to reap it, and holds its
        // cgroup until then. The namespace's holder when QEMU's pid is not known.
        try {
          if (pid !== undefined) process.kill(pid, "SIGKILL");
          else child.kill("SIGKILL");
        } catch {
          // QEMU is already gone; its chain ends by itself
        }
      }
      await exited;
    },
  };
}

/** QEMU's host pid, once the confining shell has written it (undefined if it ended first). */
async function qemuPid(pidFilePath: string, ended: () => boolean): Promise<number | undefined> {
  for (let waited = 0; waited < 10_000 && !ended(); waited += 5) {
    const pid = Number.parseInt(await readFile(pidFilePath, "utf8").catch(() => ""), 10);
    if (Number.isInteger(pid) && pid > 1) return pid;
    await new Promise((r) => setTimeout(r, 5));
  }
  return undefined;
}
