/**
 * A real agent on restored microVMs for the VM suites: the local Linux base baked on the QEMU backend
 * (TCG) into a state dir of its own (host-agent/cli/local-vm-base.ts, what `faas start` does), then the
 * agent in this process with the firecracker driver, talked to only through its HTTP planes. Also the
 * host-side views a test needs to point at one clone: which QEMU serves a slot, which slot a guest
 * peer address belongs to. Needs root, qemu-system-x86_64 and the cached Linux image.
 */
import { readdir, readFile, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import type { Context } from "mocha";
import {
  type FirecrackerDriverConfig,
  parseFirecrackerDriverConfig,
} from "../../contracts/firecracker-driver-config.ts";
import { localVmBase, localVmHostNames, localVmPoolDefaults } from "../../host-agent/cli/local-vm-base.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";
import { linuxImageOrSkip, requireQemu } from "../firecracker/qemu-helpers.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";

export interface VmAgent {
  readonly agent: TestAgent;
  readonly driver: FirecrackerDriverConfig;
  readonly baseVersion: string;
  /** Seconds the bake (or its reuse) took. */
  readonly bakeSeconds: number;
  /** pids of the QEMU processes of this agent (their command lines name its state dir). */
  qemuPids(): Promise<number[]>;
  /** The slot index whose host veth address is `ip`, when it is one of this agent's. */
  slotOfPeer(ip: string): number | undefined;
  /** The QEMU running in slot `index`'s network namespace. */
  qemuInSlot(index: number): Promise<number | undefined>;
  /** The clone address of slot `index` (where the host reaches that slot's guest). */
  cloneAddress(index: number): string;
  /** The host end of slot `index`'s veth. */
  hostAddress(index: number): string;
  /** Stops the agent; then checks nothing of it is left (QEMU, netns, cgroup) and removes its files. */
  close(): Promise<{ qemus: number[]; netns: string[]; cgroups: string[] }>;
}

const ipToInt = (ip: string) => ip.split(".").reduce((n, part) => n * 256 + Number(part), 0);
const intToIp = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");

/** Skips (one line) without root, QEMU or the cached image; else bakes and starts the agent. */
export async function startVmAgent(
  ctx: Context,
  env: Record<string, string>,
  log: (line: string) => void = () => {},
): Promise<VmAgent> {
  requireQemu(ctx, true);
  await linuxImageOrSkip(ctx);
  const dir = await makeTempDir("vm-agent");
  // QEMU is not chrooted: the VM uids walk down to their jails.
  await execa("chmod", ["0755", dir]);
  const stateDir = join(dir, "state");
  const names = localVmHostNames(stateDir);
  let agent: TestAgent | undefined;
  try {
    const t0 = Date.now();
    // The bake writes the driver config (egress from FAAS_EGRESS_*, among others) from the same env.
    const base = await localVmBase(stateDir, { ...process.env, FAAS_VMM_ACCELERATOR: "tcg", ...env }, log);
    const bakeSeconds = (Date.now() - t0) / 1000;
    const driver = parseFirecrackerDriverConfig(JSON.parse(await readFile(base.configFile, "utf8")));
    agent = await startTestAgent(
      {
        ...localVmPoolDefaults,
        FAAS_DRIVER: "firecracker",
        FAAS_BASE_DIR: base.baseDir,
        FAAS_FIRECRACKER_CONFIG: base.configFile,
        FAAS_LOG_LEVEL: "info",
        ...env,
      },
      { stateDir, base: null },
    );
    const subnet = ipToInt(driver.network.hostSubnetBase);
    const running = agent;
    const qemuPids = async () => {
      const pids: number[] = [];
      for (const entry of await readdir("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
        if (cmdline.startsWith("/usr/bin/qemu-system") && cmdline.includes(stateDir))
          pids.push(Number(entry));
      }
      return pids;
    };
    const netnsLeft = async () => {
      const { stdout } = await execa("ip", ["netns", "list"]);
      return stdout
        .split("\n")
        .map((l) => l.split(" ")[0] ?? "")
        .filter((n) => n.startsWith(`${names.netnsPrefix}-`));
    };
    const cgroupsLeft = async () => {
      const left: string[] = [];
      for (const h of ["", "memory", "cpu", "pids", "blkio"]) {
        const d = join(driver.cgroupRoot, h, names.parentCgroup);
        if (await stat(d).catch(() => undefined)) left.push(d);
      }
      return left;
    };
    return {
      agent: running,
      driver,
      baseVersion: base.version,
      bakeSeconds,
      qemuPids,
      slotOfPeer(ip) {
        const offset = ipToInt(ip) - subnet;
        if (offset < 0 || offset % 4 !== 1 || offset / 4 >= driver.network.maxSlots) return undefined;
        return (offset - 1) / 4;
      },
      async qemuInSlot(index) {
        const ns = await stat(`/var/run/netns/${driver.network.netnsPrefix}-${index}`).catch(() => undefined);
        if (!ns) return undefined;
        for (const pid of await qemuPids()) {
          const link = await stat(`/proc/${pid}/ns/net`).catch(() => undefined);
          if (link && link.ino === ns.ino) return pid;
        }
        return undefined;
      },
      cloneAddress: (index) => intToIp(subnet + 4 * index + 2),
      hostAddress: (index) => intToIp(subnet + 4 * index + 1),
      async close() {
        await running.close(true);
        const left = { qemus: await qemuPids(), netns: await netnsLeft(), cgroups: await cgroupsLeft() };
        for (const pid of left.qemus) process.kill(pid, "SIGKILL");
        for (const ns of left.netns) await execa("ip", ["netns", "delete", ns], { reject: false });
        for (const cg of left.cgroups.reverse()) await rmdir(cg).catch(() => undefined);
        await removeDir(dir);
        return left;
      },
    };
  } catch (err) {
    await agent?.close(true).catch(() => undefined);
    await removeDir(dir);
    throw err;
  }
}

/** Gone, or a zombie (PID 1 here does not reap). */
export async function isGone(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s === "" || s.slice(s.lastIndexOf(")") + 2).startsWith("Z");
}
