/**
 * OSv ROFS image writer. The on-disk layout is the one OSv's scripts/gen-rofs-img.py produces and
 * fs/rofs reads (facts in ../shared/research/osv.md, section 2.3); the code here is our own:
 *
 *   block 0          superblock: 8 little-endian u64 (magic 0xDEADBEAD, version 1, block size 512,
 *                    first structure block, structure block count, dir entry count, symlink count,
 *                    inode count), rest zero
 *   blocks 1..       file data, each file starting on a block boundary, zero padded
 *   structure blocks directory entries (u64 inode_no, u16 name length, name), then symlinks
 *                    (u16 length, target), then inodes (u64 mode, inode_no, data_offset, count),
 *                    zero padded to a block
 *
 * Inode numbers start at 1 (the root) and are handed out depth first; a directory's entries are a
 * contiguous run in the entry table, written after its subdirectories' runs. Nothing time- or
 * host-dependent is stored (no mtimes, owners or permission bits), so the image is a pure function
 * of the tree.
 */

import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import { CodeDiskError } from "../../contracts/code-disk.ts";
import type { CodeTree, CodeTreeNode } from "./tree.ts";

export const ROFS_MAGIC = 0xdeadbeadn;
export const ROFS_BLOCK_SIZE = 512;
export const ROFS_MODE = { dir: 0x4000, file: 0x8000, symlink: 0xa000 } as const;
const INODE_BYTES = 32;
const SUPERBLOCK_FIELDS = 8;

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
      1n,
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
    const head = Buffer.alloc(10);
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
  const table = Buffer.alloc(inodes.length * INODE_BYTES);
  inodes.forEach((inode, i) => {
    const at = i * INODE_BYTES;
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

/**
 * Parses a ROFS image the way OSv's fs/rofs reads one: superblock, then the structure tables, then
 * file data by block. Used by the tests and by `bake` to check what the writer produced.
 */
export function readRofsImage(image: Buffer): RofsContents {
  if (image.length < ROFS_BLOCK_SIZE) throw new CodeDiskError("ROFS image shorter than one block");
  const sb: bigint[] = [];
  for (let i = 0; i < SUPERBLOCK_FIELDS; i++) sb.push(image.readBigUInt64LE(i * 8));
  const [magic, version, blockSize, firstBlock, , dirEntryCount, symlinkCount, inodeCount] = sb.map(Number);
  if (BigInt(magic ?? 0) !== ROFS_MAGIC)
    throw new CodeDiskError(`bad ROFS magic 0x${(magic ?? 0).toString(16)}`);
  if (version !== 1 || blockSize !== ROFS_BLOCK_SIZE) {
    throw new CodeDiskError(`unsupported ROFS version ${version} / block size ${blockSize}`);
  }
  let at = (firstBlock ?? 0) * ROFS_BLOCK_SIZE;
  const entries: { inodeNo: number; name: string }[] = [];
  for (let i = 0; i < (dirEntryCount ?? 0); i++) {
    const inodeNo = Number(image.readBigUInt64LE(at));
    const len = image.readUInt16LE(at + 8);
    entries.push({ inodeNo, name: image.subarray(at + 10, at + 10 + len).toString() });
    at += 10 + len;
  }
  const targets: string[] = [];
  for (let i = 0; i < (symlinkCount ?? 0); i++) {
    const len = image.readUInt16LE(at);
    targets.push(image.subarray(at + 2, at + 2 + len).toString());
    at += 2 + len;
  }
  const inodes: Inode[] = [];
  for (let i = 0; i < (inodeCount ?? 0); i++) {
    const base = at + i * INODE_BYTES;
    inodes.push({
      mode: Number(image.readBigUInt64LE(base)),
      inodeNo: Number(image.readBigUInt64LE(base + 8)),
      dataOffset: Number(image.readBigUInt64LE(base + 16)),
      count: Number(image.readBigUInt64LE(base + 24)),
    });
  }
  const contents: RofsContents = new Map();
  const visit = (inode: Inode, rel: string): void => {
    if (inode.mode === ROFS_MODE.dir) {
      if (rel !== "") contents.set(rel, { kind: "dir" });
      for (const entry of entries.slice(inode.dataOffset, inode.dataOffset + inode.count)) {
        const child = inodes[entry.inodeNo - 1];
        if (!child || child.inodeNo !== entry.inodeNo) throw new CodeDiskError(`bad inode ${entry.inodeNo}`);
        visit(child, rel === "" ? entry.name : `${rel}/${entry.name}`);
      }
    } else if (inode.mode === ROFS_MODE.file) {
      const start = inode.dataOffset * ROFS_BLOCK_SIZE;
      contents.set(rel, { kind: "file", data: Buffer.from(image.subarray(start, start + inode.count)) });
    } else if (inode.mode === ROFS_MODE.symlink) {
      contents.set(rel, { kind: "symlink", target: targets[inode.dataOffset] ?? "" });
    } else {
      throw new CodeDiskError(`inode ${inode.inodeNo} has unknown mode 0x${inode.mode.toString(16)}`);
    }
  };
  const root = inodes[0];
  if (!root) throw new CodeDiskError("ROFS image has no root inode");
  visit(root, "");
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
