/**
 * `faas doctor`: one line per host prerequisite of the firecracker driver, and an overall verdict.
 * Pure inspection through injected fs/exec, so tests can describe any host.
 */
import { z } from "zod";
import { binarySha256Schema } from "../../contracts/firecracker-driver-config.ts";
import { FIRECRACKER_PIN } from "../../contracts/firecracker-release.ts";
import type { CommandRunner } from "../sandbox/command-runner.ts";
import { checkVmm, vmmDoctorConfigShape } from "./vmm-check.ts";

export const doctorConfigSchema = z.object({
  firecrackerPath: z.string().default("/usr/local/bin/firecracker"),
  jailerPath: z.string().default("/usr/local/bin/jailer"),
  /** The Firecracker release the bake and the agent are pinned to. */
  pinnedVersion: z
    .string()
    .regex(/^\d+\.\d+\.\d+$/)
    .default(FIRECRACKER_PIN.version),
  /** sha256 of the pinned binaries, from the release's SHA256SUMS; required for the checks to pass. */
  firecrackerSha256: binarySha256Schema.optional(),
  jailerSha256: binarySha256Schema.optional(),
  requiredControllers: z.array(z.string()).default(["cpu", "memory", "io", "pids"]),
  /** Oldest host kernel Firecracker supports. */
  minKernel: z
    .string()
    .regex(/^\d+\.\d+$/)
    .default("5.10"),
  snapshotDir: z.string().default("/var/lib/snapfaas"),
  minFreeDiskGiB: z.number().min(0).default(20),
  /** The driver config's network.egress: whether functions may have a way out, and by which interface. */
  egress: z
    .object({ enabled: z.boolean(), uplink: z.string(), dnsResolver: z.string() })
    .default({ enabled: false, uplink: "eth0", dnsResolver: "169.254.169.253" }),
  ...vmmDoctorConfigShape,
});
export type DoctorConfig = z.infer<typeof doctorConfigSchema>;

export interface DoctorFs {
  stat(path: string): Promise<{ isCharacterDevice(): boolean; isFile(): boolean; mode: number }>;
  /** Opens for reading and writing and closes again: proves access, not just existence. */
  openReadWrite(path: string): Promise<void>;
  readFile(path: string): Promise<string>;
  /** Free bytes for unprivileged users on the filesystem holding `path`. */
  freeBytes(path: string): Promise<number>;
  sha256(path: string): Promise<string>;
}

export interface DoctorDeps {
  readonly fs: DoctorFs;
  readonly exec: CommandRunner;
  readonly config: DoctorConfig;
}

export interface DoctorCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
  /** What to do about a failure. */
  readonly fix?: string;
  /** Fatal for the firecracker driver (the others degrade it). */
  readonly fatal: boolean;
}

export interface DoctorReport {
  readonly ok: boolean;
  readonly checks: DoctorCheck[];
  readonly lines: string[];
}

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? e.message ?? String(err);
}

async function checkKvm(fs: DoctorFs, fatal: boolean): Promise<DoctorCheck> {
  const name = "kvm";
  const fix =
    "run on a host with hardware virtualisation (EC2 *.metal), load kvm_intel/kvm_amd, give the agent rw on /dev/kvm";
  try {
    const st = await fs.stat("/dev/kvm");
    if (!st.isCharacterDevice())
      return { name, ok: false, detail: "/dev/kvm is not a character device", fix, fatal };
  } catch (err) {
    return { name, ok: false, detail: `/dev/kvm missing (${errText(err)})`, fix, fatal };
  }
  try {
    await fs.openReadWrite("/dev/kvm");
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `/dev/kvm cannot be opened read-write (${errText(err)})`,
      fix,
      fatal,
    };
  }
  // The KVM_GET_API_VERSION ioctl is out of reach from Node; the acceptance script proves a VM runs.
  return { name, ok: true, detail: "/dev/kvm is a character device and opens read-write", fatal };
}

async function checkBinary(
  deps: DoctorDeps,
  name: "firecracker" | "jailer",
  path: string,
  sha256: string | undefined,
): Promise<DoctorCheck> {
  const version = deps.config.pinnedVersion;
  const fix = `install release v${version} (firecracker-v${version}-<arch>.tgz) at ${path} and pin its sha256 from SHA256SUMS`;
  try {
    const st = await deps.fs.stat(path);
    if (!st.isFile() || (st.mode & 0o111) === 0)
      return { name, ok: false, detail: `${path} is not an executable file`, fix, fatal: true };
  } catch (err) {
    return { name, ok: false, detail: `${path} not found (${errText(err)})`, fix, fatal: true };
  }
  let reported: string;
  try {
    const { stdout } = await deps.exec(path, ["--version"]);
    reported = stdout.split("\n")[0]?.trim() ?? "";
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${path} --version failed: ${(err as Error).message}`,
      fix,
      fatal: true,
    };
  }
  if (!new RegExp(`\\bv?${version.replace(/\./g, "\\.")}\\b`).test(reported)) {
    return { name, ok: false, detail: `${path} reports "${reported}", pinned v${version}`, fix, fatal: true };
  }
  if (!sha256)
    return {
      name,
      ok: false,
      detail: `v${version} present but no sha256 is pinned in the config to verify it`,
      fix,
      fatal: true,
    };
  const actual = await deps.fs.sha256(path);
  if (actual !== sha256) {
    return {
      name,
      ok: false,
      detail: `sha256 ${actual} does not match the pinned ${sha256}`,
      fix,
      fatal: true,
    };
  }
  return { name, ok: true, detail: `${path} is v${version}, sha256 matches`, fatal: true };
}

async function checkCgroupV2(deps: DoctorDeps): Promise<DoctorCheck> {
  const name = "cgroup v2";
  // The jailer needs v2 controllers; the QEMU spawner confines its VMs with v1 controllers too.
  const fatal = deps.config.vmm === "firecracker";
  const wanted = deps.config.requiredControllers;
  const fix =
    "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2 only) so cpu, memory, io and pids are v2 controllers";
  const mounts = await deps.fs.readFile("/proc/mounts").catch(() => "");
  const v2 = mounts
    .split("\n")
    .map((l) => l.split(" "))
    .find((f) => f[2] === "cgroup2");
  if (!v2?.[1]) return { name, ok: false, detail: "no cgroup2 filesystem mounted", fix, fatal };
  const mountPoint = v2[1];
  const controllers = (await deps.fs.readFile(`${mountPoint}/cgroup.controllers`).catch(() => ""))
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  const missing = wanted.filter((c) => !controllers.includes(c));
  const hybrid =
    mountPoint !== "/sys/fs/cgroup" ? " (hybrid layout: cgroup v1 holds the other controllers)" : "";
  if (missing.length > 0) {
    return {
      name,
      ok: false,
      detail: `cgroup2 at ${mountPoint}${hybrid} lacks controllers: ${missing.join(", ")} (has: ${controllers.join(" ") || "none"})`,
      fix,
      fatal,
    };
  }
  return {
    name,
    ok: true,
    detail: `cgroup2 at ${mountPoint} with ${wanted.join(", ")}${hybrid}`,
    fatal,
  };
}

async function checkKernel(deps: DoctorDeps): Promise<DoctorCheck> {
  const name = "kernel";
  const release = (await deps.fs.readFile("/proc/sys/kernel/osrelease").catch(() => "")).trim();
  const m = /^(\d+)\.(\d+)/.exec(release);
  const [minMajor, minMinor] = deps.config.minKernel.split(".").map(Number) as [number, number];
  if (!m) return { name, ok: false, detail: `cannot read the kernel release ("${release}")`, fatal: true };
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const ok = major > minMajor || (major === minMajor && minor >= minMinor);
  return {
    name,
    ok,
    detail: `${release} (${ok ? "at least" : "older than"} ${deps.config.minKernel}; Firecracker supports 5.10, 6.1 and 6.18 hosts)`,
    ...(ok ? {} : { fix: "use a 5.10, 6.1 or 6.18 host kernel" }),
    fatal: true,
  };
}

/** Network slots create taps; the jailer also needs the host's tun device to mknod one in each jail. */
async function checkTun(fs: DoctorFs): Promise<DoctorCheck> {
  const name = "tun";
  try {
    if ((await fs.stat("/dev/net/tun")).isCharacterDevice())
      return { name, ok: true, detail: "/dev/net/tun present", fatal: true };
    return {
      name,
      ok: false,
      detail: "/dev/net/tun is not a character device",
      fix: "modprobe tun",
      fatal: true,
    };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `/dev/net/tun missing (${errText(err)})`,
      fix: "modprobe tun",
      fatal: true,
    };
  }
}

async function checkIpForward(deps: DoctorDeps): Promise<DoctorCheck> {
  const name = "ip_forward";
  const value = (await deps.fs.readFile("/proc/sys/net/ipv4/ip_forward").catch(() => "?")).trim();
  if (value === "1") return { name, ok: true, detail: "net.ipv4.ip_forward = 1", fatal: false };
  return {
    name,
    ok: false,
    detail: `net.ipv4.ip_forward = ${value}: guests cannot reach the network beyond the host (ingress from the agent still works)`,
    fix: "sysctl -w net.ipv4.ip_forward=1 (and persist it in /etc/sysctl.d)",
    fatal: false,
  };
}

/** Function egress as the driver config offers it: the uplink it names must exist. Never fatal. */
async function checkEgress(deps: DoctorDeps): Promise<DoctorCheck> {
  const name = "egress";
  const { enabled, uplink, dnsResolver } = deps.config.egress;
  if (!enabled) {
    return {
      name,
      ok: true,
      detail: "not offered: a function deployed with --egress is refused (network.egress.enabled off)",
      fatal: false,
    };
  }
  try {
    await deps.exec("ip", ["-o", "link", "show", "dev", uplink]);
    return {
      name,
      ok: true,
      detail: `functions deployed with --egress leave by ${uplink} (NAT), DNS to ${dnsResolver}`,
      fatal: false,
    };
  } catch {
    return {
      name,
      ok: false,
      detail: `the uplink ${uplink} is no interface here: functions with egress would reach nothing`,
      fix: "set network.egress.uplink to the interface of the default route (ip -o -4 route show default)",
      fatal: false,
    };
  }
}

async function checkTool(
  deps: DoctorDeps,
  name: string,
  file: string,
  args: string[],
  fix: string,
): Promise<DoctorCheck> {
  try {
    const { stdout, stderr } = await deps.exec(file, args);
    return { name, ok: true, detail: (stdout || stderr).split("\n")[0]?.trim() ?? file, fatal: true };
  } catch (err) {
    return {
      name,
      ok: false,
      detail: `${file} unavailable: ${(err as Error).message.split("\n")[0]}`,
      fix,
      fatal: true,
    };
  }
}

async function checkDisk(deps: DoctorDeps): Promise<DoctorCheck> {
  const name = "snapshot disk";
  const { snapshotDir, minFreeDiskGiB } = deps.config;
  // The folder may not exist yet on a new host: measure the nearest existing parent.
  let path = snapshotDir;
  for (;;) {
    try {
      const free = await deps.fs.freeBytes(path);
      const freeGiB = free / 1024 ** 3;
      const ok = freeGiB >= minFreeDiskGiB;
      return {
        name,
        ok,
        detail: `${freeGiB.toFixed(1)} GiB free at ${path} (need ${minFreeDiskGiB} GiB for ${snapshotDir})`,
        ...(ok ? {} : { fix: `free space or point snapshotDir at a larger volume` }),
        fatal: true,
      };
    } catch {
      if (path === "/" || path === "")
        return { name, ok: false, detail: `cannot measure free space for ${snapshotDir}`, fatal: true };
      path = path.replace(/\/[^/]*\/?$/, "") || "/";
    }
  }
}

export async function runDoctor(deps: DoctorDeps): Promise<DoctorReport> {
  const c = deps.config;
  const checks = [
    // QEMU on TCG never opens /dev/kvm: without it the driver still runs.
    await checkKvm(deps.fs, !(c.vmm === "qemu" && c.accelerator === "tcg")),
    await checkVmm(deps.exec, c),
    // The QEMU backend runs neither binary.
    ...(c.vmm === "firecracker"
      ? [
          await checkBinary(deps, "firecracker", c.firecrackerPath, c.firecrackerSha256),
          await checkBinary(deps, "jailer", c.jailerPath, c.jailerSha256),
        ]
      : []),
    await checkCgroupV2(deps),
    await checkKernel(deps),
    await checkTun(deps.fs),
    await checkIpForward(deps),
    await checkEgress(deps),
    await checkTool(deps, "nftables", "nft", ["--version"], "apt-get install nftables"),
    await checkTool(deps, "iproute2", "ip", ["-V"], "apt-get install iproute2"),
    await checkDisk(deps),
  ];
  const lines = checks.map(
    (ch) =>
      `${ch.ok ? "ok  " : "FAIL"}  ${ch.name.padEnd(13)} ${ch.detail}${ch.ok || !ch.fix ? "" : `\n      fix: ${ch.fix}`}`,
  );
  const ok = checks.every((ch) => ch.ok);
  lines.push(
    ok
      ? "doctor: all checks passed"
      : `doctor: ${checks.filter((ch) => !ch.ok).length} of ${checks.length} checks failed`,
  );
  return { ok, checks, lines };
}
