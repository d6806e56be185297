import path from "node:path";
import { codeDiskFormatForGuest } from "../../contracts/code-disk.ts";
import type { GuestNetwork, GuestRecipe } from "../bake/firecracker-plan.ts";
import { VM_ARTIFACTS } from "../bake/firecracker-plan.ts";
import { LINUX_KERNEL_PIN, NODE_MAJOR_FOR_BASE } from "../bake/pins.ts";
import type { PlanStep } from "../bake/plan.ts";
import { fetchedNodeBinary } from "../node/fetch-cli.ts";

/** Debian packages the Linux recipe needs on the builder host (kernel build, rootfs build). */
export const LINUX_BUILDER_PACKAGES = [
  "build-essential",
  "flex",
  "bison",
  "bc",
  "libelf-dev",
  "libssl-dev",
  "xz-utils",
  "curl",
  "busybox-static",
  "squashfs-tools",
] as const;

export interface LinuxRecipeOptions {
  readonly workDir: string;
  readonly imageDir: string;
  readonly repoDir: string;
  readonly runtimeBundle: string;
  /** The kernel config base is Firecracker's own guest config at this release tag. */
  readonly firecrackerVersion: string;
  /** The network every restore slot gives the VM (the firecracker driver's config). */
  readonly network: GuestNetwork;
  /** TCP port the runtime listens on; init.sh starts the runtime on 8123, so only that is accepted. */
  readonly guestPort: number;
}

/**
 * Firecracker's recommended guest arguments (../shared/research/firecracker.md 6) without
 * 8250.nr_uarts=0, so the bake can read the console; root is the read-only squashfs on the first
 * drive; ip= configures eth0 in the kernel, so the runtime is reachable without a DHCP client.
 */
export function linuxKernelArgs(network: GuestNetwork): string {
  return [
    "console=ttyS0",
    "quiet",
    "reboot=k",
    "panic=1",
    "pci=off",
    "nomodule",
    "i8042.noaux",
    "i8042.nomux",
    "i8042.dumbkbd",
    "swiotlb=noforce",
    "root=/dev/vda",
    "rootfstype=squashfs",
    "ro",
    "init=/sbin/init",
    `ip=${network.guestIp}::${network.hostIp}:${network.netmask}::eth0:off`,
  ].join(" ");
}

/** The port init.sh starts the runtime on. */
export const LINUX_INIT_RUNTIME_PORT = 8123;

/** Where build-rootfs.sh puts things in the Linux root filesystem (init.sh uses the same paths). */
export const LINUX_GUEST_PATHS = {
  node: "/node",
  runtime: "/runtime/runtime.js",
  /** The runtime's native helper (guest-images/runtime/native), built for the pinned node. */
  native: "/runtime/guest-native.node",
  remountCode: "/bin/remount-code",
  code: "/code",
} as const;

/**
 * What init.sh passes the runtime after runtimeArgs(): mount the code disk at load (it is attached
 * after restore), reseed OpenSSL and step the wall clock at init (every clone resumes with the
 * snapshot's random state and clock), and refuse control calls without the host's secret.
 */
export const LINUX_RUNTIME_FLAGS = [
  "--code-mount",
  LINUX_GUEST_PATHS.remountCode,
  "--native",
  LINUX_GUEST_PATHS.native,
  "--set-clock",
  "--require-control-secret",
] as const;

export function linuxRecipe(options: LinuxRecipeOptions): GuestRecipe {
  const { workDir, imageDir, repoDir } = options;
  if (options.guestPort !== LINUX_INIT_RUNTIME_PORT) {
    throw new Error(
      `the Linux guest's init starts the runtime on ${LINUX_INIT_RUNTIME_PORT}, not ${options.guestPort}`,
    );
  }
  const here = path.join(repoDir, "guest-images/linux");
  const nodeDir = path.join(workDir, "node");
  const nodeBin = fetchedNodeBinary(nodeDir);
  const buildSteps: PlanStep[] = [
    { step: "apt-update", argv: ["apt-get", "update"], needs: ["root", "internet"] },
    {
      step: "linux-builder-packages",
      argv: ["apt-get", "install", "-y", "--no-install-recommends", ...LINUX_BUILDER_PACKAGES],
      needs: ["root", "internet"],
    },
    {
      step: "fetch-node",
      argv: [
        "node",
        "--import",
        "tsx",
        path.join(repoDir, "guest-images/node/fetch-cli.ts"),
        String(NODE_MAJOR_FOR_BASE.linux),
        nodeDir,
      ],
      // `node --import tsx` resolves tsx from the working directory: the repository's node_modules.
      cwd: repoDir,
      needs: ["internet"],
    },
    {
      step: "linux-build-kernel",
      argv: [
        "bash",
        path.join(here, "build-kernel.sh"),
        `${LINUX_KERNEL_PIN.package}=${LINUX_KERNEL_PIN.version}`,
        LINUX_KERNEL_PIN.debSha256,
        LINUX_KERNEL_PIN.firecrackerConfig(options.firecrackerVersion),
        LINUX_KERNEL_PIN.firecrackerConfigSha256,
        path.join(here, "kernel.config"),
        path.join(workDir, "kernel"),
        path.join(imageDir, VM_ARTIFACTS.kernel),
      ],
      needs: ["internet"],
      why: `${LINUX_KERNEL_PIN.label}, uncompressed vmlinux, virtio-mmio devices from the command line`,
    },
    {
      step: "linux-build-rootfs",
      argv: [
        "bash",
        path.join(here, "build-rootfs.sh"),
        nodeBin,
        options.runtimeBundle,
        "/bin/busybox",
        path.join(imageDir, VM_ARTIFACTS.rootfs),
      ],
      needs: [],
      why: "node + ldd libraries + busybox init, read-only squashfs",
    },
  ];
  return {
    guest: "linux",
    kernelArgs: linuxKernelArgs(options.network),
    buildSteps,
    codeDiskFormat: codeDiskFormatForGuest("linux"),
  };
}
