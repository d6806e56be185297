import path from "node:path";
import { baseFiles } from "../../contracts/base-layout.ts";
import type { CodeDiskFormat } from "../../contracts/code-disk.ts";
import type { FirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import type { Plan, PlanStep } from "./plan.ts";

/** The guest network a base snapshot is taken with; every restore slot offers the same tap name and IPs. */
export interface GuestNetwork {
  readonly tapName: string;
  readonly hostIp: string;
  readonly guestIp: string;
  readonly guestMac: string;
  /** The link the tap and the guest share (a /30 by default). */
  readonly netmask: string;
}

/** The network the firecracker driver's slots give every VM (contracts/firecracker-driver-config.ts). */
export function guestNetworkOf(config: FirecrackerDriverConfig): GuestNetwork {
  const n = config.network;
  return {
    tapName: n.tapName,
    hostIp: n.tapAddress,
    guestIp: n.guestAddress,
    guestMac: n.guestMac,
    netmask: prefixToNetmask(n.linkPrefixLength),
  };
}

/**
 * The part of the driver's network a snapshot holds (the guest's NIC: its host-side name and id, its
 * addresses): what a base's version hashes. The host's side (slot names, pool sizes, egress) can change
 * without a new bake.
 */
export function snapshotNetworkOf(config: FirecrackerDriverConfig): GuestNetwork & { ifaceId: string } {
  return { ...guestNetworkOf(config), ifaceId: config.network.ifaceId };
}

/** The runtime's health route (contracts/guest-protocol.ts): the bake snapshots once it answers. */
export const GUEST_RUNTIME_READY_PATH = "/_faas/health";

/**
 * The guest runtime's arguments in a VM (guest-images/runtime/main.ts). No --base-version: the base
 * version is a hash over these very arguments, so the agent takes it from the manifest instead. The
 * console goes over the guest channel: a VM's stdout is a serial console nobody reads.
 */
export function runtimeArgs(port: number, codeDir: string): string[] {
  return ["--listen", `tcp:0.0.0.0:${port}`, "--code", codeDir, "--console", "channel"];
}

/**
 * File names in the base image directory: the firecracker driver's base layout, so the driver
 * restores from what the bake leaves without renaming anything.
 */
export const VM_ARTIFACTS = {
  kernel: baseFiles.kernel.name,
  rootfs: baseFiles.rootDisk.name,
  codePlaceholder: baseFiles.codePlaceholder.name,
  vmstate: baseFiles.vmstate.name,
  memory: baseFiles.memory.name,
} as const;

/** What a guest recipe (OSv or Linux) contributes to the bake. */
export interface GuestRecipe {
  readonly guest: "osv" | "linux";
  /** Full guest kernel command line, fixed in the snapshot. */
  readonly kernelArgs: string;
  /** Steps that leave VM_ARTIFACTS.kernel and VM_ARTIFACTS.rootfs in the image directory. */
  readonly buildSteps: readonly PlanStep[];
  /** Code disk format the guest mounts at /code. */
  readonly codeDiskFormat: CodeDiskFormat;
}

export interface FirecrackerBakeOptions {
  readonly recipe: GuestRecipe;
  /** Scratch directory of the bake: downloads, checkouts, the driver config, the hello-world disk. */
  readonly workDir: string;
  /** Where the artifacts land (the partial base image directory). */
  readonly imageDir: string;
  /** Checkout of this repository (scripts, code disk builder, the firecracker driver's bake). */
  readonly repoDir: string;
  readonly firecracker: { readonly version: string; readonly arch: string; readonly tgzSha256?: string };
  /** Driver config for the jailed bake boot (binaries from the fetched release; network and limits). */
  readonly driverConfig: FirecrackerDriverConfig;
}

export function firecrackerReleaseDir(workDir: string, version: string, arch: string): string {
  return path.join(workDir, "firecracker", `release-v${version}-${arch}`);
}
export function firecrackerBinary(workDir: string, version: string, arch: string): string {
  return path.join(firecrackerReleaseDir(workDir, version, arch), `firecracker-v${version}-${arch}`);
}
export function jailerBinary(workDir: string, version: string, arch: string): string {
  return path.join(firecrackerReleaseDir(workDir, version, arch), `jailer-v${version}-${arch}`);
}

/** Where the plan writes the driver config the bake boot reads. */
export function driverConfigPath(workDir: string): string {
  return path.join(workDir, "driver-config.json");
}

/**
 * The builder-host plan for a Firecracker base image: fetch the pinned Firecracker and jailer, build
 * the guest, make the empty placeholder code disk, then let the firecracker driver's own bake boot it
 * in a jail and a network slot (the layout every restore uses), wait for the runtime, pause and take
 * a Full snapshot into the image directory, and restore one clone that must answer hello-world
 * from a real code disk. The manifest is written by the pipeline afterwards.
 */
export function firecrackerBakePlan(options: FirecrackerBakeOptions): Plan {
  const { recipe, workDir, imageDir, repoDir, firecracker } = options;
  const configFile = driverConfigPath(workDir);
  const helloDisk = path.join(workDir, "hello-world.img");
  const helloBundle = path.join(workDir, "hello-world");
  const codeDiskCli = path.join(repoDir, "guest-images/code-disk/cli.ts");

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
      why: "release tgz (firecracker + jailer) checked against its published .sha256.txt and SHA256SUMS",
    },
    ...recipe.buildSteps,
    {
      step: "code-placeholder",
      argv: [
        "node",
        "--import",
        "tsx",
        codeDiskCli,
        "--format",
        recipe.codeDiskFormat,
        "--empty",
        "--out",
        path.join(imageDir, VM_ARTIFACTS.codePlaceholder),
      ],
      // `node --import tsx` resolves tsx from the working directory: the repository's node_modules.
      cwd: repoDir,
      needs: [],
      why: "the snapshot's code drive, swapped for the function's disk after every restore",
    },
    {
      step: "hello-world-bundle",
      argv: [
        "node",
        "--import",
        "tsx",
        path.join(repoDir, "host-agent/cli/bundle-cli.ts"),
        path.join(repoDir, "examples/hello-world"),
        helloBundle,
      ],
      cwd: repoDir,
      needs: [],
      why: "hello-world bundled exactly as `faas deploy` ships a function",
    },
    {
      step: "hello-world-code-disk",
      argv: [
        "node",
        "--import",
        "tsx",
        codeDiskCli,
        "--format",
        recipe.codeDiskFormat,
        "--src",
        helloBundle,
        "--out",
        helloDisk,
      ],
      cwd: repoDir,
      needs: [],
      why: "the fresh base must serve the seed's hello-world before it is published",
    },
    {
      step: "driver-config",
      // printf through bash so the JSON is one argument of the printed plan, not a file it assumes.
      argv: [
        "bash",
        "-c",
        'printf "%s\\n" "$1" >"$2"',
        "write-config",
        JSON.stringify(options.driverConfig),
        configFile,
      ],
      needs: [],
    },
    {
      step: "bake-snapshot",
      argv: [
        "node",
        "--import",
        "tsx",
        path.join(repoDir, "host-agent/sandbox/firecracker/acceptance.ts"),
        "--config",
        configFile,
        "--bake-from",
        imageDir,
        "--base",
        imageDir,
        "--boot-args",
        recipe.kernelArgs,
        "--clones",
        "1",
        "--code",
        helloDisk,
        "--code-hash",
        "hello-world",
      ],
      cwd: repoDir,
      needs: ["kvm", "root"],
      why: `jailed boot, wait for ${GUEST_RUNTIME_READY_PATH}, pause, Full snapshot (${VM_ARTIFACTS.vmstate}, ${VM_ARTIFACTS.memory}), then one restored clone must answer hello-world`,
    },
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

export function prefixToNetmask(prefix: number): string {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32)
    throw new Error(`not a prefix length: ${prefix}`);
  const bits = "1".repeat(prefix).padEnd(32, "0");
  return [0, 8, 16, 24].map((i) => Number.parseInt(bits.slice(i, i + 8), 2)).join(".");
}
