/**
 * Builds the QEMU command line of one microVM. Pure: the same plan always gives the same argv. The
 * device list is the contract between a bake and its clones (QEMU's migration stream refers to the
 * devices by position), so a restore rebuilds it from the plan recorded in the vmstate.
 */

export type Accelerator = "tcg" | "kvm";

/**
 * QEMU's machine: `microvm` for Linux guests (virtio-mmio devices, like Firecracker's), `pc` for OSv
 * guests, which halt on microvm without KVM ("Neither paravirtual clock nor HPET is available": microvm
 * has no HPET, and kvmclock needs KVM); on `pc` the devices are virtio-pci and the HPET is there.
 */
export type QemuMachine = "microvm" | "pc";

/** The machine a base's guest boots on under this backend (the bake picks it; restores read it from the vmstate). */
export function qemuMachineForGuest(guest: "linux" | "osv"): QemuMachine {
  return guest === "osv" ? "pc" : "microvm";
}

export interface QemuDrivePlan {
  /** Firecracker's drive_id. */
  readonly id: string;
  readonly hostPath: string;
  readonly readOnly: boolean;
}

export interface QemuNicPlan {
  /** Firecracker's iface_id. */
  readonly id: string;
  readonly tapName: string;
  readonly mac?: string;
}

export interface QemuMachinePlan {
  /** The VM id; `-name <id>` lets a later agent recognise its leftover QEMU by command line. */
  readonly name: string;
  readonly accelerator: Accelerator;
  /** Default microvm. */
  readonly machine?: QemuMachine;
  readonly vcpus: number;
  readonly memMiB: number;
  /**
   * Guest RAM lives in this file. The bake maps it shared (the file is the snapshot's memory); clones
   * map the base file private, so their writes stay copy-on-write in their own process.
   */
  readonly memoryFile: { readonly hostPath: string; readonly shared: boolean };
  /** Cold boot of a kernel, or wait for an incoming migration (a snapshot restore). */
  readonly boot:
    | { readonly kind: "kernel"; readonly kernelHostPath: string; readonly cmdline: string }
    | { readonly kind: "incoming" };
  /** Host TSC in kHz; on TCG it is passed as `tsc_early_khz` (microvm has no other timer to calibrate against). */
  readonly tscKhz?: number;
  readonly drives: readonly QemuDrivePlan[];
  readonly nics: readonly QemuNicPlan[];
  readonly entropy: boolean;
  readonly qmpSocketPath: string;
  /** QEMU drops to this uid/gid once its files and devices are open. */
  readonly runAs?: { readonly uid: number; readonly gid: number };
}

/** MiB of TCG translation cache per VM. */
export const TCG_TB_SIZE_MIB = 32;

/** QEMU node names allow letters, digits, '-', '_' and must start with a letter; ours get a prefix. */
const DEVICE_ID = /^[A-Za-z0-9_]{1,24}$/;

export function driveNodeName(id: string): string {
  return `drive-${id}`;
}

/** Node name of the file layer under a drive; each swap adds a new one (generation 1, 2, ...). */
export function driveFileNodeName(id: string, generation: number): string {
  return `drive-${id}-file${generation}`;
}

/** `,` separates QEMU option keys; a literal comma in a value is written twice. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * The TCG guest's clock arguments, each unless the caller set it already: `tsc_early_khz` (microvm has
 * no HPET or PM timer to calibrate the TSC against) and `tsc=reliable`. Without a reference timer the
 * kernel never makes the TSC its clocksource and keeps refined-jiffies, which loses time whenever the
 * emulated CPU misses ticks (a busy host): a clone's Date.now() fell 45 s behind the host's within a
 * minute here. Under TCG the guest's TSC is the host's, so it is as reliable as the host's clock.
 */
export function withTscEarlyKhz(cmdline: string, tscKhz: number | undefined): string {
  if (tscKhz === undefined) return cmdline;
  let out = cmdline;
  if (!/(^|\s)tsc_early_khz=/.test(out)) out = `${out} tsc_early_khz=${tscKhz}`;
  if (!/(^|\s)tsc=/.test(out)) out = `${out} tsc=reliable`;
  return out.trim();
}

/**
 * `reboot=t` last on the kernel command line (the last `reboot=` wins): a guest that panics (its PID 1,
 * the runtime, exited) or reboots ends by a triple fault, which `-no-reboot` turns into QEMU's exit.
 * The recipe's `reboot=k` is Firecracker's way (its i8042 reset line); microvm has no i8042, and in a
 * clone restored from a snapshot the kernel's fallbacks (EFI, a real-mode jump to the BIOS) spin for
 * good: the VM stayed up and its call waited out its deadline.
 */
export function withTripleFaultReboot(cmdline: string): string {
  return /(^|\s)reboot=t(\s|$)/.test(cmdline) ? cmdline : `${cmdline} reboot=t`.trim();
}

/**
 * OSv's `--nopci` (in the recipe's arguments because Firecracker's devices are virtio-mmio) removed: on
 * the `pc` machine the devices are virtio-pci, and with --nopci OSv would find no disk or network.
 */
export function withoutNoPci(cmdline: string): string {
  return cmdline
    .split(" ")
    .filter((word) => word !== "--nopci")
    .join(" ");
}

/** The kernel command line QEMU boots with: the recipe's, adapted to the machine and accelerator. */
export function qemuCmdline(
  plan: Pick<QemuMachinePlan, "machine" | "accelerator" | "tscKhz">,
  cmdline: string,
): string {
  // OSv (pc) reads no Linux parameters: it would pass them to its application as arguments.
  if (plan.machine === "pc") return withoutNoPci(cmdline);
  return withTripleFaultReboot(plan.accelerator === "tcg" ? withTscEarlyKhz(cmdline, plan.tscKhz) : cmdline);
}

export function buildQemuArgv(plan: QemuMachinePlan): string[] {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(plan.name))
    throw new Error(`VM name must be 1-64 letters, digits or '-': ${plan.name}`);
  if (!Number.isInteger(plan.vcpus) || plan.vcpus < 1)
    throw new Error(`vcpus must be a positive integer: ${plan.vcpus}`);
  if (!Number.isInteger(plan.memMiB) || plan.memMiB < 1)
    throw new Error(`memMiB must be a positive integer: ${plan.memMiB}`);
  for (const d of [...plan.drives, ...plan.nics]) {
    if (!DEVICE_ID.test(d.id)) throw new Error(`device id must be 1-24 letters, digits or '_': ${d.id}`);
  }
  const machine = plan.machine ?? "microvm";
  if (machine !== "microvm" && machine !== "pc") throw new Error(`machine must be microvm or pc: ${machine}`);
  // virtio-mmio devices on microvm, virtio-pci on pc.
  const bus = machine === "pc" ? "pci" : "device";
  const args = [
    "-name",
    plan.name,
    "-M",
    `${machine},memory-backend=mem`,
    "-accel",
    // TCG's translation cache defaults to 1 GiB; bounded so QEMU fits the VM's memory cgroup.
    plan.accelerator === "tcg" ? `tcg,tb-size=${TCG_TB_SIZE_MIB}` : "kvm",
    ...(plan.accelerator === "kvm" ? ["-cpu", "host"] : []),
    "-smp",
    String(plan.vcpus),
    "-m",
    `${plan.memMiB}M`,
    "-object",
    `memory-backend-file,id=mem,size=${plan.memMiB}M,mem-path=${escapeOptionValue(plan.memoryFile.hostPath)},share=${plan.memoryFile.shared ? "on" : "off"}`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    // A guest reboot ends the VM, as Firecracker does with reboot=k.
    "-no-reboot",
    // The guest's serial console is the process's stdout (the spawner keeps a bounded tail).
    "-serial",
    "stdio",
    "-qmp",
    `unix:${escapeOptionValue(plan.qmpSocketPath)},server=on,wait=off`,
    // Always start with stopped vCPUs: the adapter runs `cont` only once QMP is connected.
    "-S",
  ];
  if (plan.boot.kind === "kernel") {
    args.push("-kernel", plan.boot.kernelHostPath, "-append", qemuCmdline(plan, plan.boot.cmdline));
  } else {
    args.push("-incoming", "defer");
  }
  for (const d of plan.drives) {
    const ro = d.readOnly ? "on" : "off";
    args.push(
      "-blockdev",
      `driver=file,filename=${escapeOptionValue(d.hostPath)},node-name=${driveFileNodeName(d.id, 0)},read-only=${ro}`,
      "-blockdev",
      `driver=raw,file=${driveFileNodeName(d.id, 0)},node-name=${driveNodeName(d.id)},read-only=${ro}`,
      "-device",
      `virtio-blk-${bus},drive=${driveNodeName(d.id)},id=dev-${d.id}`,
    );
  }
  for (const n of plan.nics) {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(n.tapName))
      throw new Error(`tap name must be 1-15 characters: ${n.tapName}`);
    args.push(
      "-netdev",
      `tap,id=net-${n.id},ifname=${n.tapName},script=no,downscript=no`,
      "-device",
      `virtio-net-${bus},netdev=net-${n.id},id=dev-net-${n.id}${n.mac ? `,mac=${n.mac}` : ""}`,
    );
  }
  if (plan.entropy) {
    args.push(
      "-object",
      "rng-random,id=rng0,filename=/dev/urandom",
      "-device",
      `virtio-rng-${bus},rng=rng0,id=dev-rng`,
    );
  }
  if (plan.runAs) {
    const { uid, gid } = plan.runAs;
    if (!Number.isInteger(uid) || uid <= 0 || !Number.isInteger(gid) || gid <= 0) {
      throw new Error(`a VM never runs as root: uid ${uid} gid ${gid}`);
    }
    args.push("-runas", `${uid}:${gid}`);
  }
  return args;
}

/**
 * QEMU needs more memory of its own than Firecracker (its device model, and under TCG the translation
 * cache): adds `overheadMiB` to a `memory.max` cgroup setting, leaves the others as they are.
 */
export function withQemuMemoryOverhead(settings: readonly string[], overheadMiB: number): string[] {
  return settings.map((s) => {
    const match = /^memory\.max=(\d+)$/.exec(s);
    return match ? `memory.max=${Number(match[1]) + overheadMiB * 1024 * 1024}` : s;
  });
}
