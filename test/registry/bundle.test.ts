import assert from "node:assert/strict";
import { lstat, mkdtemp, readFile, readlink, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { BundleError, forceRemove, MAX_PATH_DEPTH, unpackBundle } from "../../host-agent/registry/bundle.ts";
import { HELLO_MODULE, tarGz } from "../helpers/tar-builder.ts";
import { zip } from "../helpers/zip-builder.ts";

const LIMITS = { maxBundleBytes: 1 << 20, maxUnpackedBytes: 1 << 20, maxFiles: 100 };

describe("bundle unpacking", () => {
  let dir: string;
  let n = 0;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-bundle-"));
  });
  afterEach(async () => {
    await forceRemove(dir);
  });
  const dest = () => path.join(dir, `out-${n++}`);

  async function refused(bytes: Buffer | Promise<Buffer>, message: RegExp, status = 400) {
    const out = dest();
    await assert.rejects(unpackBundle(await bytes, out, LIMITS), (err: unknown) => {
      assert.ok(err instanceof BundleError, String(err));
      assert.match(err.message, message);
      assert.equal(err.status, status);
      return true;
    });
    await assert.rejects(stat(out), /ENOENT/, "nothing is left behind");
  }

  it("unpacks a tar.gz read-only, with in-bundle symlinks, and reports size and count", async () => {
    const out = dest();
    const result = await unpackBundle(
      tarGz([
        { name: "index.js", data: HELLO_MODULE },
        { name: "lib/", type: "5" },
        { name: "lib/a.js", data: "module.exports = 1", mode: 0o755 },
        { name: "lib/alias.js", type: "2", linkname: "a.js" },
      ]),
      out,
      LIMITS,
    );
    assert.equal(result.format, "tar.gz");
    assert.equal(result.fileCount, 3);
    assert.equal(result.unpackedBytes, HELLO_MODULE.length + 18);
    assert.equal(await readFile(path.join(out, "index.js"), "utf8"), HELLO_MODULE);
    assert.equal(await readlink(path.join(out, "lib/alias.js")), "a.js");
    assert.equal((await stat(path.join(out, "index.js"))).mode & 0o777, 0o444);
    assert.equal((await stat(path.join(out, "lib/a.js"))).mode & 0o777, 0o555);
    assert.equal((await stat(path.join(out, "lib"))).mode & 0o777, 0o555);
  });

  it("unwraps one folder that wraps the whole bundle (npm pack's package/)", async () => {
    const out = dest();
    await unpackBundle(
      tarGz([
        { name: "package/index.js", data: HELLO_MODULE },
        { name: "package/package.json", data: "{}" },
      ]),
      out,
      LIMITS,
    );
    assert.ok((await lstat(path.join(out, "index.js"))).isFile());
  });

  it("unpacks a zip with folders", async () => {
    const out = dest();
    const r = await unpackBundle(
      await zip([
        { name: "src/", dir: true },
        { name: "src/index.js", data: HELLO_MODULE },
        { name: "package.json", data: '{"main":"src/index.js"}' },
      ]),
      out,
      LIMITS,
    );
    assert.equal(r.format, "zip");
    assert.equal(await readFile(path.join(out, "src/index.js"), "utf8"), HELLO_MODULE);
  });

  it("refuses a symlink chain that resolves outside even though each link looks inside", () =>
    refused(
      tarGz([
        { name: "index.js", data: "x" },
        { name: "deep/dir/", type: "5" },
        { name: "deep/dir/up", type: "2", linkname: "../.." },
        { name: "escape", type: "2", linkname: "deep/dir/up/../.." },
      ]),
      /points outside|resolves outside/,
    ));

  it("refuses writing a file through a symlinked folder", () =>
    refused(
      tarGz([
        { name: "sub/", type: "5" },
        { name: "link", type: "2", linkname: "sub" },
        { name: "link/x.js", data: "x" },
      ]),
      /inside the symlink link/,
    ));

  it("refuses hard links, FIFOs and block devices", async () => {
    await refused(
      tarGz([
        { name: "a", data: "x" },
        { name: "b", type: "1", linkname: "a" },
      ]),
      /hard links are not allowed/,
    );
    await refused(
      tarGz([
        { name: "a", data: "x" },
        { name: "p", type: "6" },
      ]),
      /FIFO entries are not allowed/,
    );
    await refused(
      tarGz([
        { name: "a", data: "x" },
        { name: "sda", type: "4" },
      ]),
      /BlockDevice entries are not allowed/,
    );
  });

  it("refuses setgid and sticky bits too", async () => {
    await refused(tarGz([{ name: "a", data: "x", mode: 0o2755 }]), /setuid, setgid and sticky/);
    await refused(zip([{ name: "a", data: "x", mode: 0o104755 }]), /setuid, setgid and sticky/);
  });

  it(`refuses nesting deeper than ${MAX_PATH_DEPTH} levels`, () =>
    refused(tarGz([{ name: `${"d/".repeat(MAX_PATH_DEPTH)}f.js`, data: "x" }]), /nested deeper/));

  it("refuses a zip bomb by its declared sizes before inflating it", async () => {
    const bomb = await zip([
      { name: "index.js", data: HELLO_MODULE },
      { name: "zeros", data: "\0".repeat(2 << 20) },
    ]);
    assert.ok(bomb.length < 10_000, "the bomb is small on the wire");
    await refused(bomb, /unpacks to more than/, 413);
  });

  it("refuses a tar entry that carries more data than its header declares", () =>
    refused(
      tarGz([{ name: "index.js", data: "x".repeat(2000), declaredSize: 10 }]),
      /damaged|more data|unsupported/,
    ));

  it("refuses duplicate entries, empty bodies, truncated and empty archives", async () => {
    await refused(
      tarGz([
        { name: "a.js", data: "1" },
        { name: "a.js", data: "2" },
      ]),
      /more than once/,
    );
    await refused(Buffer.alloc(0), /empty/);
    const good = tarGz([{ name: "index.js", data: HELLO_MODULE }]);
    await refused(good.subarray(0, good.length - 30), /damaged/);
    await refused(tarGz([{ name: "only/", type: "5" }]), /no files/);
    await refused(zip([]), /zip archive is empty|damaged/);
  });

  it("refuses too many files with 413", () =>
    refused(
      tarGz(Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, data: "x" }))),
      /more than 100 entries/,
      413,
    ));
});
