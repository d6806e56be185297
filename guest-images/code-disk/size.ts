/**
 * The one size every code disk has, the bake's empty placeholder included. A restored guest keeps the
 * capacity of the drive it was snapshotted with: QEMU cannot grow a read-only drive after a restore, and
 * OSv's virtio-blk reads the capacity once at probe. So the function's disk that replaces the placeholder
 * must have exactly the placeholder's capacity: every image is padded (sparse) to this size class, and
 * code whose image would not fit is refused. squashfs and ROFS both ignore the zero tail (their
 * superblock says where the filesystem ends).
 */
import { open, stat } from "node:fs/promises";
import { CodeDiskError } from "./tree.ts";

const MiB = 1024 * 1024;

/** Default size class: 64 MiB, sparse, so it costs only the filesystem's real bytes on the host. */
export const CODE_DISK_SIZE_BYTES = 64 * MiB;

/** Sizes are whole MiB: a block device's capacity is counted in 512-byte sectors, and MiB reads well. */
export function checkCodeDiskSize(sizeBytes: number): void {
  if (!Number.isInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % MiB !== 0) {
    throw new CodeDiskError(`code disk size ${sizeBytes} bytes must be a positive whole number of MiB`);
  }
}

/**
 * Pads an image file to `sizeBytes` (a sparse tail), or refuses it when the filesystem alone is larger.
 * The error names both sizes and what to do.
 */
export async function padCodeDisk(file: string, sizeBytes: number = CODE_DISK_SIZE_BYTES): Promise<void> {
  checkCodeDiskSize(sizeBytes);
  const { size } = await stat(file);
  if (size > sizeBytes) {
    throw new CodeDiskError(
      `code too large for a code disk: its image is ${size} bytes (${formatMiB(size)}), over the code disk size of ${sizeBytes} bytes (${formatMiB(sizeBytes)}, the base's placeholder size); make the bundle smaller`,
    );
  }
  const fh = await open(file, "r+");
  try {
    await fh.truncate(sizeBytes);
  } finally {
    await fh.close();
  }
}

function formatMiB(bytes: number): string {
  return `${Math.round((bytes / MiB) * 100) / 100} MiB`;
}
