/**
 * The bake's last step is the acceptance run (`host-agent/sandbox/firecracker/acceptance.ts
 * --bake-from`): boot, snapshot, restore a clone, attach hello-world's code disk, load it and call it.
 * It must be a gate: exit 0 only when the clone answers the seed's call with "Hello world!". Run here
 * for real on the QEMU backend with the Linux guest (TCG), once with hello-world (passes) and once with
 * a function that answers something else (fails), from the same base.
 * Needs root, qemu-system-x86_64 and the cached Linux image (`npm run guest:linux`).
 */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { baseFiles } from "../../contracts/base-layout.ts";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { guestNetworkOf } from "../../guest-images/bake/firecracker-plan.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import { linuxGuestImage } from "../../guest-images/linux/local-image.ts";
import { linuxKernelArgs } from "../../guest-images/linux/recipe.ts";
import { bundleFunctionInto } from "../../host-agent/cli/pack.ts";
import { acceptance, answerProblem } from "../../host-agent/sandbox/firecracker/acceptance.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";
import { linuxImageOrSkip, requireQemu } from "../firecracker/qemu-helpers.ts";

const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
/** Placeholder and code disks share one size: QEMU cannot grow a drive under a restored guest. */
const CODE_DISK_BYTES = 1024 * 1024;
const parentCgroup = "snapfaas-acctest";

describe("the bake's acceptance gate, on QEMU/TCG with the Linux guest", function () {
  this.timeout(900_000);
  let dir: string | undefined;

  before(async function () {
    requireQemu(this, true);
    await linuxImageOrSkip(this);
    dir = await makeTempDir("acceptance-gate");
    // QEMU is not chrooted: the VM uids walk down to their jails.
    await chmod(dir, 0o755);
  });

  after(async () => {
    for (const c of ["memory", "cpu"])
      await rmdir(`/sys/fs/cgroup/${c}/${parentCgroup}`).catch(() => undefined);
    await removeDir(dir);
  });

  it("judges an answer: 200 with the expected JSON-RPC result, nothing else", () => {
    const ok = JSON.stringify({ jsonrpc: "2.0", result: "Hello world!", error: null, id: 1 });
    assert.equal(answerProblem(200, ok, "Hello world!"), undefined);
    assert.match(answerProblem(503, "no function is loaded", "Hello world!") ?? "", /HTTP 503/);
    assert.match(answerProblem(404, "no control route", "Hello world!") ?? "", /HTTP 404/);
    assert.match(answerProblem(200, "<html>", "Hello world!") ?? "", /not JSON/);
    assert.match(
      answerProblem(200, JSON.stringify({ result: "Goodbye" }), "Hello world!") ?? "",
      /"Goodbye" instead of "Hello world!"/,
    );
  });

  it("passes a base whose clone serves hello-world, and fails one whose clone answers otherwise", async () => {
    const root = dir!;
    const image = await linuxGuestImage();
    const configFile = join(root, "driver.json");
    const rawConfig = {
      vmm: "qemu",
      qemu: { accelerator: "tcg" },
      chrootBase: join(root, "jails"),
      cgroupRoot: "/sys/fs/cgroup",
      parentCgroup,
      guestReadyTimeoutMs: 240_000,
      apiSocketTimeoutMs: 10_000,
      network: {
        netnsPrefix: "qacc",
        vethPrefix: "qaccv",
        hostSubnetBase: "10.204.0.0",
        poolSize: 2,
        maxSlots: 2,
      },
    };
    await writeFile(configFile, JSON.stringify(rawConfig));
    const config = parseFirecrackerDriverConfig(rawConfig);

    const inputs = join(root, "inputs");
    await mkdir(inputs, { recursive: true });
    await copyFile(image.kernel, join(inputs, baseFiles.kernel.name));
    await copyFile(image.rootfs, join(inputs, baseFiles.rootDisk.name));
    await mkdir(join(root, "empty"));
    await buildCodeDisk(join(root, "empty"), join(inputs, baseFiles.codePlaceholder.name), {
      format: "squashfs",
      sizeBytes: CODE_DISK_BYTES,
    });

    // hello-world as a deploy ships it, and a function that loads fine but answers the wrong thing.
    const hello = join(root, "hello");
    await bundleFunctionInto(join(REPO, "examples/hello-world"), hello);
    const goodbye = join(root, "goodbye-src");
    await mkdir(goodbye);
    await writeFile(
      join(goodbye, "index.js"),
      'exports.HelloWorldService = class { helloWorld() { return "Goodbye"; } };\n',
    );
    const disks = {
      hello: await buildCodeDisk(hello, join(root, "hello.img"), {
        format: "squashfs",
        sizeBytes: CODE_DISK_BYTES,
      }),
      goodbye: await buildCodeDisk(goodbye, join(root, "goodbye.img"), {
        format: "squashfs",
        sizeBytes: CODE_DISK_BYTES,
      }),
    };

    const base = join(root, "base");
    const common = ["--config", configFile, "--base", base, "--clones", "1"];
    const passed = await acceptance([
      ...common,
      "--bake-from",
      inputs,
      "--boot-args",
      linuxKernelArgs(guestNetworkOf(config)),
      "--code",
      disks.hello.file,
      "--code-hash",
      disks.hello.sha256,
    ]);
    assert.equal(passed, 0, "a base whose clone answers hello-world passes");

    const failed = await acceptance([
      ...common,
      "--code",
      disks.goodbye.file,
      "--code-hash",
      disks.goodbye.sha256,
    ]);
    assert.equal(failed, 1, "a clone that answers anything but Hello world! fails the gate");
  });
});
