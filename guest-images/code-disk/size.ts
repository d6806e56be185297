/**
 * Padding to the one size every code disk has (contracts/code-disk.ts: why, and the size class): every
 * image is padded (sparse) to the size class, and code whose image would not fit is refused. squashfs
 * and ROFS both ignore the zero tail (their superblock says where the filesystem ends).
 */
import { open, stat } from "node:fs/promises";
import { CODE_DISK_SIZE_BYTES, CodeDiskError, checkCodeDiskSize } from "../../contracts/code-disk.ts";

const MiB = 1024 * 1024;

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
