/**
 * The OSv runtime's code attach (runtime/code-device.ts): a ROFS code disk written by our writer, read
 * back through a file descriptor the way the guest reads /dev/vblk1 (padded to the disk size, as the
 * agent pads every code disk), unpacked into a folder that replaces what an earlier load left.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdir, mkdtemp, readFile, readlink, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { CodeDiskError } from "../../contracts/code-disk.ts";
import { decodeRofsImage, ROFS_BLOCK_SIZE } from "../../contracts/rofs-layout.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { unpackCodeDevice } from "../../guest-images/runtime/code-device.ts";

describe("runtime: unpacking a ROFS code disk from its block device (OSv)", () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "code-device-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("writes the disk's tree (files, nested and empty folders, symlinks) into a fresh folder", async () => {
    const src = path.join(work, "src");
    await mkdir(path.join(src, "node_modules/pkg"), { recursive: true });
    await mkdir(path.join(src, "empty"));
    await writeFile(path.join(src, "index.js"), "module.exports = require('pkg');\n");
    await writeFile(path.join(src, "node_modules/pkg/index.js"), "module.exports = 42;\n");
    const big = Buffer.alloc(3 * ROFS_BLOCK_SIZE + 7, 0x61);
    await writeFile(path.join(src, "big.bin"), big);
    await symlink("index.js", path.join(src, "main.js"));
    const disk = path.join(work, "code.rofs");
    await buildCodeDisk(src, disk, { format: "rofs" });
    await truncate(disk, 1024 * 1024);
    const target = path.join(work, "tmp", "code");
    // What an earlier load left is gone afterwards.
    await mkdir(target, { recursive: true });
    await writeFile(path.join(target, "stale.js"), "old");

    const result = unpackCodeDevice(fs, disk, target);
    assert.deepEqual(result, { files: 3, bytes: big.length + 33 + 21 });
    assert.equal(await readFile(path.join(target, "index.js"), "utf8"), "module.exports = require('pkg');\n");
    assert.deepEqual(await readFile(path.join(target, "big.bin")), big);
    assert.equal(await readlink(path.join(target, "main.js")), "index.js");
    assert.ok(fs.statSync(path.join(target, "empty")).isDirectory());
    assert.equal(fs.existsSync(path.join(target, "stale.js")), false);
    const { createRequire } = await import("node:module");
    assert.equal(createRequire(path.join(target, "x.js"))("./main.js"), 42);
  });

  it("refuses a device that holds no ROFS image, or a truncated one, naming the device", async () => {
    const junk = path.join(work, "junk.img");
    await writeFile(junk, Buffer.alloc(4096, 1));
    assert.throws(
      () => unpackCodeDevice(fs, junk, path.join(work, "out")),
      /code disk .*junk\.img: bad ROFS magic/,
    );
    const src = path.join(work, "src");
    await mkdir(src);
    await writeFile(path.join(src, "index.js"), "x".repeat(2000));
    const disk = path.join(work, "code.rofs");
    await buildCodeDisk(src, disk, { format: "rofs" });
    await truncate(disk, 3 * ROFS_BLOCK_SIZE);
    assert.throws(() => unpackCodeDevice(fs, disk, path.join(work, "out")), /code disk .* ends after/);
    assert.equal(fs.existsSync(path.join(work, "out")), false, "nothing written from a bad disk");
  });

  it("the layout's decoder refuses names that would escape the folder", () => {
    // A one-entry image whose entry is named "..": superblock, then the structure block.
    const image = Buffer.alloc(2 * ROFS_BLOCK_SIZE);
    const fields = [0xdeadbeadn, 1n, 512n, 1n, 1n, 1n, 0n, 2n];
    fields.forEach((v, i) => {
      image.writeBigUInt64LE(v, i * 8);
    });
    let at = ROFS_BLOCK_SIZE;
    image.writeBigUInt64LE(2n, at);
    image.writeUInt16LE(2, at + 8);
    image.write("..", at + 10);
    at += 12;
    for (const [mode, no, off, count] of [
      [0x4000n, 1n, 0n, 1n],
      [0x8000n, 2n, 0n, 0n],
    ] as const) {
      image.writeBigUInt64LE(mode, at);
      image.writeBigUInt64LE(no, at + 8);
      image.writeBigUInt64LE(off, at + 16);
      image.writeBigUInt64LE(count, at + 24);
      at += 32;
    }
    assert.throws(
      () => decodeRofsImage(image),
      (err: Error) => err instanceof CodeDiskError && /bad ROFS entry name/.test(err.message),
    );
  });
});
