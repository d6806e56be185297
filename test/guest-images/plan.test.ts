import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { computeBaseVersion } from "../../contracts/base-manifest.ts";
import { firecrackerBakeJob } from "../../guest-images/bake/firecracker-job.ts";
import { netmaskToPrefix, prefixToNetmask, VM_ARTIFACTS } from "../../guest-images/bake/firecracker-plan.ts";
import { OSV_PIN } from "../../guest-images/bake/pins.ts";
import {
  formatPlan,
  type Plan,
  PlanError,
  type PlanStep,
  runPlan,
  shellQuote,
} from "../../guest-images/bake/plan.ts";
import { uploadPlan } from "../../guest-images/bake/upload.ts";
import { hasCommand } from "./helpers.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

type Planned = { plan: Plan; version: string; kernelArgs: string; inputs: Record<string, string> };
const planned = new Map<string, Promise<Planned>>();
/** The dry-run plan for a guest (the runtime is bundled once per guest: esbuild is deterministic). */
function planFor(guest: "osv" | "linux"): Promise<Planned> {
  let result = planned.get(guest);
  if (!result) {
    result = firecrackerBakeJob({ guest, workDir: "/srv/bake/work", repoDir: REPO, dryRun: true }).then(
      (fc) => {
        const version = computeBaseVersion(fc.job.inputs);
        return {
          plan: fc.planFor(`/srv/bake/out/${version}`),
          version,
          kernelArgs: fc.job.kernelArgs,
          inputs: { ...fc.job.inputs },
        };
      },
    );
    planned.set(guest, result);
  }
  return result;
}

const names = (plan: Plan) => plan.steps.map((s) => s.step);
const stepNamed = (plan: Plan, name: string): PlanStep => {
  const step = plan.steps.find((s) => s.step === name);
  assert.ok(step, `plan has a step ${name}`);
  return step;
};
const assertBefore = (plan: Plan, a: string, b: string) =>
  assert.ok(names(plan).indexOf(a) < names(plan).indexOf(b), `${a} comes before ${b}`);

describe("bake plans (dry run)", () => {
  for (const guest of ["osv", "linux"] as const) {
    describe(`firecracker/${guest}`, () => {
      it("builds the guest, then hands boot, snapshot and a hello-world restore to the driver's jailed bake", async () => {
        const { plan } = await planFor(guest);
        for (const [a, b] of [
          ["make-dirs", "fetch-firecracker"],
          ["fetch-firecracker", "fetch-node"],
          ["code-placeholder", "bake-snapshot"],
          ["hello-world-code-disk", "bake-snapshot"],
          ["driver-config", "bake-snapshot"],
        ] as const) {
          assertBefore(plan, a, b);
        }
        assert.equal(plan.steps.at(-1)?.step, "bake-snapshot");
        assert.equal(new Set(names(plan)).size, plan.steps.length, "step names are unique");
        const bake = stepNamed(plan, "bake-snapshot").argv;
        const imageDir = plan.steps[0]?.argv.at(-1);
        const arg = (flag: string) => bake[bake.indexOf(flag) + 1];
        assert.ok(bake.some((a) => a.endsWith("host-agent/sandbox/firecracker/acceptance.ts")));
        assert.equal(arg("--bake-from"), imageDir);
        assert.equal(arg("--base"), imageDir);
        assert.equal(arg("--boot-args"), (await planFor(guest)).kernelArgs);
        assert.equal(arg("--clones"), "1");
        assert.equal(arg("--code"), stepNamed(plan, "hello-world-code-disk").argv.at(-1));
        assert.equal(arg("--config"), stepNamed(plan, "driver-config").argv.at(-1));
      });

      it("marks what needs the internet, KVM or root", async () => {
        const { plan } = await planFor(guest);
        assert.deepEqual(stepNamed(plan, "fetch-firecracker").needs, ["internet"]);
        assert.deepEqual(stepNamed(plan, "fetch-node").needs, ["internet"]);
        assert.deepEqual(stepNamed(plan, "bake-snapshot").needs, ["kvm", "root"]);
        assert.deepEqual(stepNamed(plan, "code-placeholder").needs, []);
        // Every step that downloads something says so.
        for (const s of plan.steps) {
          const downloads = s.argv.some((a) =>
            /\/fetch-[a-z]+\.sh$|\/node\/fetch-cli\.ts$|^clone$|^submodule$|build-kernel\.sh$/.test(a),
          );
          if (downloads) assert.ok(s.needs.includes("internet"), s.step);
        }
      });

      it("leaves the files under the names the firecracker driver restores from", async () => {
        const { baseFiles } = await import("../../contracts/base-layout.ts");
        assert.deepEqual(VM_ARTIFACTS, {
          kernel: baseFiles.kernel.name,
          rootfs: baseFiles.rootDisk.name,
          codePlaceholder: baseFiles.codePlaceholder.name,
          vmstate: baseFiles.vmstate.name,
          memory: baseFiles.memory.name,
        });
        const { plan } = await planFor(guest);
        assert.equal(path.basename(stepNamed(plan, "code-placeholder").argv.at(-1) ?? ""), "code-empty.img");
        if (guest === "linux") {
          const imageDir = plan.steps[0]?.argv.at(-1) ?? "";
          assert.equal(stepNamed(plan, "linux-build-kernel").argv.at(-1), path.join(imageDir, "kernel.elf"));
          assert.equal(stepNamed(plan, "linux-build-rootfs").argv.at(-1), path.join(imageDir, "root.img"));
        } else {
          const script = await readFile(path.join(REPO, "guest-images/osv/build-image.sh"), "utf8");
          assert.ok(["kernel.elf", "root.img"].every((f) => script.includes(`"$` + `{out_dir}/${f}"`)));
        }
      });

      it("runs its code disk steps for real from any working directory", async function () {
        // A Linux base's code disks are squashfs images.
        if (guest === "linux" && !(await hasCommand("mksquashfs", ["-version"]))) {
          console.log("      skipped: mksquashfs is not installed (apt-get install -y squashfs-tools)");
          this.skip();
        }
        const { plan } = await planFor(guest);
        const work = await mkdtemp(path.join(tmpdir(), "plan-steps-"));
        try {
          const retarget = (name: string, file: string): PlanStep => {
            const step = stepNamed(plan, name);
            return { ...step, argv: [...step.argv.slice(0, -1), path.join(work, file)] };
          };
          await runPlan(
            {
              title: "code disk steps",
              workDir: work,
              steps: [
                retarget("code-placeholder", "code-empty.img"),
                retarget("hello-world-bundle", "hello-world"),
                {
                  ...retarget("hello-world-code-disk", "hello.img"),
                  argv: retarget("hello-world-code-disk", "hello.img").argv.map((a) =>
                    a === stepNamed(plan, "hello-world-bundle").argv.at(-1)
                      ? path.join(work, "hello-world")
                      : a,
                  ),
                },
              ],
            },
            () => {},
          );
          const files = (await readdir(work)).sort();
          assert.deepEqual(files, ["code-empty.img", "hello-world", "hello.img"]);
          // The disk holds what a deploy ships: the bundle, not the TypeScript source.
          assert.deepEqual((await readdir(path.join(work, "hello-world"))).sort(), [
            "index.js",
            "package.json",
          ]);
          if (guest === "osv") {
            const { readRofsImage } = await import("../../guest-images/code-disk/rofs.ts");
            const hello = readRofsImage(await readFile(path.join(work, "hello.img")));
            assert.ok(hello.has("package.json"));
            assert.ok(hello.has("index.js"));
            assert.ok(!hello.has("index.ts"));
            assert.equal(readRofsImage(await readFile(path.join(work, "code-empty.img"))).size, 0);
          }
        } finally {
          await rm(work, { recursive: true, force: true });
        }
      });

      it("writes a driver config the firecracker driver accepts, pointing at the fetched binaries", async () => {
        const { plan } = await planFor(guest);
        const step = stepNamed(plan, "driver-config");
        const work = await mkdtemp(path.join(tmpdir(), "driver-config-"));
        try {
          const target = path.join(work, "driver-config.json");
          await execa(step.argv[0] ?? "bash", [...step.argv.slice(1, -1), target]);
          const { parseFirecrackerDriverConfig } = await import(
            "../../contracts/firecracker-driver-config.ts"
          );
          const config = parseFirecrackerDriverConfig(JSON.parse(await readFile(target, "utf8")));
          assert.match(
            config.firecrackerPath,
            /\/srv\/bake\/work\/firecracker\/release-v1\.16\.1-x86_64\/firecracker-v1\.16\.1-x86_64$/,
          );
          assert.match(config.jailerPath, /\/release-v1\.16\.1-x86_64\/jailer-v1\.16\.1-x86_64$/);
        } finally {
          await rm(work, { recursive: true, force: true });
        }
      });

      it("prints a plan whose commands a shell reads back as the same argv", async () => {
        const { plan } = await planFor(guest);
        const text = formatPlan(plan);
        assert.match(text, /# bake firecracker\//);
        const step = stepNamed(plan, "bake-snapshot");
        const line = step.argv.map(shellQuote).join(" ");
        assert.ok(text.includes(line));
        const { stdout } = await execa("bash", ["-c", `printf '%s\\n' ${line}`]);
        assert.deepEqual(stdout.split("\n"), step.argv);
      });
    });
  }

  it("OSv: pinned master commit with both fixes checked, ROFS root, code disk at /code, runtime on node", async () => {
    const { plan, kernelArgs } = await planFor("osv");
    assert.deepEqual(stepNamed(plan, "osv-checkout").argv.slice(-3), [
      "checkout",
      "--detach",
      OSV_PIN.commit,
    ]);
    for (const fix of ["2228724", "fcfbb00"]) {
      assert.deepEqual(stepNamed(plan, `osv-has-${fix}`).argv.slice(-4), [
        "merge-base",
        "--is-ancestor",
        fix,
        "HEAD",
      ]);
    }
    const args = kernelArgs.split(" ");
    assert.equal(args[0], "--nopci");
    assert.ok(args.includes("--rootfs=rofs"));
    // The code disk is read at load (OSv cannot remount after a restore), not mounted at boot.
    assert.ok(!args.some((a) => a.startsWith("--mount-fs")));
    assert.ok(args.includes("--ip=eth0,172.16.0.2,255.255.255.252"));
    // Node on OSv faults on its first time-zone lookup without TZ (found booting it under QEMU).
    assert.ok(args.indexOf("--env=TZ=UTC") < args.indexOf("/node"));
    assert.deepEqual(args.slice(-13), [
      "/node",
      "/runtime/runtime.js",
      "--listen",
      "tcp:0.0.0.0:8123",
      "--code",
      "/tmp/code",
      "--console",
      "channel",
      "--code-device",
      "/dev/vblk1",
      "--native",
      "/runtime/guest-native.node",
      "--require-control-secret",
    ]);
    // The build tools by name (OSv's setup.py supports neither Debian 12 nor Ubuntu 24.04), before the build.
    assert.ok(!names(plan).includes("osv-setup"));
    assert.ok(stepNamed(plan, "osv-builder-packages").argv.includes("libboost-dev"));
    assertBefore(plan, "osv-builder-packages", "osv-build-image");
    assertBefore(plan, "osv-native-helper", "osv-build-image");
    // The pinned patch is applied right after the checkout, before anything builds.
    assertBefore(plan, "osv-checkout", "osv-patch-procfs-maps-unnamed-file");
    assertBefore(plan, "osv-patch-procfs-maps-unnamed-file", "osv-build-image");
    assertBefore(plan, "osv-checkout", "osv-rofs-writer-check");
    assert.ok(stepNamed(plan, "osv-rofs-writer-check").argv.some((a) => a.endsWith("check-rofs-writer.sh")));
    assertBefore(plan, "osv-build-image", "osv-popf-check");
    assertBefore(plan, "osv-popf-check", "bake-snapshot");
    assert.deepEqual(stepNamed(plan, "osv-popf-check").needs, ["kvm"]);
  });

  it("Linux: vmlinux from Firecracker's config plus our fragment, squashfs root on /dev/vda", async () => {
    const { plan, kernelArgs } = await planFor("linux");
    const kernel = stepNamed(plan, "linux-build-kernel").argv;
    assert.ok(kernel.some((a) => a.endsWith("guest-images/linux/kernel.config")));
    assert.ok(
      kernel.some((a) =>
        /firecracker\/v1\.16\.1\/resources\/guest_configs\/microvm-kernel-ci-x86_64-6\.1\.config$/.test(a),
      ),
    );
    for (const arg of [
      "root=/dev/vda",
      "rootfstype=squashfs",
      "ro",
      "init=/sbin/init",
      "pci=off",
      "reboot=k",
      "panic=1",
    ]) {
      assert.ok(kernelArgs.split(" ").includes(arg), arg);
    }
    assert.match(kernelArgs, /ip=172\.16\.0\.2::172\.16\.0\.1:255\.255\.255\.252::eth0:off/);
    const fragment = await readFile(path.join(REPO, "guest-images/linux/kernel.config"), "utf8");
    for (const option of [
      "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
      "CONFIG_VIRTIO_BLK=y",
      "CONFIG_VIRTIO_NET=y",
      "CONFIG_VIRTIO_VSOCKETS=y",
      "CONFIG_HW_RANDOM_VIRTIO=y",
      "CONFIG_VMGENID=y",
      "CONFIG_KVM_GUEST=y",
      "CONFIG_SERIAL_8250_CONSOLE=y",
      "CONFIG_SQUASHFS=y",
    ]) {
      assert.ok(fragment.split("\n").includes(option), option);
    }
  });

  it("gives OSv and Linux different base versions, and the same one on every dry run", async () => {
    const osv = await planFor("osv");
    const linux = await planFor("linux");
    assert.notEqual(osv.version, linux.version);
    const again = await firecrackerBakeJob({
      guest: "osv",
      workDir: "/elsewhere",
      repoDir: REPO,
      dryRun: true,
    });
    assert.equal(computeBaseVersion(again.job.inputs), osv.version, "the work directory is not an input");
  });

  it("hashes the runtime bundle the image will carry, and waits for the runtime's health route", async () => {
    const { plan, inputs } = await planFor("osv");
    const work = await mkdtemp(path.join(tmpdir(), "runtime-bundle-test-"));
    try {
      const { bundleStampedRuntime } = await import("../../guest-images/runtime/build.ts");
      const built = await bundleStampedRuntime(work);
      assert.equal(inputs["runtime"], built.bundleHash);
      const other = path.join(work, "other.js");
      await writeFile(other, "console.log('another runtime');\n");
      const withOther = await firecrackerBakeJob({
        guest: "osv",
        workDir: "/srv/bake/work",
        repoDir: REPO,
        runtimeBundle: other,
      });
      assert.notEqual(computeBaseVersion(withOther.job.inputs), computeBaseVersion(inputs));
      await assert.rejects(
        firecrackerBakeJob({
          guest: "osv",
          workDir: "/w",
          repoDir: REPO,
          runtimeBundle: path.join(work, "nope.js"),
        }),
        /runtime bundle .*nope\.js not found/,
      );
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    assert.ok(stepNamed(plan, "osv-build-image").argv.includes("/srv/bake/work/runtime/runtime.js"));
  });

  it("uploads artifacts before the manifest", () => {
    const plan = uploadPlan("/out/v1", "v1", "s3://snapfaas-artifacts/base");
    assert.deepEqual(names(plan), ["upload-artifacts", "upload-manifest"]);
    assert.ok(plan.steps[0]?.argv.includes("--exclude"));
    assert.equal(plan.steps[1]?.argv.at(-1), "s3://snapfaas-artifacts/base/v1/manifest.json");
    assert.throws(() => uploadPlan("/out/v1", "v1", "https://example.invalid/x"), /s3:\/\/bucket/);
  });

  it("converts netmasks to prefix lengths", () => {
    assert.equal(netmaskToPrefix("255.255.255.252"), 30);
    assert.equal(netmaskToPrefix("255.255.0.0"), 16);
    assert.throws(() => netmaskToPrefix("255.0.255.0"), /not a contiguous netmask/);
    assert.equal(prefixToNetmask(30), "255.255.255.252");
    assert.equal(prefixToNetmask(24), "255.255.255.0");
    assert.throws(() => prefixToNetmask(33), /not a prefix length/);
  });

  it("takes the guest network from the driver's slot config, and a different network is a new base", async () => {
    const { kernelArgs, version } = await planFor("osv");
    assert.ok(kernelArgs.includes("--ip=eth0,172.16.0.2,255.255.255.252 --defaultgw=172.16.0.1"));
    const other = await firecrackerBakeJob({
      guest: "osv",
      workDir: "/srv/bake/work",
      repoDir: REPO,
      dryRun: true,
      driverConfig: { network: { guestAddress: "10.9.0.2", tapAddress: "10.9.0.1", linkPrefixLength: 24 } },
    });
    assert.ok(other.job.kernelArgs.includes("--ip=eth0,10.9.0.2,255.255.255.0 --defaultgw=10.9.0.1"));
    assert.notEqual(computeBaseVersion(other.job.inputs), version);
    assert.deepEqual(other.job.network, {
      tapName: "tap0",
      hostIp: "10.9.0.1",
      guestIp: "10.9.0.2",
      guestMac: "06:00:ac:10:00:02",
      netmask: "255.255.255.0",
    });
  });
});

describe("plan runner", () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), "plan-run-"));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("runs steps in order in their directories and stops background steps at the end", async () => {
    const pidFile = path.join(work, "bg.pid");
    const plan: Plan = {
      title: "test plan",
      workDir: work,
      steps: [
        {
          step: "background",
          argv: ["bash", "-c", `echo $$ > ${pidFile}; exec sleep 300`],
          needs: [],
          background: true,
        },
        { step: "one", argv: ["bash", "-c", "echo one >> log"], needs: [] },
        { step: "in-subdir", argv: ["bash", "-c", "mkdir -p 'a b' && echo sub > 'a b/file'"], needs: [] },
        { step: "relative-cwd", argv: ["cp", "file", "../copied"], cwd: "a b", needs: [] },
        { step: "wait-pid", argv: ["bash", "-c", `until [ -s ${pidFile} ]; do sleep 0.05; done`], needs: [] },
        { step: "two", argv: ["bash", "-c", "echo two >> log"], needs: [] },
      ],
    };
    await runPlan(plan, () => {});
    assert.equal(await readFile(path.join(work, "log"), "utf8"), "one\ntwo\n");
    assert.equal(
      await readFile(path.join(work, "copied"), "utf8"),
      "sub\n",
      "cwd is relative to the work dir",
    );
    const pid = Number(await readFile(pidFile, "utf8"));
    assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "background step was stopped");
  });

  it("stops at the first failing step and names it", async () => {
    const plan: Plan = {
      title: "test plan",
      workDir: work,
      steps: [
        { step: "fails", argv: ["false"], needs: [] },
        { step: "never", argv: ["touch", "never"], needs: [] },
      ],
    };
    await assert.rejects(
      runPlan(plan, () => {}),
      (e: Error) => e instanceof PlanError && /step fails failed/.test(e.message),
    );
    assert.equal(existsSync(path.join(work, "never")), false);
  });

  it("refuses a plan that needs KVM on a machine without /dev/kvm", async function () {
    if (existsSync("/dev/kvm")) {
      console.log("    skip: this machine has /dev/kvm");
      this.skip();
    }
    const plan: Plan = {
      title: "kvm plan",
      workDir: work,
      steps: [{ step: "boot", argv: ["true"], needs: ["kvm"] }],
    };
    await assert.rejects(
      runPlan(plan, () => {}),
      /kvm plan cannot run on this machine \(kvm: \/dev\/kvm is missing/,
    );
  });
});

describe("bake CLI", () => {
  let out: string;
  beforeEach(async () => {
    out = await mkdtemp(path.join(tmpdir(), "bake-cli-"));
  });
  afterEach(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it("prints the OSv and Linux plans with --dry-run and writes nothing", async () => {
    for (const guest of ["osv", "linux"]) {
      const { stdout } = await execa(
        "node",
        [
          "--import",
          "tsx",
          "guest-images/bake/main.ts",
          "--driver",
          "firecracker",
          "--guest",
          guest,
          "--out",
          out,
          "--dry-run",
          "--upload",
          "s3://bucket/base",
        ],
        { cwd: REPO },
      );
      assert.match(stdout, /^# base version [0-9a-f]{64}$/m);
      assert.match(stdout, /# bake-snapshot \[needs: kvm, root\]/);
      assert.match(stdout, /host-agent\/sandbox\/firecracker\/acceptance\.ts --config /);
      assert.match(stdout, /aws s3 cp --only-show-errors .*manifest\.json/);
    }
    assert.deepEqual(await readdir(out), []);
  });

  it("explains its usage on bad arguments", async () => {
    const result = await execa(
      "node",
      ["--import", "tsx", "guest-images/bake/main.ts", "--driver", "firecracker", "--out", out],
      { cwd: REPO, reject: false },
    );
    assert.equal(result.exitCode, 64);
    assert.match(result.stderr, /--guest osv\|linux is required/);
  });

  it("bakes the process base: artifacts and manifest under OUT/<version>, reused on the second run", async function () {
    this.timeout(120_000);
    const run = () =>
      execa("node", ["--import", "tsx", "guest-images/bake/main.ts", "--driver", "process", "--out", out], {
        cwd: REPO,
      });
    const first = await run();
    const dir = first.stdout.trim();
    const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8"));
    assert.equal(path.basename(dir), manifest.version);
    assert.equal(manifest.driver, "process");
    const artifactNames = manifest.artifacts.map((a: { name: string }) => a.name);
    for (const expected of ["root/node", "root/runtime/runtime.js", "root/runtime/runtime.blob"]) {
      assert.ok(artifactNames.includes(expected), expected);
    }
    const { verifyBaseImage } = await import("../../guest-images/bake/verify.ts");
    await verifyBaseImage(dir);
    const second = await run();
    assert.match(second.stderr, /already baked and intact, nothing rebuilt/);
    assert.equal(second.stdout.trim(), dir);
  });
});
