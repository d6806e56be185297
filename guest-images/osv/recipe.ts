import path from "node:path";
import { codeDiskFormatForGuest } from "../../contracts/code-disk.ts";
import type { GuestNetwork, GuestRecipe } from "../bake/firecracker-plan.ts";
import { runtimeArgs, VM_ARTIFACTS } from "../bake/firecracker-plan.ts";
import { NODE_MAJOR_FOR_BASE, OSV_PIN } from "../bake/pins.ts";
import type { PlanStep } from "../bake/plan.ts";
import { fetchedNodeBinary } from "../node/fetch-cli.ts";

/**
 * Debian packages the OSv build needs (Debian 12 and Ubuntu 24.04 names), the one list: the plan's
 * `osv-builder-packages` step installs them on a builder, `.ci/run` installs them through
 * builder-packages-cli.ts, and local-image.ts names them when a tool is missing. OSv's own
 * scripts/setup.py knows neither distribution (its Debian entry wants jessie-era packages), so it is
 * not used; this is the list that built OSv 0e34e4dc here (boost for the loader's tools, lddtree from
 * pax-utils for node-from-host's manifest, genromfs, libedit/yaml-cpp/ncurses headers, autotools for
 * the bundled libraries, qemu-img for the raw disk; g++ 12+ and python3 from build-essential/python3).
 */
export const OSV_BUILDER_PACKAGES = [
  "build-essential",
  "python3",
  "python3-requests",
  "libboost-dev",
  "libboost-system-dev",
  "libboost-filesystem-dev",
  "libboost-program-options-dev",
  "gawk",
  "pax-utils",
  "libedit-dev",
  "libyaml-cpp-dev",
  "libncurses-dev",
  "libssl-dev",
  "genromfs",
  "bison",
  "flex",
  "autoconf",
  "automake",
  "libtool",
  "qemu-utils",
] as const;

/**
 * Where the recipe puts things inside the OSv image: the one home of these paths. build-image.sh
 * writes the image's usr.manifest from them, check-popf.sh boots popfCheck, osvKernelArgs starts the
 * runtime and mounts the code disk with them.
 */
export const OSV_GUEST_PATHS = {
  node: "/node",
  runtime: "/runtime/runtime.js",
  popfCheck: "/popf/stress.cjs",
  /**
   * An empty directory in the image, for a boot-time `--mount-fs=rofs,/dev/vblk1,/code` when debugging
   * (OSv cannot create a mount point on its read-only root). The runtime does not use it: see codeDevice.
   */
  code: "/code",
  /** The code disk: the second virtio-blk device, an unpartitioned ROFS image. */
  codeDevice: "/dev/vblk1",
  /**
   * Where the runtime unpacks the code disk at load (OSv's /tmp is a ramfs): OSv mounts a ROFS only at
   * boot, so a disk attached after restore is read from codeDevice (runtime/code-device.ts).
   */
  codeUnpacked: "/tmp/code",
  /** The runtime's native helper (OpenSSL reseed at init), built for the image's node. */
  native: "/runtime/guest-native.node",
} as const;

/**
 * Patches the recipe applies to the pinned OSv checkout (files in patches/), each pinned by sha256:
 * apply-patch.sh refuses a file that does not match.
 */
export const OSV_PATCHES = [
  {
    file: "patches/procfs-maps-unnamed-file.patch",
    sha256: "b8bdc2aaad1d324edbaeb9910863387944b4a1155f6c2bd0a7f4331b146c2c8e",
    why: "/proc/self/maps asserted on a file mapping without a dentry as soon as V8 started",
  },
] as const;

export interface OsvRecipeOptions {
  readonly workDir: string;
  readonly imageDir: string;
  readonly repoDir: string;
  /** The guest runtime as one CommonJS file (guest-images/runtime's bundle). */
  readonly runtimeBundle: string;
  /** The pinned Firecracker binary (fetched earlier in the plan), for the popf stress check. */
  readonly firecrackerBin: string;
  /** Seconds the popf stress check runs before the bake goes on (0 skips it). */
  readonly popfCheckSeconds?: number;
  /** The network every restore slot gives the VM (the firecracker driver's config). */
  readonly network: GuestNetwork;
  /** TCP port the runtime listens on (the driver's guestPort). */
  readonly guestPort: number;
}

/**
 * OSv's command line: `[OSv options] <app>` (../shared/research/osv.md 2.2). --nopci because
 * Firecracker devices are virtio-mmio (the QEMU backend drops it on its `pc` machine, whose devices
 * are virtio-pci); a static IP because without --ip OSv waits for DHCP. The code disk (vblk1) is not
 * mounted at boot: the runtime reads it at load (--code-device), after the restore attached it.
 */
export function osvKernelArgs(network: GuestNetwork, guestPort: number): string {
  return [
    "--nopci",
    // Node's first time-zone lookup dereferences a NULL TZ on OSv (strcmp page fault) without it.
    "--env=TZ=UTC",
    "--rootfs=rofs",
    `--ip=eth0,${network.guestIp},${network.netmask}`,
    `--defaultgw=${network.hostIp}`,
    `--nameserver=${network.hostIp}`,
    OSV_GUEST_PATHS.node,
    OSV_GUEST_PATHS.runtime,
    ...runtimeArgs(guestPort, OSV_GUEST_PATHS.codeUnpacked),
    "--code-device",
    OSV_GUEST_PATHS.codeDevice,
    // OpenSSL's DRBGs reseeded at init (clones share them otherwise); no --set-clock: OSv has no clock_settime.
    "--native",
    OSV_GUEST_PATHS.native,
    // The host gives every clone a control secret at init; refuse control calls before it.
    "--require-control-secret",
  ].join(" ");
}

export function osvRecipe(options: OsvRecipeOptions): GuestRecipe {
  const { workDir, imageDir, repoDir } = options;
  const osvDir = path.join(workDir, "osv");
  const nodeDir = path.join(workDir, "node");
  const nodeBinDir = path.dirname(fetchedNodeBinary(nodeDir));
  const nativeHelper = path.join(workDir, "guest-native.node");
  const git = (...args: string[]) => ["git", "-C", osvDir, ...args];
  const buildSteps: PlanStep[] = [
    {
      step: "fetch-node",
      argv: [
        "node",
        "--import",
        "tsx",
        path.join(repoDir, "guest-images/node/fetch-cli.ts"),
        String(NODE_MAJOR_FOR_BASE.osv),
        nodeDir,
      ],
      // `node --import tsx` resolves tsx from the working directory: the repository's node_modules.
      cwd: repoDir,
      needs: ["internet"],
      why: "node-from-host copies the node found on PATH: this pinned, checksummed release",
    },
    { step: "osv-clone", argv: ["git", "clone", "--no-checkout", OSV_PIN.repo, osvDir], needs: ["internet"] },
    { step: "osv-checkout", argv: git("checkout", "--detach", OSV_PIN.commit), needs: [] },
    ...OSV_PATCHES.map(
      (patch): PlanStep => ({
        step: `osv-patch-${path.basename(patch.file, ".patch")}`,
        argv: [
          "bash",
          path.join(repoDir, "guest-images/osv/apply-patch.sh"),
          osvDir,
          path.join(repoDir, "guest-images/osv", patch.file),
          patch.sha256,
        ],
        needs: [],
        why: patch.why,
      }),
    ),
    ...OSV_PIN.requiredCommits.map(
      (fix): PlanStep => ({
        step: `osv-has-${fix.commit}`,
        argv: git("merge-base", "--is-ancestor", fix.commit, "HEAD"),
        needs: [],
        why: fix.what,
      }),
    ),
    {
      step: "osv-submodules",
      argv: git("submodule", "update", "--init", "--recursive"),
      needs: ["internet"],
      why: "apps/ (node-from-host) and musl are submodules",
    },
    {
      step: "osv-rofs-writer-check",
      argv: ["bash", path.join(repoDir, "guest-images/osv/check-rofs-writer.sh"), osvDir, repoDir],
      needs: [],
      why: "code disks come from our ROFS writer: it must match OSv's gen-rofs-img.py byte for byte",
    },
    {
      step: "osv-builder-packages",
      argv: ["apt-get", "install", "-y", "--no-install-recommends", ...OSV_BUILDER_PACKAGES],
      needs: ["root", "internet"],
      why: "OSv's build toolchain by name (scripts/setup.py supports neither Debian 12 nor Ubuntu 24.04)",
    },
    {
      step: "osv-native-helper",
      argv: [
        "bash",
        path.join(repoDir, "guest-images/runtime/native/build-native.sh"),
        path.join(nodeDir, "include", "node"),
        nativeHelper,
      ],
      needs: [],
      why: "the runtime reseeds OpenSSL with it at init; built against the image's node",
    },
    {
      step: "osv-build-image",
      argv: [
        "bash",
        path.join(repoDir, "guest-images/osv/build-image.sh"),
        osvDir,
        nodeBinDir,
        options.runtimeBundle,
        path.join(repoDir, "guest-images/osv/popf-stress.cjs"),
        imageDir,
        OSV_GUEST_PATHS.runtime,
        OSV_GUEST_PATHS.popfCheck,
        OSV_GUEST_PATHS.code,
        nativeHelper,
        OSV_GUEST_PATHS.native,
      ],
      needs: [],
      why: `leaves ${VM_ARTIFACTS.kernel} and ${VM_ARTIFACTS.rootfs} in the image directory`,
    },
  ];
  const popfSeconds = options.popfCheckSeconds ?? 120;
  if (popfSeconds > 0) {
    buildSteps.push({
      step: "osv-popf-check",
      argv: [
        "bash",
        path.join(repoDir, "guest-images/osv/check-popf.sh"),
        options.firecrackerBin,
        imageDir,
        OSV_GUEST_PATHS.popfCheck,
        String(popfSeconds),
      ],
      needs: ["kvm"],
      why: "refuses an image whose JIT code loses timer interrupts (README: popf and the interrupt flag)",
    });
  }
  return {
    guest: "osv",
    kernelArgs: osvKernelArgs(options.network, options.guestPort),
    buildSteps,
    codeDiskFormat: codeDiskFormatForGuest("osv"),
  };
}
