/**
 * Code disk images for microVM guests, built from a function's unpacked code folder when it is deployed
 * (or first seen in a shared registry) and cached under the state dir by code hash. The guest decides the
 * format (ROFS for OSv, squashfs for Linux: the base manifest's `guest`); the base's placeholder disk
 * decides the size, because the disk swapped in under a restored guest must have the placeholder's
 * capacity (contracts/code-disk.ts). The process sandbox binds the folder and needs none of this.
 */
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { baseFiles } from "../../contracts/base-layout.ts";
import type { Manifest } from "../../contracts/base-manifest.ts";
import {
  CodeDiskError,
  type CodeDiskFormat,
  checkCodeDiskSize,
  codeDiskFormatForGuest,
} from "../../contracts/code-disk.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { BundleError } from "./bundle.ts";

export interface CodeDisksOptions {
  /** Folder of the cached images (e.g. <state dir>/code-disks). */
  readonly dir: string;
  readonly format: CodeDiskFormat;
  /** Every image is padded to exactly this (the base placeholder's size, a whole MiB). */
  readonly sizeBytes: number;
}

export class CodeDisks {
  private readonly building = new Map<string, Promise<string>>();

  constructor(private readonly options: CodeDisksOptions) {
    checkCodeDiskSize(options.sizeBytes);
  }

  get format(): CodeDiskFormat {
    return this.options.format;
  }

  get sizeBytes(): number {
    return this.options.sizeBytes;
  }

  /** The image path for a code hash; the size class is in the name so a new class never reuses old images. */
  pathFor(codeHash: string): string {
    const mib = this.options.sizeBytes / (1024 * 1024);
    return path.join(this.options.dir, `${codeHash}.${mib}m.${this.options.format}`);
  }

  /**
   * The image of `codeDir`, built now unless cached. Code that cannot be put on a code disk (too large
   * for the size class, a name the format cannot hold) is a BundleError naming why: 413 for size, 400
   * otherwise; nothing is left behind.
   */
  ensure(codeHash: string, codeDir: string): Promise<string> {
    const file = this.pathFor(codeHash);
    let pending = this.building.get(file);
    if (!pending) {
      pending = this.build(file, codeDir).finally(() => this.building.delete(file));
      this.building.set(file, pending);
    }
    return pending;
  }

  private async build(file: string, codeDir: string): Promise<string> {
    const cached = await stat(file).catch(() => undefined);
    if (cached?.isFile() && cached.size === this.options.sizeBytes) return file;
    await mkdir(this.options.dir, { recursive: true, mode: 0o755 });
    try {
      await buildCodeDisk(codeDir, file, { format: this.options.format, sizeBytes: this.options.sizeBytes });
    } catch (err) {
      // A missing or failing mksquashfs is this host's problem, not the bundle's: a plain error (500).
      if (err instanceof CodeDiskError && !/mksquashfs/.test(err.message)) {
        const tooLarge = /too large|too many files/.test(err.message);
        throw new BundleError(`the code cannot be put on a code disk: ${err.message}`, tooLarge ? 413 : 400);
      }
      throw err;
    }
    return file;
  }

  /** Removes images no listed code hash uses, and partial builds a crash left (at start only). */
  async prune(keep: ReadonlySet<string>): Promise<void> {
    const names = await readdir(this.options.dir).catch(() => [] as string[]);
    for (const name of names) {
      const hash = name.split(".")[0] ?? "";
      if (
        name.startsWith(".") ||
        !keep.has(hash) ||
        path.join(this.options.dir, name) !== this.pathFor(hash)
      ) {
        await rm(path.join(this.options.dir, name), { force: true });
      }
    }
  }
}

/**
 * The code disks a base needs: none for the process sandbox (it binds folders); for a microVM base, the
 * format its guest mounts and the size of its placeholder disk, which every swapped-in disk must match.
 */
export function codeDisksForBase(
  base: { readonly driver: string; readonly version: string; readonly manifest?: Manifest },
  dir: string,
): CodeDisks | undefined {
  if (base.driver !== "firecracker") return undefined;
  const manifest = base.manifest;
  if (!manifest) {
    throw new Error(
      `base ${base.version}: a microVM base needs its manifest (guest, placeholder disk) to build code disks`,
    );
  }
  const placeholder = manifest.artifacts.find((a) => a.name === baseFiles.codePlaceholder.name);
  if (!placeholder) {
    throw new Error(`base ${base.version}: its manifest lists no ${baseFiles.codePlaceholder.name}`);
  }
  try {
    checkCodeDiskSize(placeholder.bytes);
  } catch {
    throw new Error(
      `base ${base.version}: its code placeholder is ${placeholder.bytes} bytes, not a whole MiB; re-bake it with this version (code disks are padded to one size class)`,
    );
  }
  return new CodeDisks({ dir, format: codeDiskFormatForGuest(manifest.guest), sizeBytes: placeholder.bytes });
}
