/**
 * CPU time per call, by process: /proc/<pid>/stat utime (user) and stime (kernel, on the process's
 * behalf: its syscalls, socket hops and page faults) of each process tree before and after a load phase,
 * divided by the calls the phase served. The machine's own total (/proc/stat) is read too: it includes
 * whatever else the machine ran meanwhile, and the softirq time of the sockets, charged to no process.
 */
import { readdirSync, readFileSync } from "node:fs";

/** Clock ticks per second of /proc's times (USER_HZ, 100 on every Linux this runs on). */
const TICK_MS = 10;

export interface CpuTimes {
  readonly userMs: number;
  readonly sysMs: number;
}

function statOf(pid: number): { ppid: number; userMs: number; sysMs: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(f[1]), userMs: Number(f[11]) * TICK_MS, sysMs: Number(f[12]) * TICK_MS };
}

/** Every live process under `root` (not `root` itself). */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = statOf(pid);
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

/** Summed times of these processes (gone ones count zero: sample only processes that live through the phase). */
export function cpuOf(pids: readonly number[]): CpuTimes {
  let userMs = 0;
  let sysMs = 0;
  for (const pid of pids) {
    const s = statOf(pid);
    if (s) {
      userMs += s.userMs;
      sysMs += s.sysMs;
    }
  }
  return { userMs, sysMs };
}

/** Busy time of the whole machine (all CPUs: everything but idle and iowait), ms. */
export function machineBusyMs(): number {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = cpu as number[];
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * TICK_MS;
}

export interface CpuRole {
  readonly name: string;
  readonly pids: readonly number[];
}

export interface CpuPerCall {
  /** µs of CPU per call, by role, user and kernel. */
  readonly roles: Record<string, { userUs: number; sysUs: number }>;
  /** µs per call of the whole machine's busy time (other work included). */
  readonly machineUs: number;
}

/** Samples the roles' CPU around `phase`, which returns how many calls it served. */
export async function cpuPerCall<T extends { requests: number }>(
  roles: readonly CpuRole[],
  phase: () => Promise<T>,
): Promise<{ result: T; cpu: CpuPerCall }> {
  const generator = { name: "load generator", pids: [process.pid] };
  const all = [...roles, generator];
  const before = all.map((r) => cpuOf(r.pids));
  const machine0 = machineBusyMs();
  const result = await phase();
  const machine1 = machineBusyMs();
  const after = all.map((r) => cpuOf(r.pids));
  const calls = Math.max(1, result.requests);
  const us = (ms: number) => Math.round((ms * 1000) / calls);
  const out: Record<string, { userUs: number; sysUs: number }> = {};
  all.forEach((r, i) => {
    out[r.name] = {
      userUs: us(after[i]!.userMs - before[i]!.userMs),
      sysUs: us(after[i]!.sysMs - before[i]!.sysMs),
    };
  });
  return { result, cpu: { roles: out, machineUs: us(machine1 - machine0) } };
}
