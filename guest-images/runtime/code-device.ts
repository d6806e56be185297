/**
 * The OSv guest's code attach: OSv mounts a ROFS only at boot (--mount-fs), and its applications have no
 * mount call, so a code disk swapped in after a restore would never be seen through a mount. Instead, at
 * load, the runtime reads the code disk's raw block device (/dev/vblk1), decodes the ROFS image with
 * the layout's own reader (contracts/rofs-layout.ts, the one the writer uses) and writes the tree into
 * a fresh folder on OSv's ramfs (/tmp), from which the function is loaded as from any folder (require
 * and import resolve node_modules as usual). A code disk is small (what `faas deploy` ships), and only
 * the bytes up to the end of the image's tables are read, not the padding.
 */
import type * as Fs from "node:fs";
import {
  decodeRofsImage,
  decodeRofsSuperblock,
  ROFS_BLOCK_SIZE,
  rofsImageBytes,
} from "../../contracts/rofs-layout.ts";

export type CodeDeviceFs = Pick<
  typeof Fs,
  "openSync" | "readSync" | "closeSync" | "rmSync" | "mkdirSync" | "writeFileSync" | "symlinkSync"
>;

/** Reads `length` bytes at `position`; a short read is an error (a block device has them or not). */
function readExactly(fs: CodeDeviceFs, fd: number, length: number, position: number, device: string): Buffer {
  const out = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, length - done, position + done);
    if (n === 0)
      throw new Error(`${device} ends after ${position + done} bytes, the image needs ${position + length}`);
    done += n;
  }
  return out;
}

/**
 * Replaces `targetDir` with the tree of the ROFS image on `device`. Returns how many files and bytes it
 * wrote. Errors name the device and what is wrong with it.
 */
export function unpackCodeDevice(
  fs: CodeDeviceFs,
  device: string,
  targetDir: string,
): { files: number; bytes: number } {
  const fd = fs.openSync(device, "r");
  let image: Buffer;
  try {
    const sb = decodeRofsSuperblock(readExactly(fs, fd, ROFS_BLOCK_SIZE, 0, device));
    image = readExactly(fs, fd, rofsImageBytes(sb), 0, device);
  } catch (err) {
    throw new Error(`code disk ${device}: ${(err as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
  const contents = decodeRofsImage(image);
  fs.rmSync(targetDir, { recursive: true, force: true });
  fs.mkdirSync(targetDir, { recursive: true });
  let files = 0;
  let bytes = 0;
  // Parents come before their children in the decoded map.
  for (const [rel, node] of contents) {
    const at = `${targetDir}/${rel}`;
    if (node.kind === "dir") fs.mkdirSync(at);
    else if (node.kind === "symlink") fs.symlinkSync(node.target, at);
    else {
      fs.writeFileSync(at, node.data);
      files += 1;
      bytes += node.data.length;
    }
  }
  return { files, bytes };
}
