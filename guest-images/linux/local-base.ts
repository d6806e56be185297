/**
 * A Linux base baked on this machine from the cached guest image (local-image.ts), for `faas start`
 * on microVMs without a builder host: the pipeline's bake (bakeBaseImage: manifest, one rename, reuse
 * of an intact earlier bake of the same inputs) around a snapshot step the caller gives (the driver's
 * own bake on whatever VMM it runs), so this module knows images and manifests, not VMMs.
 */
import { copyFile, mkdir, rmdir } from "node:fs/promises";
import path from "node:path";
import { canonicalJson } from "../../contracts/canonical-json.ts";
import { guestNetworkOf, snapshotNetworkOf, VM_ARTIFACTS } from "../bake/firecracker-plan.ts";
import { type BakeResult, bakeBaseImage } from "../bake/pipeline.ts";
import { buildCodeDisk } from "../code-disk/build.ts";
import { sha256Text } from "../hash.ts";
import { linuxGuestImage } from "./local-image.ts";
import { linuxKernelArgs } from "./recipe.ts";

export { LinuxImageUnavailable } from "./local-image.ts";

type DriverShape = Parameters<typeof guestNetworkOf>[0] & {
  readonly limits: { readonly vcpus: number; readonly memMiB: number };
  readonly guestPort: number;
};

export interface LocalLinuxBaseJob {
  /** The driver config the snapshot is taken (and every restore runs) with. */
  readonly driverConfig: DriverShape;
  /** What the base records as its Firecracker version (the API release the VMM speaks). */
  readonly firecrackerVersion: string;
  /** The VMM the snapshot step runs on (recorded in the manifest: the other VMM refuses the base). */
  readonly vmm: "firecracker" | "qemu";
  /** Inputs of the VMM side (its version, accelerator, the driver sources that write the snapshot). */
  readonly vmmInputs: Readonly<Record<string, string>>;
  /** Size of the empty code disk, and so of every code disk (a drive cannot grow under a restored guest). */
  readonly codeDiskBytes: number;
  /** Boots dir's kernel.elf, root.img and code-empty.img with these kernel arguments and snapshots into dir. */
  snapshot(dir: string, kernelArgs: string): Promise<void>;
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (line: string) => void;
  /** Build the guest image (kernel and rootfs, with progress on `log`) when it is not cached yet. */
  readonly buildImage?: boolean;
}

/** Bakes (or reuses) the base under outRoot/<version>/; a missing image is LinuxImageUnavailable. */
export async function bakeLocalLinuxBase(outRoot: string, job: LocalLinuxBaseJob): Promise<BakeResult> {
  const image = await linuxGuestImage({
    ...(job.env ? { env: job.env } : {}),
    ...(job.log ? { log: job.log } : {}),
    build: job.buildImage ? "all" : "none",
  });
  const config = job.driverConfig;
  const network = guestNetworkOf(config);
  const kernelArgs = linuxKernelArgs(network);
  const inputs: Record<string, string> = {
    // The image keys are truncated hashes of every input of the kernel and of the rootfs.
    "linux-kernel": sha256Text(image.kernelKey),
    "linux-rootfs": sha256Text(image.rootfsKey),
    "kernel-args": sha256Text(kernelArgs),
    machine: sha256Text(
      canonicalJson({
        limits: config.limits,
        network: snapshotNetworkOf(config),
        guestPort: config.guestPort,
      }),
    ),
    "code-disk-bytes": sha256Text(String(job.codeDiskBytes)),
    ...job.vmmInputs,
  };
  return bakeBaseImage(
    outRoot,
    {
      driver: "firecracker",
      guest: "linux",
      inputs,
      kernelArgs,
      firecrackerVersion: job.firecrackerVersion,
      vmm: job.vmm,
      network,
      machine: { vcpus: config.limits.vcpus, memMiB: config.limits.memMiB },
      async build(dir) {
        await copyFile(image.kernel, path.join(dir, VM_ARTIFACTS.kernel));
        await copyFile(image.rootfs, path.join(dir, VM_ARTIFACTS.rootfs));
        const empty = path.join(dir, ".empty");
        await mkdir(empty);
        await buildCodeDisk(empty, path.join(dir, VM_ARTIFACTS.codePlaceholder), {
          format: "squashfs",
          sizeBytes: job.codeDiskBytes,
        });
        await rmdir(empty);
        await job.snapshot(dir, kernelArgs);
      },
    },
    job.log ? { log: job.log } : {},
  );
}
