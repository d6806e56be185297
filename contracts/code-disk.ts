/**
 * A function's code disk, as the bake (the placeholder a snapshot is taken with) and the agent (the
 * disk it swaps in after a restore) must both make it: which format a guest mounts, and the one size
 * every code disk has. A restored guest keeps the capacity of the drive it was snapshotted with (QEMU
 * cannot grow a read-only drive after a restore, and OSv's virtio-blk reads the capacity once at probe),
 * so the disk that replaces the placeholder must have exactly the placeholder's capacity. The builder
 * that writes the images is guest-images/code-disk/.
 */

/** Code that cannot be put on a code disk, or a size or format that is not one. */
export class CodeDiskError extends Error {
  override readonly name = "CodeDiskError";
}

/** "rofs" for OSv guests (its native read-only filesystem), "squashfs" for Linux guests. */
export type CodeDiskFormat = "rofs" | "squashfs";

/** The code disk format a base image's guest mounts (a manifest's `guest`); the process sandbox has none. */
export function codeDiskFormatForGuest(guest: "osv" | "linux" | "process"): CodeDiskFormat {
  if (guest === "process")
    throw new CodeDiskError("the process sandbox binds a code folder, not a code disk");
  return guest === "osv" ? "rofs" : "squashfs";
}

const MiB = 1024 * 1024;

/** Default size class: 64 MiB, sparse, so it costs only the filesystem's real bytes on the host. */
export const CODE_DISK_SIZE_BYTES = 64 * MiB;

/** Sizes are whole MiB: a block device's capacity is counted in 512-byte sectors, and MiB reads well. */
export function checkCodeDiskSize(sizeBytes: number): void {
  if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % MiB !== 0) {
    throw new CodeDiskError(`code disk size ${sizeBytes} bytes must be a positive whole number of MiB`);
  }
}
