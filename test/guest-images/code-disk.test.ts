import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { CodeDiskError, type CodeDiskFormat, codeDiskFormatForGuest } from "../../contracts/code-disk.ts";
import { timeCodeDiskBuild, timeFolderCopy } from "../../guest-images/code-disk/bench.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { genRofsManifest, readRofsImage } from "../../guest-images/code-disk/rofs.ts";
import { DEFAULT_CODE_DISK_LIMITS, readCodeTree } from "../../guest-images/code-disk/tree.ts";
import { hasCommand } from "./helpers.ts";

/** A small function folder; `variant` changes one file's content. */
async function writeFunction(
  dir: string,
  variant = "a",
  order: "forward" | "reverse" = "forward",
): Promise<void> {
  const files: [string, string][] = [
    ["package.json", '{"name":"hello","main":"index.js"}\n'],
    ["index.js", `module.exports.handler = async () => ({ statusCode: 200, body: "${variant}" });\n`],
    ["lib/util.js", "exports.x = 1;\n"],
    ["lib/deep/er/most.js", "exports.y = 2;\n"],
    ["empty.txt", ""],
    ["big.bin", "x".repeat(1500)],
  ];
  if (order === "reverse") files.reverse();
  for (const [rel, content] of files) {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), content);
  }
  await symlink("lib/util.js", path.join(dir, "util.js"));
  await mkdir(path.join(dir, "node_modules", ".bin"), { recursive: true });
  await writeFile(path.join(dir, "node_modules", ".bin", "tool"), "#!/bin/sh\n");
  await chmod(path.join(dir, "node_modules", ".bin", "tool"), 0o755);
}

describe("code disk builder", () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "code-disk-test-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const formats: CodeDiskFormat[] = ["rofs", "squashfs"];
  for (const format of formats) {
    describe(format, () => {
      before(async function () {
        if (format === "squashfs" && !(await hasCommand("mksquashfs", ["-version"]))) {
          console.log("    skip: mksquashfs missing (apt-get install -y squashfs-tools)");
          this.skip();
        }
      });

      it("gives byte-identical images for the same code, whatever mtimes, modes and creation order", async () => {
        const a = path.join(work, "a");
        const b = path.join(work, "b");
        await writeFunction(a, "a", "forward");
        await writeFunction(b, "a", "reverse");
        await utimes(path.join(b, "index.js"), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
        await chmod(path.join(b, "package.json"), 0o600);
        const one = await buildCodeDisk(a, path.join(work, "one.img"), { format });
        const two = await buildCodeDisk(b, path.join(work, "two.img"), { format });
        assert.equal(one.sha256, two.sha256);
        assert.deepEqual(await readFile(one.file), await readFile(two.file));
        assert.equal(one.entryCount, 13);
        assert.equal(one.unpackedBytes, two.unpackedBytes);
      });

      it("changes the hash when one file's content changes", async () => {
        await writeFunction(path.join(work, "a"), "a");
        await writeFunction(path.join(work, "b"), "b");
        const one = await buildCodeDisk(path.join(work, "a"), path.join(work, "one.img"), { format });
        const two = await buildCodeDisk(path.join(work, "b"), path.join(work, "two.img"), { format });
        assert.notEqual(one.sha256, two.sha256);
      });

      // squashfs keeps the executable bit; ROFS stores no permission bits at all (OSv has one user).
      const keepsExecBit = format === "squashfs";
      it(`${keepsExecBit ? "changes" : "keeps"} the hash when a file gains the executable bit`, async () => {
        await writeFunction(path.join(work, "a"));
        const one = await buildCodeDisk(path.join(work, "a"), path.join(work, "one.img"), { format });
        await chmod(path.join(work, "a", "index.js"), 0o755);
        const two = await buildCodeDisk(path.join(work, "a"), path.join(work, "two.img"), { format });
        assert.equal(one.sha256 !== two.sha256, keepsExecBit);
      });
    });
  }

  it("writes a ROFS image that reads back to the same tree", async () => {
    const src = path.join(work, "src");
    await writeFunction(src, "z");
    const disk = await buildCodeDisk(src, path.join(work, "code.rofs"), { format: "rofs" });
    const image = await readFile(disk.file);
    assert.equal(image.readBigUInt64LE(0), 0xdeadbeadn, "superblock magic at block 0");
    assert.equal(image.length % 512, 0);
    const contents = readRofsImage(image);
    assert.deepEqual([...contents.keys()].sort(), [
      "big.bin",
      "empty.txt",
      "index.js",
      "lib",
      "lib/deep",
      "lib/deep/er",
      "lib/deep/er/most.js",
      "lib/util.js",
      "node_modules",
      "node_modules/.bin",
      "node_modules/.bin/tool",
      "package.json",
      "util.js",
    ]);
    for (const rel of ["index.js", "big.bin", "empty.txt", "lib/deep/er/most.js"]) {
      const entry = contents.get(rel);
      assert.equal(entry?.kind, "file");
      assert.deepEqual(entry.kind === "file" && entry.data, await readFile(path.join(src, rel)), rel);
    }
    assert.deepEqual(contents.get("util.js"), { kind: "symlink", target: "lib/util.js" });
  });

  it("lists a squashfs image with the same files, all owned by root", async function () {
    if (!(await hasCommand("unsquashfs", ["-version"]))) {
      console.log("    skip: unsquashfs missing (apt-get install -y squashfs-tools)");
      this.skip();
    }
    const src = path.join(work, "src");
    await writeFunction(src);
    const disk = await buildCodeDisk(src, path.join(work, "code.sqfs"), { format: "squashfs" });
    const { stdout } = await execa("unsquashfs", ["-lln", "-n", disk.file]);
    assert.match(stdout, /-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 squashfs-root\/node_modules\/\.bin\/tool/);
    assert.match(stdout, /-rw-r--r-- 0\/0 +\d+ 1970-01-01 00:00 squashfs-root\/package\.json/);
    assert.match(stdout, /squashfs-root\/util\.js -> lib\/util\.js/);
  });

  describe("limits", () => {
    const build = (src: string, limits: Partial<typeof DEFAULT_CODE_DISK_LIMITS>) =>
      buildCodeDisk(src, path.join(work, "out.img"), {
        format: "rofs",
        limits: { ...DEFAULT_CODE_DISK_LIMITS, ...limits },
      });

    it("has the documented defaults", () => {
      assert.equal(DEFAULT_CODE_DISK_LIMITS.maxUnpackedBytes, 250 * 1024 * 1024);
    });

    it("refuses more unpacked bytes than allowed, naming the limit", async () => {
      await writeFunction(path.join(work, "src"));
      await assert.rejects(build(path.join(work, "src"), { maxUnpackedBytes: 1000 }), (e: Error) => {
        assert.ok(e instanceof CodeDiskError);
        assert.match(e.message, /code too large: more than 1000 bytes unpacked/);
        return true;
      });
    });

    it("refuses too many entries", async () => {
      await writeFunction(path.join(work, "src"));
      await assert.rejects(build(path.join(work, "src"), { maxEntries: 5 }), /too many files: more than 5/);
    });

    it("refuses paths deeper than allowed, naming the path", async () => {
      await writeFunction(path.join(work, "src"));
      await assert.rejects(
        build(path.join(work, "src"), { maxDepth: 3 }),
        /path too deep: "lib\/deep\/er\/most\.js" is 4 levels deep, limit 3/,
      );
    });

    it("refuses symlinks that leave the code folder", async () => {
      const src = path.join(work, "src");
      await mkdir(path.join(src, "lib"), { recursive: true });
      await symlink("../../etc/passwd", path.join(src, "lib", "escape"));
      await assert.rejects(build(src, {}), /symlink "lib\/escape" -> "..\/..\/etc\/passwd" points outside/);
      await rm(path.join(src, "lib", "escape"));
      await symlink("/etc/passwd", path.join(src, "abs"));
      await assert.rejects(build(src, {}), /symlink "abs" -> "\/etc\/passwd" points outside/);
    });

    it("refuses a missing folder and leaves no partial image behind", async () => {
      await assert.rejects(build(path.join(work, "nope"), {}), /does not exist or is not a directory/);
      await writeFunction(path.join(work, "src"));
      await assert.rejects(build(path.join(work, "src"), { maxEntries: 1 }));
      await assert.rejects(readFile(path.join(work, "out.img")), { code: "ENOENT" });
    });
  });
});

describe("code disk helpers", () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "code-disk-helpers-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("picks ROFS for OSv and squashfs for Linux guests", () => {
    assert.equal(codeDiskFormatForGuest("osv"), "rofs");
    assert.equal(codeDiskFormatForGuest("linux"), "squashfs");
    assert.throws(() => codeDiskFormatForGuest("process"), /binds a code folder, not a code disk/);
  });

  it("lists a tree as a gen-rofs-img.py manifest in the writer's order", async () => {
    const src = path.join(work, "src");
    await mkdir(path.join(src, "lib-a"), { recursive: true });
    await mkdir(path.join(src, "lib", "empty"), { recursive: true });
    await writeFile(path.join(src, "lib", "x.js"), "x");
    await writeFile(path.join(src, "lib-a", "y.js"), "y");
    await symlink("lib/x.js", path.join(src, "z.js"));
    const manifest = genRofsManifest(await readCodeTree(src), src);
    assert.equal(
      manifest,
      [
        "[manifest]",
        `/lib/empty: ${src}/lib/empty`,
        `/lib/x.js: ${src}/lib/x.js`,
        `/lib-a/y.js: ${src}/lib-a/y.js`,
        "/z.js: ->lib/x.js",
        "",
      ].join("\n"),
    );
  });

  it("times code disk builds of a small function for the bench suite", async () => {
    const timing = await timeCodeDiskBuild("rofs", 3);
    assert.equal(timing.iterations, 3);
    assert.ok(timing.p50Ms > 0 && timing.p99Ms >= timing.p50Ms);
    assert.equal(timing.imageBytes % 512, 0);
    assert.ok(timing.imageBytes >= 512 * 3, "superblock, data and structure blocks");
  });

  it("times builds of a given folder, and a plain copy of it as the baseline", async () => {
    const src = path.join(work, "src");
    await writeFunction(src);
    const timing = await timeCodeDiskBuild("rofs", 2, src);
    const direct = await buildCodeDisk(src, path.join(work, "direct.img"), { format: "rofs" });
    assert.equal(timing.imageBytes, direct.bytes, "the given folder was built");
    const copy = await timeFolderCopy(src, 2);
    assert.ok(copy.p50Ms > 0 && copy.p99Ms >= copy.p50Ms);
  });
});
