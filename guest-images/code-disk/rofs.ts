/**
 * OSv ROFS image writer. The layout (and its reader) is contracts/rofs-layout.ts, shared with the guest
 * runtime, which reads a code disk attached after restore itself; the code here is our own.
 * Inode numbers start at 1 (the root) and are handed out depth first; a directory's entries are a
 * contiguous run in the entry table, written after its subdirectories' runs. Nothing time- or
 * host-dependent is stored (no mtimes, owners or permission bits), so the image is a pure function
 * of the tree.
 */

import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import { CodeDiskError } from "../../contracts/code-disk.ts";
import {
  decodeRofsImage,
  ROFS_BLOCK_SIZE,
  ROFS_DIR_ENTRY_HEAD,
  ROFS_INODE_BYTES,
  ROFS_MAGIC,
  ROFS_MODE,
  ROFS_VERSION,
} from "../../contracts/rofs-layout.ts";
import type { CodeTree, CodeTreeNode } from "./tree.ts";

export { ROFS_BLOCK_SIZE, ROFS_MAGIC, ROFS_MODE };

interface Inode {
  mode: number;
  inodeNo: number;
  dataOffset: number;
  count: number;
}

/** Writes the tree as a ROFS image to outFile (created or truncated). */
export async function writeRofsImage(tree: CodeTree, outFile: string): Promise<void> {
  const inodes: Inode[] = [];
  const dirEntries: { inodeNo: number; name: Buffer }[] = [];
  const symlinks: Buffer[] = [];
  let block = 1;
  const out = await open(outFile, "w");
  try {
    await out.write(Buffer.alloc(ROFS_BLOCK_SIZE), 0, ROFS_BLOCK_SIZE, 0);
    let position = ROFS_BLOCK_SIZE;

    const newInode = (mode: number): Inode => {
      const inode = { mode, inodeNo: inodes.length + 1, dataOffset: 0, count: 0 };
      inodes.push(inode);
      return inode;
    };

    const writeDir = async (children: readonly CodeTreeNode[]): Promise<{ first: number; count: number }> => {
      const own: { inodeNo: number; name: Buffer }[] = [];
      for (const child of children) {
        const inode = newInode(ROFS_MODE[child.kind]);
        own.push({ inodeNo: inode.inodeNo, name: Buffer.from(child.name) });
        if (child.kind === "dir") {
          const run = await writeDir(child.children);
          inode.dataOffset = run.first;
          inode.count = run.count;
        } else if (child.kind === "symlink") {
          inode.dataOffset = symlinks.length;
          inode.count = 1;
          symlinks.push(Buffer.from(child.target));
        } else {
          inode.dataOffset = block;
          inode.count = await copyFile(child.hostPath, child.size, out, position);
          const blocks = Math.ceil(inode.count / ROFS_BLOCK_SIZE);
          block += blocks;
          position += blocks * ROFS_BLOCK_SIZE;
        }
      }
      const first = dirEntries.length;
      dirEntries.push(...own);
      return { first, count: own.length };
    };

    const root = newInode(ROFS_MODE.dir);
    const rootRun = await writeDir(tree.root.children);
    root.dataOffset = rootRun.first;
    root.count = rootRun.count;

    const structure = encodeStructure(dirEntries, symlinks, inodes);
    const structureBlocks = Math.ceil(structure.length / ROFS_BLOCK_SIZE);
    const padded = Buffer.alloc(structureBlocks * ROFS_BLOCK_SIZE);
    structure.copy(padded);
    await out.write(padded, 0, padded.length, position);

    const superblock = Buffer.alloc(ROFS_BLOCK_SIZE);
    const fields = [
      ROFS_MAGIC,
      ROFS_VERSION,
      BigInt(ROFS_BLOCK_SIZE),
      BigInt(block),
      BigInt(structureBlocks),
      BigInt(dirEntries.length),
      BigInt(symlinks.length),
      BigInt(inodes.length),
    ];
    fields.forEach((value, i) => {
      superblock.writeBigUInt64LE(value, i * 8);
    });
    await out.write(superblock, 0, ROFS_BLOCK_SIZE, 0);
  } finally {
    await out.close();
  }
}

function encodeStructure(
  dirEntries: readonly { inodeNo: number; name: Buffer }[],
  symlinks: readonly Buffer[],
  inodes: readonly Inode[],
): Buffer {
  const parts: Buffer[] = [];
  for (const entry of dirEntries) {
    const head = Buffer.alloc(ROFS_DIR_ENTRY_HEAD);
    head.writeBigUInt64LE(BigInt(entry.inodeNo), 0);
    head.writeUInt16LE(entry.name.length, 8);
    parts.push(head, entry.name);
  }
  for (const target of symlinks) {
    if (target.length > 0xffff) throw new CodeDiskError(`symlink target longer than 65535 bytes`);
    const head = Buffer.alloc(2);
    head.writeUInt16LE(target.length, 0);
    parts.push(head, target);
  }
  const table = Buffer.alloc(inodes.length * ROFS_INODE_BYTES);
  inodes.forEach((inode, i) => {
    const at = i * ROFS_INODE_BYTES;
    table.writeBigUInt64LE(BigInt(inode.mode), at);
    table.writeBigUInt64LE(BigInt(inode.inodeNo), at + 8);
    table.writeBigUInt64LE(BigInt(inode.dataOffset), at + 16);
    table.writeBigUInt64LE(BigInt(inode.count), at + 24);
  });
  parts.push(table);
  return Buffer.concat(parts);
}

/** Copies one file into the image at position, zero padded to a block; returns its byte count. */
async function copyFile(
  hostPath: string,
  expectedSize: number,
  out: FileHandle,
  position: number,
): Promise<number> {
  const input = await open(hostPath, "r");
  try {
    const chunk = Buffer.alloc(1024 * 1024);
    let total = 0;
    for (;;) {
      const { bytesRead } = await input.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      await out.write(chunk, 0, bytesRead, position + total);
      total += bytesRead;
    }
    if (total !== expectedSize) {
      throw new CodeDiskError(
        `${hostPath} changed while the code disk was built (${expectedSize} -> ${total} bytes)`,
      );
    }
    const tail = total % ROFS_BLOCK_SIZE;
    if (tail !== 0) {
      await out.write(Buffer.alloc(ROFS_BLOCK_SIZE - tail), 0, ROFS_BLOCK_SIZE - tail, position + total);
    }
    return total;
  } finally {
    await input.close();
  }
}

/** What a ROFS image holds, keyed by path relative to its root ("a/b.js"). For tests and checks. */
export type RofsContents = Map<
  string,
  { kind: "dir" } | { kind: "file"; data: Buffer } | { kind: "symlink"; target: string }
>;

/** Parses a ROFS image with the layout's own reader (the one the OSv guest runtime uses). */
export function readRofsImage(image: Buffer): RofsContents {
  const contents: RofsContents = new Map();
  for (const [rel, node] of decodeRofsImage(image)) {
    contents.set(rel, node.kind === "file" ? { kind: "file", data: Buffer.from(node.data) } : node);
  }
  return contents;
}

/**
 * The same tree as an OSv usr.manifest for scripts/gen-rofs-img.py, listed in the order this writer
 * lays it out (depth first, names in byte order), so the two images can be compared byte for byte
 * on a builder host that has an OSv checkout (osv/check-rofs-writer.sh).
 */
export function genRofsManifest(tree: CodeTree, srcDir: string): string {
  const lines = ["[manifest]"];
  const visit = (nodes: readonly CodeTreeNode[], rel: string): void => {
    for (const node of nodes) {
      const guestPath = `${rel}/${node.name}`;
      if (node.kind === "dir") {
        // A directory is created by its first entry; only an empty one needs a line of its own.
        if (node.children.length === 0) lines.push(`${guestPath}: ${srcDir}${guestPath}`);
        visit(node.children, guestPath);
      } else if (node.kind === "symlink") {
        lines.push(`${guestPath}: ->${node.target}`);
      } else {
        lines.push(`${guestPath}: ${node.hostPath}`);
      }
    }
  };
  visit(tree.root.children, "");
  return `${lines.join("\n")}\n`;
}
