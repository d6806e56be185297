/**
 * OSv's ROFS on-disk layout, the one home of it: the code-disk writer (guest-images/code-disk/rofs.ts,
 * run by the bake and the agent) lays images out with these constants, and the guest runtime on OSv
 * reads a code disk attached after restore with decodeRofsImage (OSv mounts a ROFS only at boot). The
 * layout is the one OSv's scripts/gen-rofs-img.py produces and fs/rofs reads:
 *
 *   block 0          superblock: 8 little-endian u64 (magic, version 1, block size 512, first
 *                    structure block, structure block count, dir entry count, symlink count, inode count)
 *   blocks 1..       file data, each file starting on a block boundary, zero padded
 *   structure blocks directory entries (u64 inode_no, u16 name length, name), then symlinks
 *                    (u16 length, target), then inodes (u64 mode, inode_no, data_offset, count)
 * A directory inode's data_offset/count is a run of the entry table; a symlink's data_offset indexes the
 * symlink table; a file's data_offset is its first block and count its byte length. Pure: no I/O.
 */
import { CodeDiskError } from "./code-disk.ts";

export const ROFS_MAGIC = 0xdeadbeadn;
export const ROFS_VERSION = 1n;
export const ROFS_BLOCK_SIZE = 512;
export const ROFS_MODE = { dir: 0x4000, file: 0x8000, symlink: 0xa000 } as const;
export const ROFS_INODE_BYTES = 32;
export const ROFS_SUPERBLOCK_FIELDS = 8;
/** A directory entry's fixed part (u64 inode_no, u16 name length). */
export const ROFS_DIR_ENTRY_HEAD = 10;

export interface RofsSuperblock {
  readonly firstStructureBlock: number;
  readonly structureBlocks: number;
  readonly dirEntries: number;
  readonly symlinks: number;
  readonly inodes: number;
}

/** The superblock in the first block of an image; a CodeDiskError when it is not a ROFS one. */
export function decodeRofsSuperblock(block0: Uint8Array): RofsSuperblock {
  if (block0.length < ROFS_SUPERBLOCK_FIELDS * 8)
    throw new CodeDiskError("ROFS image shorter than its superblock");
  const view = new DataView(block0.buffer, block0.byteOffset, block0.byteLength);
  const field = (i: number) => view.getBigUint64(i * 8, true);
  if (field(0) !== ROFS_MAGIC) throw new CodeDiskError(`bad ROFS magic 0x${field(0).toString(16)}`);
  if (field(1) !== ROFS_VERSION || field(2) !== BigInt(ROFS_BLOCK_SIZE))
    throw new CodeDiskError(`unsupported ROFS version ${field(1)} / block size ${field(2)}`);
  return {
    firstStructureBlock: Number(field(3)),
    structureBlocks: Number(field(4)),
    dirEntries: Number(field(5)),
    symlinks: Number(field(6)),
    inodes: Number(field(7)),
  };
}

/** Bytes of an image up to the end of its structure tables (what a reader must read; the rest is padding). */
export function rofsImageBytes(sb: RofsSuperblock): number {
  return (sb.firstStructureBlock + sb.structureBlocks) * ROFS_BLOCK_SIZE;
}

/** What a ROFS image holds, keyed by path relative to its root ("a/b.js"), parents before children. */
export type RofsContents = Map<
  string,
  { kind: "dir" } | { kind: "file"; data: Uint8Array } | { kind: "symlink"; target: string }
>;

interface Inode {
  mode: number;
  inodeNo: number;
  dataOffset: number;
  count: number;
}

/** Parses a whole image (at least rofsImageBytes of it) the way OSv's fs/rofs reads one. */
export function decodeRofsImage(image: Uint8Array): RofsContents {
  if (image.length < ROFS_BLOCK_SIZE) throw new CodeDiskError("ROFS image shorter than one block");
  const sb = decodeRofsSuperblock(image.subarray(0, ROFS_BLOCK_SIZE));
  if (image.length < rofsImageBytes(sb))
    throw new CodeDiskError(`ROFS image truncated: ${image.length} of ${rofsImageBytes(sb)} bytes`);
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const u64 = (at: number) => Number(view.getBigUint64(at, true));
  const text = (from: number, len: number) => new TextDecoder().decode(image.subarray(from, from + len));
  let at = sb.firstStructureBlock * ROFS_BLOCK_SIZE;
  const entries: { inodeNo: number; name: string }[] = [];
  for (let i = 0; i < sb.dirEntries; i++) {
    const len = view.getUint16(at + 8, true);
    entries.push({ inodeNo: u64(at), name: text(at + ROFS_DIR_ENTRY_HEAD, len) });
    at += ROFS_DIR_ENTRY_HEAD + len;
  }
  const targets: string[] = [];
  for (let i = 0; i < sb.symlinks; i++) {
    const len = view.getUint16(at, true);
    targets.push(text(at + 2, len));
    at += 2 + len;
  }
  const inodes: Inode[] = [];
  for (let i = 0; i < sb.inodes; i++) {
    const base = at + i * ROFS_INODE_BYTES;
    inodes.push({
      mode: u64(base),
      inodeNo: u64(base + 8),
      dataOffset: u64(base + 16),
      count: u64(base + 24),
    });
  }
  const contents: RofsContents = new Map();
  const visit = (inode: Inode, rel: string, depth: number): void => {
    if (depth > 256) throw new CodeDiskError("ROFS directories nest deeper than 256 levels (a loop?)");
    if (inode.mode === ROFS_MODE.dir) {
      if (rel !== "") contents.set(rel, { kind: "dir" });
      for (const entry of entries.slice(inode.dataOffset, inode.dataOffset + inode.count)) {
        const child = inodes[entry.inodeNo - 1];
        if (!child || child.inodeNo !== entry.inodeNo) throw new CodeDiskError(`bad inode ${entry.inodeNo}`);
        if (entry.name === "" || entry.name === "." || entry.name === ".." || entry.name.includes("/"))
          throw new CodeDiskError(`bad ROFS entry name ${JSON.stringify(entry.name)}`);
        visit(child, rel === "" ? entry.name : `${rel}/${entry.name}`, depth + 1);
      }
    } else if (inode.mode === ROFS_MODE.file) {
      const start = inode.dataOffset * ROFS_BLOCK_SIZE;
      if (start + inode.count > image.length)
        throw new CodeDiskError(`file ${rel} runs past the end of the image`);
      contents.set(rel, { kind: "file", data: image.subarray(start, start + inode.count) });
    } else if (inode.mode === ROFS_MODE.symlink) {
      contents.set(rel, { kind: "symlink", target: targets[inode.dataOffset] ?? "" });
    } else {
      throw new CodeDiskError(`inode ${inode.inodeNo} has unknown mode 0x${inode.mode.toString(16)}`);
    }
  };
  const root = inodes[0];
  if (!root) throw new CodeDiskError("ROFS image has no root inode");
  visit(root, "", 0);
  return contents;
}
