import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import { execa } from "execa";
import { parse as parseYaml } from "yaml";
import { OSV_GUEST_PATHS, OSV_PATCHES } from "../../guest-images/osv/recipe.ts";
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
      execa(
        "bash",
        [
          path.join(REPO, "guest-images/osv/check-popf.sh"),
          fc,
          path.join(work, "image"),
          OSV_GUEST_PATHS.popfCheck,
          "1",
        ],
        { reject: false },
      );

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
      const spec =
        process.env["FIRECRACKER_API_SPEC"] ??
        path.resolve(REPO, "../shared/specs/firecracker-api-v1.16.1.yaml");
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
      assert.match(config["boot-source"].boot_args, /--env=TZ=UTC \/node \/popf\/stress\.cjs --seconds 1$/);
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

describe("OSv image (build-image.sh) with a stand-in OSv checkout", () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "osv-image-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("writes a usr.manifest with the recipe's guest paths: the runtime, the popf check check-popf.sh boots, a /code mount point", async function () {
    if (!(await hasCommand("qemu-img"))) {
      console.log("      skip: needs qemu-img (apt-get install -y qemu-utils)");
      this.skip();
    }
    // The OSv checkout: a git repo whose scripts/build leaves what OSv's would, and records the module.
    const osv = path.join(work, "osv");
    await mkdir(path.join(osv, "scripts"), { recursive: true });
    await writeFile(
      path.join(osv, "scripts/build"),
      '#!/bin/sh\nmkdir -p build/last && echo elf > build/last/loader-stripped.elf && truncate -s 1M build/last/usr.img && echo "$@" > build-args\n',
    );
    await chmod(path.join(osv, "scripts/build"), 0o755);
    await execa("git", ["init", "-q", osv]);
    await execa("git", [
      "-C",
      osv,
      "-c",
      "user.email=t@t",
      "-c",
      "user.name=t",
      "commit",
      "-q",
      "--allow-empty",
      "-m",
      "osv",
    ]);
    // lddtree (pax-utils) is only checked for here; node-from-host, which uses it, is OSv's.
    const bin = path.join(work, "bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "lddtree"), "#!/bin/sh\n");
    await chmod(path.join(bin, "lddtree"), 0o755);
    await writeFile(path.join(work, "runtime.js"), "// runtime\n");
    const out = path.join(work, "out");
    const result = await execa(
      "bash",
      [
        path.join(REPO, "guest-images/osv/build-image.sh"),
        osv,
        path.dirname(process.execPath),
        path.join(work, "runtime.js"),
        path.join(REPO, "guest-images/osv/popf-stress.cjs"),
        out,
        OSV_GUEST_PATHS.runtime,
        OSV_GUEST_PATHS.popfCheck,
        OSV_GUEST_PATHS.code,
      ],
      { env: { PATH: `${bin}:${process.env.PATH}` }, reject: false },
    );
    assert.equal(result.exitCode, 0, result.stderr);
    const module = path.join(osv, "apps/snapfaas-runtime");
    const manifest = (await readFile(path.join(module, "usr.manifest"), "utf8")).trim().split("\n");
    assert.deepEqual(manifest, [
      `${OSV_GUEST_PATHS.runtime}: \${MODULE_DIR}/runtime.js`,
      `${OSV_GUEST_PATHS.popfCheck}: \${MODULE_DIR}/popf-stress.cjs`,
      `${OSV_GUEST_PATHS.code}: \${MODULE_DIR}/code`,
    ]);
    // Every file the manifest names exists in the module; /code is an (empty) directory.
    for (const line of manifest) {
      const source = line.slice(line.lastIndexOf("/") + 1);
      assert.ok(existsSync(path.join(module, source)), `${source} is in the module`);
    }
    assert.deepEqual(await readdir(path.join(module, "code")), []);
    assert.match(
      await readFile(path.join(osv, "build-args"), "utf8"),
      /image=node-from-host,snapfaas-runtime/,
    );
    assert.ok(existsSync(path.join(out, "root.img")) && existsSync(path.join(out, "kernel.elf")));
  });
});

describe("OSv patches (patches/, pinned in recipe.ts)", () => {
  it("are pinned by their exact bytes", async () => {
    const { createHash } = await import("node:crypto");
    for (const patch of OSV_PATCHES) {
      const bytes = await readFile(path.join(REPO, "guest-images/osv", patch.file));
      assert.equal(createHash("sha256").update(bytes).digest("hex"), patch.sha256, patch.file);
    }
  });

  it("apply to the pinned OSv source with apply-patch.sh, which refuses a file its pin does not match", async function () {
    this.timeout(60_000);
    const tarball = path.resolve(REPO, "../shared/vendor/osv-0e34e4dc-src.tar.gz");
    if (!existsSync(tarball)) {
      console.log(`      skip: ${tarball} not found (the pinned OSv source)`);
      this.skip();
    }
    const work = await mkdtemp(path.join(tmpdir(), "osv-patch-"));
    try {
      const osv = path.join(work, "osv");
      await execa("tar", ["-xzf", tarball, "-C", work, "osv/core/mmu.cc"]);
      await execa("git", ["init", "-q", osv]);
      const script = path.join(REPO, "guest-images/osv/apply-patch.sh");
      for (const patch of OSV_PATCHES) {
        const file = path.join(REPO, "guest-images/osv", patch.file);
        const wrongPin = await execa("bash", [script, osv, file, "0".repeat(64)], { reject: false });
        assert.equal(wrongPin.exitCode, 1);
        assert.match(wrongPin.stderr, /the recipe pins 0{64}: update OSV_PATCHES/);
        const applied = await execa("bash", [script, osv, file, patch.sha256], { reject: false });
        assert.equal(applied.exitCode, 0, applied.stderr);
      }
      const mmu = await readFile(path.join(osv, "core/mmu.cc"), "utf8");
      assert.match(mmu, /dentry \? dentry->d_path : "\[unnamed\]"/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
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
    // The rootfs compiles the runtime's native helper against this node's headers.
    const headers = path.join(path.dirname(process.execPath), "..", "include", "node", "node_api.h");
    if (!(await hasCommand("g++")) || !existsSync(headers)) {
      console.log(`    skip: needs g++ and ${headers} (the native helper is built into the rootfs)`);
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
