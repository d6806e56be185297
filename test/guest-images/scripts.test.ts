import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { execa } from "execa";
import { parse as parseYaml } from "yaml";
import { hasCommand } from "./helpers.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Every *.sh in the repository outside node_modules and .git. */
async function shellScripts(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name === ".git") continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await shellScripts(full)));
    else if (entry.name.endsWith(".sh")) found.push(full);
  }
  return found.sort();
}

describe("shell scripts", () => {
  it("are all shellcheck-clean", async function () {
    if (!(await hasCommand("shellcheck"))) {
      console.log("    skip: shellcheck missing (apt-get install -y shellcheck)");
      this.skip();
    }
    const scripts = await shellScripts(REPO);
    const ours = scripts.map((s) => path.relative(REPO, s));
    for (const expected of [
      "guest-images/osv/check-popf.sh",
      "guest-images/linux/init.sh",
      "guest-images/bake/fetch-firecracker.sh",
    ]) {
      assert.ok(ours.includes(expected), `${expected} is checked`);
    }
    const result = await execa("shellcheck", ["--external-sources", ...scripts], {
      reject: false,
      cwd: REPO,
    });
    assert.equal(result.exitCode, 0, result.stdout);
  });

  it("refuse missing arguments with a usage line", async () => {
    for (const script of [
      "bake/fetch-firecracker.sh",
      "bake/fetch-node.sh",
      "osv/build-image.sh",
      "linux/build-kernel.sh",
      "linux/build-rootfs.sh",
    ]) {
      const result = await execa("bash", [path.join(REPO, "guest-images", script)], { reject: false });
      assert.equal(result.exitCode, 2, script);
      assert.match(result.stderr, /^usage: /, script);
    }
  });
});

describe("popf stress check", () => {
  const stress = path.join(REPO, "guest-images/osv/popf-stress.cjs");

  it("passes on a host whose timers and threads keep running", async () => {
    const result = await execa("node", [stress, "--seconds", "1", "--max-late-ms", "5000"], {
      reject: false,
    });
    assert.equal(result.exitCode, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^POPF-CHECK PASS timers=[1-9]\d* /m);
  });

  it("fails, with the reason, when a timer is later than allowed", async () => {
    const result = await execa("node", [stress, "--seconds", "5", "--max-late-ms", "0.0001"], {
      reject: false,
    });
    assert.equal(result.exitCode, 1);
    assert.match(result.stdout, /^POPF-CHECK FAIL (timer fired|worker heartbeat stalled) /m);
  });

  describe("host watchdog (check-popf.sh) with a stand-in for Firecracker", () => {
    let work: string;
    beforeEach(async () => {
      work = await mkdtemp(path.join(tmpdir(), "popf-check-"));
      await mkdir(path.join(work, "image"));
    });
    afterEach(async () => {
      await rm(work, { recursive: true, force: true });
    });

    /** A fake firecracker that prints what a guest would print on the serial console. */
    async function fakeFirecracker(body: string): Promise<string> {
      const file = path.join(work, "firecracker");
      await writeFile(file, `#!/usr/bin/env bash\n${body}\n`);
      await chmod(file, 0o755);
      return file;
    }
    const check = (fc: string) =>
      execa("bash", [path.join(REPO, "guest-images/osv/check-popf.sh"), fc, path.join(work, "image"), "1"], {
        reject: false,
      });

    it("exits 0 on the guest's PASS line", async () => {
      const result = await check(await fakeFirecracker('echo "OSv v0.57"; echo "POPF-CHECK PASS timers=10"'));
      assert.equal(result.exitCode, 0);
    });

    it("exits 1 on the guest's FAIL line", async () => {
      const result = await check(await fakeFirecracker('echo "POPF-CHECK FAIL timer fired 900 ms late"'));
      assert.equal(result.exitCode, 1);
      assert.match(result.stdout, /timer fired 900 ms late/);
    });

    it("exits 2 when the guest never reports (a hang or a crash)", async () => {
      const result = await check(await fakeFirecracker('echo "page fault in kernel"; exit 3'));
      assert.equal(result.exitCode, 2);
      assert.match(result.stderr, /no verdict: the guest hung or crashed/);
    });

    it("boots Firecracker with a config the official API spec accepts, the stress check as the app", async function () {
      const spec = path.resolve(REPO, "../shared/specs/firecracker-api.yaml");
      if (!existsSync(spec)) {
        console.log(`      skip: ${spec} not found`);
        this.skip();
      }
      const copy = path.join(work, "config-seen.json");
      const result = await check(await fakeFirecracker(`cp "$3" ${copy}; echo "POPF-CHECK PASS"`));
      assert.equal(result.exitCode, 0, result.stderr);
      const config = JSON.parse(await readFile(copy, "utf8"));
      const { definitions } = parseYaml(await readFile(spec, "utf8")) as {
        definitions: Record<string, unknown>;
      };
      const ajv = new Ajv({ strict: false, allErrors: true });
      // Swagger 2.0 integer formats; the integer type itself is still checked.
      ajv.addFormat("int64", true).addFormat("int32", true);
      ajv.addSchema({ definitions }, "spec");
      const valid = (definition: string, body: unknown) => {
        const validate = ajv.getSchema(`spec#/definitions/${definition}`);
        assert.ok(validate, definition);
        assert.ok(validate(body), `${definition}: ${ajv.errorsText(validate.errors)}`);
      };
      valid("BootSource", config["boot-source"]);
      valid("MachineConfiguration", config["machine-config"]);
      for (const drive of config.drives) valid("Drive", drive);
      assert.equal(config["boot-source"].kernel_image_path, path.join(work, "image", "kernel.elf"));
      assert.equal(config.drives[0].path_on_host, path.join(work, "image", "root.img"));
      assert.match(config["boot-source"].boot_args, /\/node \/popf\/stress\.cjs --seconds 1$/);
    });

    it("passes the stress check as the guest app in the boot arguments", async () => {
      const result = await check(
        await fakeFirecracker(
          'cfg="$3"; grep -q "/node /popf/stress.cjs --seconds 1" "$cfg" && echo "POPF-CHECK PASS"',
        ),
      );
      assert.equal(result.exitCode, 0, result.stdout + result.stderr);
    });
  });
});

describe("Linux guest root filesystem (build-rootfs.sh)", () => {
  let work: string;
  before(async function () {
    const busybox = await execa("bash", ["-c", 'command -v busybox && ! ldd "$(command -v busybox)"'], {
      reject: false,
    });
    if (busybox.exitCode !== 0 || !(await hasCommand("unsquashfs", ["-version"]))) {
      console.log(
        "    skip: needs busybox-static and squashfs-tools (apt-get install -y busybox-static squashfs-tools)",
      );
      this.skip();
    }
  });
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "linux-rootfs-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("packs node with its libraries, busybox, init and the runtime into a root-owned squashfs", async function () {
    this.timeout(120_000);
    await writeFile(path.join(work, "runtime.js"), "console.log('runtime');\n");
    const { stdout: busybox } = await execa("bash", ["-c", "command -v busybox"]);
    const out = path.join(work, "rootfs.img");
    await execa("bash", [
      path.join(REPO, "guest-images/linux/build-rootfs.sh"),
      process.execPath,
      path.join(work, "runtime.js"),
      busybox.trim(),
      out,
    ]);
    const { stdout } = await execa("unsquashfs", ["-lln", "-n", out]);
    for (const entry of [
      /-rwxr-xr-x 0\/0 .* squashfs-root\/node$/m,
      /-rwxr-xr-x 0\/0 .* squashfs-root\/sbin\/init$/m,
      /-rwxr-xr-x 0\/0 .* squashfs-root\/bin\/remount-code$/m,
      /squashfs-root\/bin\/mount -> busybox$/m,
      /squashfs-root\/runtime\/runtime\.js$/m,
      /squashfs-root\/runtime\/guest-native\.node$/m,
      /squashfs-root\/etc\/resolv\.conf$/m,
      /^d.* squashfs-root\/code$/m,
      /^d.* squashfs-root\/proc$/m,
      /squashfs-root\/lib.*\/libc\.so\.6$/m,
      /squashfs-root\/lib64\/ld-linux-x86-64\.so\.2$/m,
    ]) {
      assert.match(stdout, entry);
    }
  });
});
