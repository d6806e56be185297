import { chmod, copyFile, mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { CodeDiskError } from "../../contracts/code-disk.ts";
import type { CodeTree, CodeTreeNode } from "./tree.ts";

export const MKSQUASHFS_MISSING =
  "mksquashfs not found: install the Debian package squashfs-tools (apt-get install -y squashfs-tools)";

/**
 * mksquashfs flags that make the image a pure function of the staged tree: every owner root, every
 * timestamp 0 (the filesystem's own too), no xattrs from the host, never append to an old image.
 * mksquashfs sorts directory entries itself and has written reproducible images since 4.4.
 */
export function mksquashfsArgs(stageDir: string, outFile: string): string[] {
  return [
    stageDir,
    outFile,
    "-noappend",
    "-all-root",
    "-no-xattrs",
    "-mkfs-time",
    "0",
    "-all-time",
    "0",
    "-comp",
    "gzip",
    "-quiet",
    "-no-progress",
  ];
}

/**
 * Writes the tree as a squashfs image. The tree is first copied to a private staging folder with
 * normalised modes (0755 for directories and executables, 0644 otherwise), because mksquashfs takes
 * modes from the files and a different umask on the host must not change the image.
 */
export async function writeSquashfsImage(tree: CodeTree, outFile: string): Promise<void> {
  const stage = await mkdtemp(path.join(tmpdir(), "code-disk-stage-"));
  try {
    const root = path.join(stage, "root");
    await mkdir(root, { mode: 0o755 });
    await stageChildren(tree.root.children, root);
    await chmod(root, 0o755);
    const env = { ...process.env };
    // mksquashfs refuses SOURCE_DATE_EPOCH together with the explicit time flags above.
    delete env["SOURCE_DATE_EPOCH"];
    await execa("mksquashfs", mksquashfsArgs(root, outFile), { env, extendEnv: false }).catch(
      (error: unknown) => {
        if ((error as { code?: string }).code === "ENOENT") throw new CodeDiskError(MKSQUASHFS_MISSING);
        throw new CodeDiskError(`mksquashfs failed: ${(error as Error).message}`, { cause: error });
      },
    );
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

async function stageChildren(children: readonly CodeTreeNode[], into: string): Promise<void> {
  for (const child of children) {
    const target = path.join(into, child.name);
    if (child.kind === "dir") {
      await mkdir(target);
      await stageChildren(child.children, target);
      await chmod(target, 0o755);
    } else if (child.kind === "file") {
      await copyFile(child.hostPath, target);
      await chmod(target, child.executable ? 0o755 : 0o644);
    } else {
      await symlink(child.target, target);
    }
  }
}
