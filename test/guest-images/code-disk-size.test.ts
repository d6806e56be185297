/**
 * The code disk size class (guest-images/code-disk/size.ts): every disk swapped under a restored guest
 * has the placeholder's capacity, so images are padded to one size, and code that does not fit is
 * refused. The padded images still read back (ROFS by our reader, squashfs by unsquashfs), and the CLI
 * the bake runs for the placeholder pads by default.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { CODE_DISK_SIZE_BYTES, CodeDiskError, checkCodeDiskSize } from "../../contracts/code-disk.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { readRofsImage } from "../../guest-images/code-disk/rofs.ts";
import { padCodeDisk } from "../../guest-images/code-disk/size.ts";
import { hasCommand } from "./helpers.ts";

const MiB = 1024 * 1024;

describe("code disk size class", () => {
  let work: string;
  let src: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "code-disk-size-"));
    src = path.join(work, "src");
    await mkdir(src);
    await writeFile(path.join(src, "package.json"), '{"main":"index.js"}\n');
    await writeFile(path.join(src, "index.js"), "exports.handler = async () => 'hi';\n");
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("is 64 MiB by default and a whole number of MiB", () => {
    assert.equal(CODE_DISK_SIZE_BYTES, 64 * MiB);
    checkCodeDiskSize(MiB);
    for (const bad of [0, -MiB, MiB + 512, 1.5 * MiB])
      assert.throws(() => checkCodeDiskSize(bad), CodeDiskError);
  });

  it("pads a ROFS image sparsely to the size class, and it still reads back", async () => {
    const disk = await buildCodeDisk(src, path.join(work, "code.rofs"), {
      format: "rofs",
      sizeBytes: 2 * MiB,
    });
    assert.equal(disk.bytes, 2 * MiB);
    const st = await stat(disk.file);
    assert.equal(st.size, 2 * MiB);
    assert.ok(st.blocks * 512 < MiB, `sparse: ${st.blocks * 512} bytes allocated`);
    const contents = readRofsImage(await readFile(disk.file));
    assert.deepEqual([...contents.keys()].sort(), ["index.js", "package.json"]);
  });

  it("pads a squashfs image, and unsquashfs still lists it", async function () {
    if (!(await hasCommand("mksquashfs", ["-version"]))) {
      console.log("      skipped: mksquashfs missing (apt-get install -y squashfs-tools)");
      this.skip();
    }
    const disk = await buildCodeDisk(src, path.join(work, "code.sqfs"), {
      format: "squashfs",
      sizeBytes: 3 * MiB,
    });
    assert.equal(disk.bytes, 3 * MiB);
    const { stdout } = await execa("unsquashfs", ["-lln", "-n", disk.file]);
    assert.match(stdout, /squashfs-root\/index\.js/);
  });

  it("refuses code whose image is larger than the size class, naming both sizes, and leaves no image", async () => {
    await writeFile(path.join(src, "blob.bin"), randomBytes(MiB + 4096));
    const out = path.join(work, "big.rofs");
    await assert.rejects(
      buildCodeDisk(src, out, { format: "rofs", sizeBytes: MiB }),
      (e: Error) =>
        e instanceof CodeDiskError &&
        /code too large for a code disk: its image is \d+ bytes \(1\.\d+ MiB\), over the code disk size of 1048576 bytes \(1 MiB/.test(
          e.message,
        ),
    );
    await assert.rejects(stat(out), { code: "ENOENT" });
    const file = path.join(work, "raw.img");
    await writeFile(file, Buffer.alloc(2 * MiB));
    await assert.rejects(
      padCodeDisk(file, MiB),
      /its image is 2097152 bytes \(2 MiB\), over the code disk size of 1048576 bytes/,
    );
  });

  it("is what the bake's placeholder gets: the CLI pads --empty to the default size unless --exact", async () => {
    const cli = path.resolve("guest-images/code-disk/cli.ts");
    const placeholder = path.join(work, "code-empty.img");
    await execa("node", ["--import", "tsx", cli, "--format", "rofs", "--empty", "--out", placeholder]);
    assert.equal((await stat(placeholder)).size, CODE_DISK_SIZE_BYTES);
    const sized = path.join(work, "sized.img");
    await execa("node", [
      "--import",
      "tsx",
      cli,
      "--format",
      "rofs",
      "--src",
      src,
      "--out",
      sized,
      "--size-mib",
      "2",
    ]);
    assert.equal((await stat(sized)).size, 2 * MiB);
    const exact = path.join(work, "exact.img");
    await execa("node", [
      "--import",
      "tsx",
      cli,
      "--format",
      "rofs",
      "--src",
      src,
      "--out",
      exact,
      "--exact",
    ]);
    assert.ok((await stat(exact)).size < MiB);
  });
});
