import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { CodeDiskError } from "../../contracts/code-disk.ts";

/** Bundle limits a code disk enforces; the same numbers the registry applies to unpacked bundles. */
export interface CodeDiskLimits {
  /** Sum of regular file sizes. */
  readonly maxUnpackedBytes: number;
  /** Files, directories and symlinks below the root, counted together. */
  readonly maxEntries: number;
  /** Path components below the root: "a/b/c.js" has depth 3. */
  readonly maxDepth: number;
  /** One path component, in UTF-8 bytes (ROFS stores it in a u16, Linux allows 255). */
  readonly maxNameBytes: number;
}

export const DEFAULT_CODE_DISK_LIMITS: CodeDiskLimits = {
  maxUnpackedBytes: 250 * 1024 * 1024,
  maxEntries: 20_000,
  maxDepth: 32,
  maxNameBytes: 255,
};

export type CodeTreeNode =
  | { readonly kind: "dir"; readonly name: string; readonly children: CodeTreeNode[] }
  | {
      readonly kind: "file";
      readonly name: string;
      /** Absolute host path the bytes are read from. */
      readonly hostPath: string;
      readonly size: number;
      /** Any execute bit set on the source: kept, every other mode bit is normalised. */
      readonly executable: boolean;
    }
  | { readonly kind: "symlink"; readonly name: string; readonly target: string };

export interface CodeTree {
  readonly root: Extract<CodeTreeNode, { kind: "dir" }>;
  readonly entryCount: number;
  readonly unpackedBytes: number;
}

/** Byte order of the UTF-8 names: the order squashfs uses, and a fixed one for ROFS. */
function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Reads a function's code folder into a sorted tree, enforcing the limits while walking so an
 * oversized upload fails before anything is written. Only regular files, directories and symlinks
 * that stay inside the folder are accepted: anything else has no meaning on a read-only code disk.
 */
export async function readCodeTree(
  srcDir: string,
  limits: CodeDiskLimits = DEFAULT_CODE_DISK_LIMITS,
): Promise<CodeTree> {
  const rootStat = await lstat(srcDir).catch(() => undefined);
  if (!rootStat?.isDirectory()) {
    throw new CodeDiskError(`code folder ${srcDir} does not exist or is not a directory`);
  }
  let entryCount = 0;
  let unpackedBytes = 0;

  async function walk(dir: string, rel: string, depth: number): Promise<CodeTreeNode[]> {
    const names = (await readdir(dir)).sort(compareNames);
    const nodes: CodeTreeNode[] = [];
    for (const name of names) {
      const relPath = rel === "" ? name : `${rel}/${name}`;
      if (Buffer.byteLength(name) > limits.maxNameBytes) {
        throw new CodeDiskError(
          `name too long: "${relPath}" has ${Buffer.byteLength(name)} bytes in one component, limit ${limits.maxNameBytes}`,
        );
      }
      if (depth + 1 > limits.maxDepth) {
        throw new CodeDiskError(
          `path too deep: "${relPath}" is ${depth + 1} levels deep, limit ${limits.maxDepth}`,
        );
      }
      entryCount += 1;
      if (entryCount > limits.maxEntries) {
        throw new CodeDiskError(
          `too many files: more than ${limits.maxEntries} files, directories and symlinks (limit ${limits.maxEntries})`,
        );
      }
      const hostPath = path.join(dir, name);
      const st = await lstat(hostPath);
      if (st.isDirectory()) {
        nodes.push({ kind: "dir", name, children: await walk(hostPath, relPath, depth + 1) });
      } else if (st.isFile()) {
        unpackedBytes += st.size;
        if (unpackedBytes > limits.maxUnpackedBytes) {
          throw new CodeDiskError(
            `code too large: more than ${limits.maxUnpackedBytes} bytes unpacked (limit ${formatMiB(limits.maxUnpackedBytes)}) at "${relPath}"`,
          );
        }
        nodes.push({ kind: "file", name, hostPath, size: st.size, executable: (st.mode & 0o111) !== 0 });
      } else if (st.isSymbolicLink()) {
        const target = await readlink(hostPath);
        // Checked step by step, as the guest resolves it: a link may not climb out of the code tree.
        if (path.posix.isAbsolute(target) || escapes(rel, target)) {
          throw new CodeDiskError(`symlink "${relPath}" -> "${target}" points outside the code folder`);
        }
        nodes.push({ kind: "symlink", name, target });
      } else {
        throw new CodeDiskError(`"${relPath}" is not a regular file, directory or symlink`);
      }
    }
    return nodes;
  }

  const children = await walk(srcDir, "", 0);
  return { root: { kind: "dir", name: "", children }, entryCount, unpackedBytes };
}

/** True when following target from directory rel climbs above the root at any step. */
function escapes(rel: string, target: string): boolean {
  let depth = rel === "" ? 0 : rel.split("/").length;
  for (const part of target.split("/")) {
    if (part === "..") depth -= 1;
    else if (part !== "." && part !== "") depth += 1;
    if (depth < 0) return true;
  }
  return false;
}

function formatMiB(bytes: number): string {
  return `${Math.round((bytes / 1024 / 1024) * 10) / 10} MiB`;
}
