/**
 * The Linux guest's PID 1 (init.sh) run for real: the root filesystem build-rootfs.sh packs, unpacked
 * and booted with chroot in new mount, pid and network namespaces, with /dev already holding devtmpfs
 * as Firecracker's kernel leaves it (CONFIG_DEVTMPFS_MOUNT=y). Only the kernel is missing.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { execa } from "execa";
import { runtimeArgs } from "../../guest-images/bake/firecracker-plan.ts";
import {
  LINUX_GUEST_PATHS,
  LINUX_INIT_RUNTIME_PORT,
  LINUX_RUNTIME_FLAGS,
} from "../../guest-images/linux/recipe.ts";
import { bundleStampedRuntime } from "../../guest-images/runtime/build.ts";
import { hasCommand } from "./helpers.ts";

const REPO = path.resolve(import.meta.dirname, "../..");

/** init.sh's exec line as argv (continuation lines joined). */
async function initExec(): Promise<string[]> {
  const text = (await readFile(path.join(REPO, "guest-images/linux/init.sh"), "utf8")).replace(
    /\\\n\s*/g,
    "",
  );
  const line = text.split("\n").find((l) => l.startsWith("exec "));
  assert.ok(line, "init.sh ends in exec");
  return line.split(/\s+/).slice(1);
}

describe("Linux guest init (init.sh)", () => {
  it("starts the runtime with runtimeArgs() and the Linux flags, and mounts no code disk", async () => {
    assert.deepEqual(await initExec(), [
      LINUX_GUEST_PATHS.node,
      LINUX_GUEST_PATHS.runtime,
      ...runtimeArgs(LINUX_INIT_RUNTIME_PORT, LINUX_GUEST_PATHS.code),
      ...LINUX_RUNTIME_FLAGS,
    ]);
    const text = await readFile(path.join(REPO, "guest-images/linux/init.sh"), "utf8");
    assert.doesNotMatch(text.replace(/^#.*$/gm, ""), /\/dev\/vdb|mount[^\n]*\/code/);
  });

  describe("booted in namespaces from the built root filesystem", function () {
    this.timeout(180_000);
    let work: string;
    let root: string;
    let init: ChildProcess | undefined;

    before(async function () {
      const missing: string[] = [];
      if (process.getuid?.() !== 0) missing.push("root");
      const busybox = await execa("bash", ["-c", 'command -v busybox && ! ldd "$(command -v busybox)"'], {
        reject: false,
      });
      if (busybox.exitCode !== 0) missing.push("busybox-static");
      if (!(await hasCommand("unsquashfs", ["-version"]))) missing.push("squashfs-tools");
      if (!(await hasCommand("unshare"))) missing.push("unshare (util-linux)");
      if (!(await hasCommand("g++"))) missing.push("g++");
      if (missing.length > 0) {
        console.log(`      skip: needs ${missing.join(", ")}`);
        this.skip();
      }
      work = await mkdtemp(path.join(tmpdir(), "linux-init-"));
      const { bundlePath } = await bundleStampedRuntime(path.join(work, "rt"));
      const img = path.join(work, "root.img");
      const built = await execa(
        "bash",
        [
          path.join(REPO, "guest-images/linux/build-rootfs.sh"),
          process.execPath,
          bundlePath,
          busybox.stdout.split("\n")[0]!.trim(),
          img,
        ],
        { reject: false },
      );
      if (built.exitCode !== 0 && /include\/node\/.* is missing/.test(built.stderr)) {
        console.log("      skip: this node has no headers beside it (include/node) for the native helper");
        this.skip();
      }
      assert.equal(built.exitCode, 0, built.stderr);
      root = path.join(work, "root");
      await execa("unsquashfs", ["-q", "-n", "-d", root, img]);
    });

    after(async () => {
      if (init && init.exitCode === null) {
        init.kill("SIGKILL");
        await new Promise((r) => init!.once("exit", r));
      }
      if (work) await rm(work, { recursive: true, force: true });
    });

    it("survives a /dev the kernel already mounted, and hands PID 1 to a runtime that answers ready", async () => {
      // --kill-child: killing unshare ends the namespace's PID 1, and with it everything inside.
      const script = `mount -t devtmpfs devtmpfs '${root}/dev' && exec chroot '${root}' /sbin/init`;
      init = spawn(
        "unshare",
        [
          "--mount",
          "--pid",
          "--net",
          "--fork",
          "--kill-child",
          "--propagation",
          "private",
          "sh",
          "-c",
          script,
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let stderr = "";
      init.stderr!.on("data", (c: Buffer) => {
        stderr += c.toString();
      });
      const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
        createInterface({ input: init!.stdout! }).on("line", (l) => {
          const parsed = JSON.parse(l) as Record<string, unknown>;
          if (parsed.type === "ready") resolve(parsed);
        });
        init!.once("exit", (code) => reject(new Error(`init exited with ${code}: ${stderr}`)));
      });
      // The runtime is PID 1 of the namespace: init exec'd it, as in the VM.
      assert.equal(ready.pid, 1);
      assert.doesNotMatch(stderr, /does not load/);
    });
  });
});
