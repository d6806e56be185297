import { rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { CodeDiskFormat } from "../../contracts/code-disk.ts";
import { sha256File } from "../hash.ts";
import { writeRofsImage } from "./rofs.ts";
import { padCodeDisk } from "./size.ts";
import { writeSquashfsImage } from "./squashfs.ts";
import { type CodeDiskLimits, DEFAULT_CODE_DISK_LIMITS, readCodeTree } from "./tree.ts";

export interface CodeDiskOptions {
  readonly format: CodeDiskFormat;
  readonly limits?: CodeDiskLimits;
  /**
   * Pad the image to this many bytes (a whole MiB; see size.ts), refusing code that does not fit. Every
   * disk a guest swaps in must have its placeholder's size, so hosts and bakes pass the size class;
   * unset, the image is exactly as long as its filesystem (benchmarks, format tests).
   */
  readonly sizeBytes?: number;
}

export interface CodeDisk {
  readonly file: string;
  readonly format: CodeDiskFormat;
  /** sha256 (hex) of the image bytes: equal for equal code folders. */
  readonly sha256: string;
  readonly bytes: number;
  readonly entryCount: number;
  readonly unpackedBytes: number;
}

/**
 * Builds a read-only code disk image from a function's code folder, without root. Deterministic:
 * the same files, names, symlinks and executable bits give the same bytes, whatever the mtimes,
 * owners, other mode bits or readdir order on the host. The image appears at outFile atomically.
 * This is the call the bench suite times for "code-disk build".
 */
export async function buildCodeDisk(
  srcDir: string,
  outFile: string,
  options: CodeDiskOptions,
): Promise<CodeDisk> {
  const tree = await readCodeTree(srcDir, options.limits ?? DEFAULT_CODE_DISK_LIMITS);
  const partial = path.join(path.dirname(outFile), `.${path.basename(outFile)}.${process.pid}.partial`);
  try {
    if (options.format === "rofs") await writeRofsImage(tree, partial);
    else await writeSquashfsImage(tree, partial);
    if (options.sizeBytes !== undefined) await padCodeDisk(partial, options.sizeBytes);
    await rename(partial, outFile);
  } catch (error) {
    await rm(partial, { force: true });
    throw error;
  }
  return {
    file: outFile,
    format: options.format,
    sha256: await sha256File(outFile),
    bytes: (await stat(outFile)).size,
    entryCount: tree.entryCount,
    unpackedBytes: tree.unpackedBytes,
  };
}
