/** The local Linux guest image build's cache rules and the kernel script's refusals (no kernel build here). */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { LINUX_KERNEL_PIN } from "../../guest-images/bake/pins.ts";
import {
  firecrackerGuestConfig,
  kernelKey,
  LinuxImageUnavailable,
  linuxGuestImage,
} from "../../guest-images/linux/local-image.ts";
import { hasCommand } from "./helpers.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SCRIPT = path.join(REPO, "guest-images/linux/build-kernel.sh");

describe("local Linux guest image", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-local-image-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("takes Firecracker's config from FIRECRACKER_GUEST_CONFIG first", () => {
    assert.equal(firecrackerGuestConfig({ FIRECRACKER_GUEST_CONFIG: "/x/fc.config" }), "/x/fc.config");
  });

  it("keys the kernel by its inputs: another Firecracker config is another key", async () => {
    const a = path.join(dir, "a.config");
    const b = path.join(dir, "b.config");
    await writeFile(a, "CONFIG_A=y\n");
    await writeFile(b, "CONFIG_A=n\n");
    const keyA = await kernelKey(a);
    assert.match(keyA, /^[0-9a-f]{16}$/);
    assert.equal(await kernelKey(a), keyA);
    assert.notEqual(await kernelKey(b), keyA);
  });

  it("an empty cache is LinuxImageUnavailable saying how to build, and builds nothing", async () => {
    const config = path.join(dir, "fc.config");
    await writeFile(config, "CONFIG_A=y\n");
    const cache = path.join(dir, "cache");
    await assert.rejects(
      linuxGuestImage({ env: { SNAPFAAS_CACHE_DIR: cache, FIRECRACKER_GUEST_CONFIG: config } }),
      (err: unknown) => err instanceof LinuxImageUnavailable && /npm run guest:linux/.test(err.message),
    );
  });

  it("finds a cached kernel under its key (the rootfs is then built from the current sources)", async function () {
    this.timeout(60_000);
    const config = path.join(dir, "fc2.config");
    await writeFile(config, "CONFIG_B=y\n");
    const cache = path.join(dir, "cache2");
    const env = { SNAPFAAS_CACHE_DIR: cache, FIRECRACKER_GUEST_CONFIG: config };
    // A small dynamically linked binary stands in for node (the cache rules do not depend on what it
    // is), with this node's headers beside it for the runtime's native helper.
    const headers = path.join(path.dirname(process.execPath), "..", "include", "node");
    // build-rootfs.sh packs a squashfs root around a static busybox.
    if (!(await hasCommand("mksquashfs", ["-version"])) || !(await hasCommand("busybox"))) {
      console.log(
        "      skipped: needs mksquashfs and busybox (apt-get install -y squashfs-tools busybox-static)",
      );
      this.skip();
    }
    if (!existsSync(path.join(headers, "node_api.h"))) {
      console.log(
        `      skipped: no node headers at ${headers} (the native helper is compiled against them)`,
      );
      this.skip();
    }
    const prefix = path.join(dir, "node-prefix");
    await mkdir(path.join(prefix, "bin"), { recursive: true });
    await mkdir(path.join(prefix, "include"), { recursive: true });
    await copyFile("/bin/echo", path.join(prefix, "bin", "node"));
    await symlink(headers, path.join(prefix, "include", "node"));
    const nodeBinary = path.join(prefix, "bin", "node");
    const kernelDir = path.join(cache, "linux-kernel", await kernelKey(config));
    await mkdir(kernelDir, { recursive: true });
    await writeFile(path.join(kernelDir, "vmlinux"), "not really a kernel");
    await assert.rejects(linuxGuestImage({ env, nodeBinary }), /no Linux guest rootfs built/);
    const image = await linuxGuestImage({ env, nodeBinary, build: "rootfs" });
    assert.equal(image.kernel, path.join(kernelDir, "vmlinux"));
    assert.ok(image.rootfs.startsWith(path.join(cache, "linux-rootfs", image.rootfsKey)));
    assert.match(image.runtimeBuild, /^[0-9a-f]{16}$/);
    assert.match(
      image.bootArgs,
      /root=\/dev\/vda rootfstype=squashfs ro init=\/sbin\/init ip=172\.16\.0\.2::172\.16\.0\.1:/,
    );
    // Found again without building, under the same key.
    assert.deepEqual(await linuxGuestImage({ env, nodeBinary }), image);
    assert.match(image.nodeVersion, /coreutils/);
  });

  it("build-kernel.sh refuses a source package whose sha256 is not the pin's", async () => {
    const deb = path.join(dir, `${LINUX_KERNEL_PIN.package}_0-1_all.deb`);
    await writeFile(deb, "not the pinned package");
    const config = path.join(dir, "fc3.config");
    await writeFile(config, "CONFIG_A=y\n");
    const fragment = path.join(REPO, "guest-images/linux/kernel.config");
    const run = (source: string, sha: string) =>
      execa(
        "bash",
        [SCRIPT, source, sha, config, "-", fragment, path.join(dir, "work"), path.join(dir, "out")],
        {
          reject: false,
        },
      );
    const wrong = await run(deb, LINUX_KERNEL_PIN.debSha256);
    assert.equal(wrong.exitCode, 1);
    assert.match(
      wrong.stderr,
      new RegExp(`has sha256 [0-9a-f]{64}, the pin says ${LINUX_KERNEL_PIN.debSha256}`),
    );
    const odd = await run(path.join(dir, "linux.tar"), "-");
    assert.equal(odd.exitCode, 2);
    assert.match(odd.stderr, /SOURCE must be a \.deb file or PACKAGE=VERSION/);
  });

  it("build-kernel.sh refuses a Firecracker config whose sha256 is not the pin's", async () => {
    const deb = path.join(dir, "any_1_all.deb");
    await copyFile("/bin/true", deb);
    const config = path.join(dir, "fc4.config");
    await writeFile(config, "CONFIG_A=y\n");
    const result = await execa(
      "bash",
      [
        SCRIPT,
        deb,
        "-",
        config,
        LINUX_KERNEL_PIN.firecrackerConfigSha256,
        path.join(REPO, "guest-images/linux/kernel.config"),
        path.join(dir, "work4"),
        path.join(dir, "out4"),
      ],
      { reject: false },
    );
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /firecracker-guest\.config has sha256 .*the pin says adbc70ab/);
  });
});
