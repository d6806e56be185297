import path from "node:path";
import type { ApiCall, Plan, PlanStep } from "./plan.ts";

/** The guest network a base snapshot is taken with; every restore must offer the same tap name and IPs. */
export interface GuestNetwork {
  readonly tapName: string;
  readonly hostIp: string;
  readonly guestIp: string;
  readonly guestMac: string;
  /** The /30 the tap and the guest share. */
  readonly netmask: string;
}

export const DEFAULT_GUEST_NETWORK: GuestNetwork = {
  tapName: "fctap0",
  hostIp: "172.16.0.1",
  guestIp: "172.16.0.2",
  guestMac: "06:00:ac:10:00:02",
  netmask: "255.255.255.252",
};

/** Port the guest runtime listens on inside a VM (TCP, all interfaces). */
export const GUEST_RUNTIME_PORT = 8123;

/** The runtime's health route (guest-images/runtime/protocol.ts): the bake snapshots once it answers. */
export const GUEST_RUNTIME_READY_PATH = "/_faas/health";

/**
 * The guest runtime's arguments in a VM (guest-images/runtime/main.ts). No --base-version: the base
 * version is a hash over these very arguments, so the agent takes it from the manifest instead.
 */
export function runtimeArgs(codeDir: string): string[] {
  return ["--listen", `tcp:0.0.0.0:${GUEST_RUNTIME_PORT}`, "--code", codeDir];
}

/** File names inside the base image directory. Firecracker runs with that directory as its cwd, so the
 * snapshot records these relative paths, and the jailer chroot offers the same names at restore. */
export const VM_ARTIFACTS = {
  kernel: "kernel.elf",
  rootfs: "rootfs.img",
  codePlaceholder: "code-placeholder.img",
  vmstate: "vmstate.snap",
  memory: "memory.snap",
} as const;

/** What a guest recipe (OSv or Linux) contributes to the bake. */
export interface GuestRecipe {
  readonly guest: "osv" | "linux";
  /** Full guest kernel command line, fixed in the snapshot. */
  readonly kernelArgs: string;
  /** Steps that leave VM_ARTIFACTS.kernel and VM_ARTIFACTS.rootfs in the image directory. */
  readonly buildSteps: readonly PlanStep[];
  /** Code disk format the guest mounts at /code. */
  readonly codeDiskFormat: "rofs" | "squashfs";
  /** The root filesystem is the boot device (Linux) or found by the kernel itself (OSv). */
  readonly rootIsBootDevice: boolean;
  /** Add a virtio-rng device (guest has a driver for it). */
  readonly entropyDevice: boolean;
}

export interface FirecrackerBakeOptions {
  readonly recipe: GuestRecipe;
  /** Scratch directory of the bake: downloads, checkouts, the API socket. */
  readonly workDir: string;
  /** Where the artifacts land (the partial base image directory). */
  readonly imageDir: string;
  /** Checkout of this repository (for the scripts and the code disk builder). */
  readonly repoDir: string;
  readonly firecracker: { readonly version: string; readonly arch: string; readonly tgzSha256?: string };
  readonly network?: GuestNetwork;
  readonly memMiB?: number;
  readonly vcpus?: number;
  /** HTTP path the runtime answers once it can take `load` calls. */
  readonly readyPath?: string;
}

export function firecrackerBinary(workDir: string, version: string, arch: string): string {
  return path.join(workDir, "firecracker", `release-v${version}-${arch}`, `firecracker-v${version}-${arch}`);
}

/** One Firecracker API call as a curl command line over the API socket. */
export function apiStep(step: string, socket: string, call: ApiCall, why?: string): PlanStep {
  const argv = [
    "curl",
    "--silent",
    "--show-error",
    "--fail-with-body",
    "--unix-socket",
    socket,
    "-X",
    call.method,
    `http://localhost${call.path}`,
  ];
  if (call.body !== undefined)
    argv.push("-H", "Content-Type: application/json", "-d", JSON.stringify(call.body));
  return { step, argv, needs: ["kvm"], api: call, ...(why ? { why } : {}) };
}

/**
 * The builder-host plan for a Firecracker base image: fetch the pinned Firecracker, build the guest,
 * boot it with a placeholder code disk, wait until the runtime answers, pause, take a full snapshot.
 * The manifest is written by the pipeline afterwards, from the files the plan left in imageDir.
 */
export function firecrackerBakePlan(options: FirecrackerBakeOptions): Plan {
  const { recipe, workDir, imageDir, repoDir, firecracker } = options;
  const net = options.network ?? DEFAULT_GUEST_NETWORK;
  const socket = path.join(workDir, "firecracker.sock");
  const fcBin = firecrackerBinary(workDir, firecracker.version, firecracker.arch);
  const readyUrl = `http://${net.guestIp}:${GUEST_RUNTIME_PORT}${options.readyPath ?? GUEST_RUNTIME_READY_PATH}`;
  const prefix = netmaskToPrefix(net.netmask);

  const steps: PlanStep[] = [
    { step: "make-dirs", argv: ["mkdir", "-p", workDir, imageDir], needs: [] },
    {
      step: "fetch-firecracker",
      argv: [
        "bash",
        path.join(repoDir, "guest-images/bake/fetch-firecracker.sh"),
        firecracker.version,
        firecracker.arch,
        path.join(workDir, "firecracker"),
        firecracker.tgzSha256 ?? "",
      ],
      needs: ["internet"],
      why: "release tgz checked against its published .sha256.txt (and the pinned hash when set)",
    },
    ...recipe.buildSteps,
    {
      step: "code-placeholder",
      argv: [
        "node",
        "--import",
        "tsx",
        path.join(repoDir, "guest-images/code-disk/cli.ts"),
        "--format",
        recipe.codeDiskFormat,
        "--empty",
        "--out",
        path.join(imageDir, VM_ARTIFACTS.codePlaceholder),
      ],
      needs: [],
      why: "an empty code disk, so the snapshot has the code drive that PATCH /drives/code swaps after restore",
    },
    { step: "tap-add", argv: ["ip", "tuntap", "add", "dev", net.tapName, "mode", "tap"], needs: ["root"] },
    {
      step: "tap-address",
      argv: ["ip", "addr", "add", `${net.hostIp}/${prefix}`, "dev", net.tapName],
      needs: ["root"],
    },
    { step: "tap-up", argv: ["ip", "link", "set", net.tapName, "up"], needs: ["root"] },
    {
      step: "firecracker-start",
      argv: [fcBin, "--api-sock", socket],
      cwd: imageDir,
      background: true,
      needs: ["kvm"],
      why: "cwd is the image directory so drive and snapshot paths are recorded relative to it",
    },
    {
      step: "wait-api-socket",
      argv: [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--retry",
        "50",
        "--retry-all-errors",
        "--retry-delay",
        "0",
        "--unix-socket",
        socket,
        "http://localhost/version",
      ],
      needs: ["kvm"],
    },
    apiStep("machine-config", socket, {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: options.vcpus ?? 1, mem_size_mib: options.memMiB ?? 256, smt: false },
    }),
    apiStep("boot-source", socket, {
      method: "PUT",
      path: "/boot-source",
      body: { kernel_image_path: VM_ARTIFACTS.kernel, boot_args: recipe.kernelArgs },
    }),
    apiStep("drive-rootfs", socket, {
      method: "PUT",
      path: "/drives/rootfs",
      body: {
        drive_id: "rootfs",
        path_on_host: VM_ARTIFACTS.rootfs,
        is_root_device: recipe.rootIsBootDevice,
        is_read_only: true,
      },
    }),
    apiStep(
      "drive-code",
      socket,
      {
        method: "PUT",
        path: "/drives/code",
        body: {
          drive_id: "code",
          path_on_host: VM_ARTIFACTS.codePlaceholder,
          is_root_device: false,
          is_read_only: true,
        },
      },
      "second virtio-blk device: vblk1 on OSv, /dev/vdb on Linux",
    ),
    apiStep("network-eth0", socket, {
      method: "PUT",
      path: "/network-interfaces/eth0",
      body: { iface_id: "eth0", host_dev_name: net.tapName, guest_mac: net.guestMac },
    }),
    ...(recipe.entropyDevice
      ? [apiStep("entropy", socket, { method: "PUT", path: "/entropy", body: {} })]
      : []),
    apiStep("instance-start", socket, {
      method: "PUT",
      path: "/actions",
      body: { action_type: "InstanceStart" },
    }),
    {
      step: "wait-runtime-ready",
      argv: [
        "curl",
        "--silent",
        "--show-error",
        "--fail",
        "--retry",
        "120",
        "--retry-all-errors",
        "--retry-delay",
        "1",
        "--max-time",
        "2",
        readyUrl,
      ],
      needs: ["kvm"],
      why: "the snapshot is only worth taking once the runtime answers",
    },
    apiStep("pause", socket, { method: "PATCH", path: "/vm", body: { state: "Paused" } }),
    apiStep(
      "snapshot-create",
      socket,
      {
        method: "PUT",
        path: "/snapshot/create",
        body: {
          snapshot_type: "Full",
          snapshot_path: VM_ARTIFACTS.vmstate,
          mem_file_path: VM_ARTIFACTS.memory,
        },
      },
      "paths are relative to Firecracker's cwd, the image directory",
    ),
    { step: "tap-delete", argv: ["ip", "link", "delete", net.tapName], needs: ["root"] },
  ];
  return { title: `bake firecracker/${recipe.guest} base image`, workDir, steps };
}

export function netmaskToPrefix(netmask: string): number {
  const bits = netmask
    .split(".")
    .map((octet) => Number(octet).toString(2).padStart(8, "0"))
    .join("");
  if (!/^1*0*$/.test(bits) || bits.length !== 32) throw new Error(`not a contiguous netmask: ${netmask}`);
  return bits.indexOf("0") === -1 ? 32 : bits.indexOf("0");
}
