import path from "node:path";
import type { GuestNetwork, GuestRecipe } from "../bake/firecracker-plan.ts";
import { runtimeArgs, VM_ARTIFACTS } from "../bake/firecracker-plan.ts";
import { NODE_MAJOR_FOR_BASE, OSV_PIN } from "../bake/pins.ts";
import type { PlanStep } from "../bake/plan.ts";
import { fetchedNodeBinary } from "../node/fetch-cli.ts";

/** Where the recipe puts things inside the OSv image (see build-image.sh). */
export const OSV_GUEST_PATHS = {
  node: "/node",
  runtime: "/runtime/runtime.js",
  popfCheck: "/popf/stress.cjs",
  /** The code disk (second virtio-blk device, unpartitioned ROFS) is mounted here. */
  code: "/code",
} as const;

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
 * Firecracker devices are virtio-mmio; a static IP because without --ip OSv waits for DHCP; the code
 * disk is the second drive, found by OSv as vblk1, ROFS without a partition table.
 */
export function osvKernelArgs(network: GuestNetwork, guestPort: number): string {
  return [
    "--nopci",
    "--rootfs=rofs",
    `--ip=eth0,${network.guestIp},${network.netmask}`,
    `--defaultgw=${network.hostIp}`,
    `--nameserver=${network.hostIp}`,
    `--mount-fs=rofs,/dev/vblk1,${OSV_GUEST_PATHS.code}`,
    OSV_GUEST_PATHS.node,
    OSV_GUEST_PATHS.runtime,
    ...runtimeArgs(guestPort, OSV_GUEST_PATHS.code),
  ].join(" ");
}

export function osvRecipe(options: OsvRecipeOptions): GuestRecipe {
  const { workDir, imageDir, repoDir } = options;
  const osvDir = path.join(workDir, "osv");
  const nodeDir = path.join(workDir, "node");
  const nodeBinDir = path.dirname(fetchedNodeBinary(nodeDir));
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
      step: "osv-setup",
      argv: ["python3", "./scripts/setup.py"],
      cwd: osvDir,
      needs: ["root", "internet"],
      why: "installs OSv's build toolchain (Ubuntu or Fedora builder) plus qemu-img and pax-utils (lddtree)",
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
    codeDiskFormat: "rofs",
  };
}
