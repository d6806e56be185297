/**
 * Where the files of a base image live: as named in the base image directory on the host, and at which
 * path inside the jail Firecracker sees them. The bake runs in a jail too, so the drive paths recorded
 * in the vmstate are these jail paths; every restore stages the same files at the same paths.
 */
import type { NativeAddonAbi } from "./native-addons.ts";

/** A base image as a bake produces it and every sandbox driver starts (or restores) instances from it. */
export interface BaseImage {
  /** Content hash of the bake inputs; the base version the runtime reports. */
  readonly version: string;
  readonly driver: "process" | "firecracker";
  /** Directory holding the baked artifacts (runtime bundle, startup snapshot, root, or VM snapshot files). */
  readonly dir: string;
  /** What native addons the base can load; unknown (not checked at deploy) when absent. */
  readonly nativeAddons?: NativeAddonAbi;
}

export const DRIVE_ROOT = "root";
export const DRIVE_CODE = "code";

export interface BaseFile {
  /** File name inside BaseImage.dir. */
  readonly name: string;
  /** Absolute path inside the jail (what the API is told). */
  readonly jailPath: string;
  /** Needed to restore (false: only the bake's boot uses it). */
  readonly neededForRestore: boolean;
}

export const baseFiles = {
  kernel: { name: "kernel.elf", jailPath: "/base/kernel.elf", neededForRestore: false },
  rootDisk: { name: "root.img", jailPath: "/base/root.img", neededForRestore: true },
  /** Empty code disk the snapshot was taken with; replaced by the function's disk after restore. */
  codePlaceholder: { name: "code-empty.img", jailPath: "/base/code-empty.img", neededForRestore: true },
  vmstate: { name: "vmstate", jailPath: "/base/vmstate", neededForRestore: true },
  memory: { name: "memory", jailPath: "/base/memory", neededForRestore: true },
} as const satisfies Record<string, BaseFile>;

/** Jail path of a function's code disk, by code hash (hex). */
export function codeDiskJailPath(codeHash: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(codeHash))
    throw new Error(`code hash not usable as a file name: ${codeHash}`);
  return `/code/${codeHash}.img`;
}
