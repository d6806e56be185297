/**
 * Per-instance cgroups for the process sandbox: memory, CPU time and pids limits, written before the
 * runtime starts. cgroup v2 where its controllers are enabled, v1 otherwise (these build machines have v1
 * controllers and an empty v2 hierarchy).
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { SandboxLimits } from "../driver.ts";

export type CgroupMode =
  | { readonly version: 2; readonly root: string }
  | { readonly version: 1; readonly mounts: { memory: string; cpu: string; pids: string } }
  | { readonly version: 0; readonly why: string };

/**
 * Instance cgroups live under faas/<scope>, the scope naming one agent (a hash of its state dir): a
 * restarted agent reclaims exactly what its crashed predecessor left, never another agent's instances.
 */
export function cgroupScope(stateDir: string): string {
  return createHash("sha256").update(path.resolve(stateDir)).digest("hex").slice(0, 12);
}

/** A cgroup path below a hierarchy's mount point, without a trailing slash. */
const under = (mount: string, cgroup = "/") => path.resolve(mount, `.${cgroup}`);
const NEEDED_V2 = ["cpu", "memory", "pids"];

/** The agent's own cgroup path per v1 controller ("" key for v2), from /proc/self/cgroup. */
export function ownCgroupPaths(text: string): Map<string, string> {
  const own = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const controller of m[1]!.split(",")) own.set(controller, m[2]!);
  }
  return own;
}

/**
 * Finds which cgroup hierarchy can hold our limits. Instance cgroups nest under the agent's own cgroup,
 * so whatever limits the agent's supervisor set also bound the sandboxes.
 */
export function detectCgroups(
  mountsText = readFileSync("/proc/self/mounts", "utf8"),
  selfText = readFileSync("/proc/self/cgroup", "utf8"),
): CgroupMode {
  const own = ownCgroupPaths(selfText);
  const mounts = mountsText
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f.length >= 4);
  for (const [, dir, type] of mounts) {
    if (type !== "cgroup2" || !dir) continue;
    try {
      const controllers = readFileSync(path.join(dir, "cgroup.controllers"), "utf8").split(/\s+/);
      if (NEEDED_V2.every((c) => controllers.includes(c)))
        return { version: 2, root: under(dir, own.get("")) };
    } catch {
      // Not readable: keep looking.
    }
  }
  const v1: Partial<Record<"memory" | "cpu" | "pids", string>> = {};
  for (const [, dir, type, options] of mounts) {
    if (type !== "cgroup" || !dir || !options) continue;
    const opts = options.split(",");
    for (const c of ["memory", "cpu", "pids"] as const) if (opts.includes(c) && !v1[c]) v1[c] = dir;
  }
  if (v1.memory && v1.cpu && v1.pids) {
    const at = (c: "memory" | "cpu" | "pids") => under(v1[c]!, own.get(c));
    return { version: 1, mounts: { memory: at("memory"), cpu: at("cpu"), pids: at("pids") } };
  }
  return {
    version: 0,
    why: "no cgroup v2 hierarchy with cpu, memory and pids, and no v1 mounts of all three",
  };
}

export interface InstanceCgroup {
  /** Files to write the sandbox's first pid into, before it execs the runtime. */
  readonly procsFiles: string[];
  /** True when the kernel killed something in this cgroup for exceeding its memory limit. */
  oomKilled(): Promise<boolean>;
  /** Current memory use in bytes (0 when unknown). */
  memoryBytes(): Promise<number>;
  /** Sets the memory limit (and the swap limit with it), bytes. */
  setMemoryLimit(bytes: number): Promise<void>;
  /** Gives the jail a full CPU share: it has started and serves now (see STARTING_CPU_WEIGHT). */
  serving(): Promise<void>;
  /** Kills every process in the cgroup (the whole jail), leaving the cgroup in place. */
  kill(): Promise<void>;
  /** Kills whatever is left in the cgroup and removes it. */
  remove(): Promise<void>;
}

async function killAll(procsFile: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(procsFile, "utf8");
  } catch {
    return;
  }
  for (const pid of text.split("\n").filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

async function removeDir(dir: string, procsFile: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    await killAll(procsFile);
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY") throw err;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  throw new Error(`cgroup ${dir} still busy after killing its processes`);
}

/**
 * cgroup v2 allows controllers for children only in a cgroup without processes of its own: when the
 * agent sits in its (delegated) service cgroup, it moves itself into a leaf "agent" child first.
 */
async function enableControllersV2(root: string): Promise<void> {
  const control = path.join(root, "cgroup.subtree_control");
  const current = await readFile(control, "utf8").catch(() => "");
  if (NEEDED_V2.every((c) => current.split(/\s+/).includes(c))) return;
  try {
    await writeFile(control, "+cpu +memory +pids");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EBUSY") throw err;
    const leaf = path.join(root, "agent");
    await mkdir(leaf, { recursive: true });
    for (const pid of (await readFile(path.join(root, "cgroup.procs"), "utf8")).split("\n").filter(Boolean)) {
      await writeFile(path.join(leaf, "cgroup.procs"), pid).catch(() => undefined);
    }
    await writeFile(control, "+cpu +memory +pids");
  }
}

/**
 * The CPU share of a jail started in the background (a generic refill no call waits for) against the
 * serving ones (cgroup v2 cpu.weight; the default is 100). A jail start (bwrap, then node from the
 * snapshot) is about 100 ms of CPU; on a small host a refill would otherwise take the CPU from the calls
 * being served (a first call's module load above all). The weight only matters under contention: alone,
 * a starting jail gets all idle CPU. A start a call waits for keeps the full share.
 */
export const STARTING_CPU_WEIGHT = 10;
const SERVING_CPU_WEIGHT = 100;
/** The same shares for cgroup v1 (cpu.shares; the default is 1024). */
const V1_SHARES_PER_WEIGHT = 1024 / SERVING_CPU_WEIGHT;

export async function createInstanceCgroup(
  mode: CgroupMode,
  scope: string,
  id: string,
  limits: SandboxLimits,
  /** A start no call waits for: begun at STARTING_CPU_WEIGHT instead of the full share. */
  background = false,
): Promise<InstanceCgroup> {
  const weight = background ? STARTING_CPU_WEIGHT : SERVING_CPU_WEIGHT;
  const memoryBytes = limits.memoryMiB * 1024 * 1024;
  const periodUs = 100_000;
  const quotaUs = Math.round((limits.cpuPercent / 100) * periodUs);
  if (mode.version === 2) {
    const parent = path.join(mode.root, "faas", scope);
    await mkdir(parent, { recursive: true });
    await enableControllersV2(mode.root);
    await writeFile(path.join(mode.root, "faas", "cgroup.subtree_control"), "+cpu +memory +pids");
    await writeFile(path.join(parent, "cgroup.subtree_control"), "+cpu +memory +pids");
    const dir = path.join(parent, id);
    await mkdir(dir);
    await writeFile(path.join(dir, "memory.max"), String(memoryBytes));
    await writeFile(path.join(dir, "memory.swap.max"), "0").catch(() => undefined);
    await writeFile(path.join(dir, "cpu.max"), `${quotaUs} ${periodUs}`);
    await writeFile(path.join(dir, "cpu.weight"), String(weight));
    await writeFile(path.join(dir, "pids.max"), String(limits.pids));
    const procs = path.join(dir, "cgroup.procs");
    return {
      procsFiles: [procs],
      async oomKilled() {
        const events = await readFile(path.join(dir, "memory.events"), "utf8").catch(() => "");
        return /^oom_kill [1-9]/m.test(events);
      },
      async memoryBytes() {
        return Number(await readFile(path.join(dir, "memory.current"), "utf8").catch(() => "0"));
      },
      async setMemoryLimit(bytes) {
        await writeFile(path.join(dir, "memory.max"), String(bytes));
      },
      async serving() {
        await writeFile(path.join(dir, "cpu.weight"), String(SERVING_CPU_WEIGHT));
      },
      async kill() {
        await writeFile(path.join(dir, "cgroup.kill"), "1").catch(() => undefined);
        await killAll(procs);
      },
      async remove() {
        await writeFile(path.join(dir, "cgroup.kill"), "1").catch(() => undefined);
        await removeDir(dir, procs);
      },
    };
  }
  if (mode.version === 1) {
    const dirs = {
      memory: path.join(mode.mounts.memory, "faas", scope, id),
      cpu: path.join(mode.mounts.cpu, "faas", scope, id),
      pids: path.join(mode.mounts.pids, "faas", scope, id),
    };
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
    await writeFile(path.join(dirs.memory, "memory.limit_in_bytes"), String(memoryBytes));
    // Without this, a sandbox could use swap beyond its memory limit.
    await writeFile(path.join(dirs.memory, "memory.memsw.limit_in_bytes"), String(memoryBytes)).catch(
      () => undefined,
    );
    await writeFile(path.join(dirs.cpu, "cpu.cfs_period_us"), String(periodUs));
    await writeFile(path.join(dirs.cpu, "cpu.cfs_quota_us"), String(quotaUs));
    await writeFile(path.join(dirs.cpu, "cpu.shares"), String(Math.round(weight * V1_SHARES_PER_WEIGHT)));
    await writeFile(path.join(dirs.pids, "pids.max"), String(limits.pids));
    return {
      procsFiles: [dirs.memory, dirs.cpu, dirs.pids].map((d) => path.join(d, "cgroup.procs")),
      async oomKilled() {
        const control = await readFile(path.join(dirs.memory, "memory.oom_control"), "utf8").catch(() => "");
        return /^oom_kill [1-9]/m.test(control);
      },
      async memoryBytes() {
        return Number(
          await readFile(path.join(dirs.memory, "memory.usage_in_bytes"), "utf8").catch(() => "0"),
        );
      },
      async setMemoryLimit(bytes) {
        // memsw may never be below the memory limit: lowering, the memory limit goes first.
        await writeFile(path.join(dirs.memory, "memory.limit_in_bytes"), String(bytes));
        await writeFile(path.join(dirs.memory, "memory.memsw.limit_in_bytes"), String(bytes)).catch(
          () => undefined,
        );
      },
      async serving() {
        await writeFile(
          path.join(dirs.cpu, "cpu.shares"),
          String(Math.round(SERVING_CPU_WEIGHT * V1_SHARES_PER_WEIGHT)),
        );
      },
      async kill() {
        await killAll(path.join(dirs.pids, "cgroup.procs"));
      },
      async remove() {
        // The pids hierarchy first: it holds every task of the sandbox.
        await removeDir(dirs.pids, path.join(dirs.pids, "cgroup.procs"));
        await removeDir(dirs.memory, path.join(dirs.memory, "cgroup.procs"));
        await removeDir(dirs.cpu, path.join(dirs.cpu, "cgroup.procs"));
      },
    };
  }
  return {
    procsFiles: [],
    oomKilled: async () => false,
    memoryBytes: async () => 0,
    setMemoryLimit: async () => undefined,
    serving: async () => undefined,
    kill: async () => undefined,
    remove: async () => undefined,
  };
}

/** Removes this agent's (now empty) scope cgroups when it stops, so stopped agents leave nothing behind. */
export async function removeScope(mode: CgroupMode, scope: string): Promise<void> {
  const dirs =
    mode.version === 2
      ? [path.join(mode.root, "faas", scope)]
      : mode.version === 1
        ? [mode.mounts.pids, mode.mounts.memory, mode.mounts.cpu].map((m) => path.join(m, "faas", scope))
        : [];
  for (const dir of dirs) await rmdir(dir).catch(() => undefined);
}

/** Removes the instance cgroups a crashed agent with this scope left behind. Returns how many. */
export async function reclaimCgroups(mode: CgroupMode, scope: string): Promise<number> {
  const parents =
    mode.version === 2
      ? [path.join(mode.root, "faas", scope)]
      : mode.version === 1
        ? [mode.mounts.pids, mode.mounts.memory, mode.mounts.cpu].map((m) => path.join(m, "faas", scope))
        : [];
  let removed = 0;
  for (const parent of parents) {
    if (!existsSync(parent)) continue;
    for (const item of await readdir(parent, { withFileTypes: true })) {
      if (!item.isDirectory()) continue;
      const dir = path.join(parent, item.name);
      if (mode.version === 2) await writeFile(path.join(dir, "cgroup.kill"), "1").catch(() => undefined);
      await removeDir(dir, path.join(dir, "cgroup.procs"));
      removed++;
    }
  }
  return removed;
}
