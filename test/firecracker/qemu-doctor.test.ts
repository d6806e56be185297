/** The doctor's VMM line and the QEMU wiring of createFirecrackerDriver. */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { checkVmm } from "../../host-agent/doctor/vmm-check.ts";
import type { CommandRunner } from "../../host-agent/sandbox/command-runner.ts";
import { decideAccelerator, probeAccelerator } from "../../host-agent/sandbox/firecracker/qemu-accel.ts";
import { makeTempDir, removeDir } from "./helpers.ts";
import { qemuPath, requireQemu } from "./qemu-helpers.ts";

const qemuVersion: CommandRunner = async () => ({
  stdout: "QEMU emulator version 7.2.22 (Debian)\n",
  stderr: "",
});
const missing: CommandRunner = async () => {
  throw new Error("spawn /nope ENOENT");
};
const kvmRuns = async () => ({ ok: true, detail: "the probe guest ran under kvm" });
const kvmHangs = async () => ({
  ok: false,
  detail: "the probe guest did not finish within 10000 ms under kvm",
});

describe("doctor: vmm line", () => {
  it("names firecracker, or qemu with its version and accelerator", async () => {
    assert.equal(
      (await checkVmm(missing, { vmm: "firecracker", qemuPath: "/x", accelerator: "auto" })).detail,
      "firecracker under the jailer (KVM)",
    );
    const tcg = await checkVmm(qemuVersion, { vmm: "qemu", qemuPath: "/q", accelerator: "tcg" }, () => {
      throw new Error("a configured tcg must not probe KVM");
    });
    assert.deepEqual([tcg.ok, tcg.detail], [true, "qemu 7.2.22, accelerator tcg (configured)"]);
    const auto = await checkVmm(qemuVersion, { vmm: "qemu", qemuPath: "/q", accelerator: "auto" }, kvmHangs);
    assert.match(auto.detail, /accelerator tcg \(auto: the probe guest did not finish .* using TCG\)/);
    const kvm = await checkVmm(qemuVersion, { vmm: "qemu", qemuPath: "/q", accelerator: "auto" }, kvmRuns);
    assert.match(kvm.detail, /accelerator kvm \(auto: the probe guest ran under kvm\)/);
  });

  it("fails when QEMU is missing or a configured KVM does not run guests, with what to do", async () => {
    const none = await checkVmm(missing, { vmm: "qemu", qemuPath: "/nope", accelerator: "tcg" });
    assert.equal(none.ok, false);
    assert.match(none.fix ?? "", /qemu-system-x86/);
    const badKvm = await checkVmm(qemuVersion, { vmm: "qemu", qemuPath: "/q", accelerator: "kvm" }, kvmHangs);
    assert.equal(badKvm.ok, false);
    assert.match(badKvm.fix ?? "", /"tcg" or "auto"/);
  });

  it("decides the accelerator: configured values win, auto follows the probe", async () => {
    assert.deepEqual(await decideAccelerator("kvm", kvmHangs), { accelerator: "kvm", why: "configured" });
    assert.equal((await decideAccelerator("auto", kvmRuns)).accelerator, "kvm");
    assert.equal((await decideAccelerator("auto", kvmHangs)).accelerator, "tcg");
  });
});

describe("accelerator probe", () => {
  it("boots the probe guest for real (under TCG here: KVM hangs guests on this host) and sees it exit", async function () {
    this.timeout(60_000);
    const qemu = requireQemu(this, false);
    const probe = await probeAccelerator(qemu, "tcg", 30_000);
    assert.deepEqual(probe, { ok: true, detail: "the probe guest ran under tcg" });
    const absent = await probeAccelerator("/nonexistent/qemu", "tcg", 1_000);
    assert.equal(absent.ok, false);
    assert.match(absent.detail, /cannot run \/nonexistent\/qemu/);
  });
});

describe("createFirecrackerDriver with vmm qemu", () => {
  it("skips the firecracker and jailer checks and reports QEMU on TCG (this host: never KVM)", async function () {
    requireQemu(this, false);
    const { createFirecrackerDriver } = await import("../../host-agent/sandbox/firecracker/create-driver.ts");
    const driver = createFirecrackerDriver({ vmm: "qemu", qemu: { path: qemuPath, accelerator: "tcg" } });
    const problems = await driver.preflight();
    assert.equal(
      problems.find((p) => /^(firecracker|jailer):/.test(p.what)),
      undefined,
    );
    assert.equal(
      problems.find((p) => p.what.startsWith("vmm:")),
      undefined,
      "QEMU is installed and TCG needs no probe",
    );
  });

  it("faas doctor on a QEMU driver config prints the vmm line: QEMU's own version, accelerator tcg", async function () {
    requireQemu(this, false);
    const { doctorMain } = await import("../../host-agent/doctor/main.ts");
    const dir = await makeTempDir("qemu-doctor");
    try {
      const file = join(dir, "firecracker.json");
      await writeFile(
        file,
        JSON.stringify({ vmm: "qemu", qemu: { path: qemuPath, accelerator: "tcg" }, doctor: {} }),
      );
      const { report } = await doctorMain([file]);
      const version = /version (\S+)/.exec((await execa(qemuPath!, ["--version"])).stdout)?.[1];
      assert.ok(version, "qemu --version names its version");
      const vmm = report.lines.filter((l) => /^\S+\s+vmm\s/.test(l));
      assert.deepEqual(vmm, [`ok    vmm           qemu ${version}, accelerator tcg (configured)`]);
      assert.equal(report.lines.filter((l) => /^\S+\s+(firecracker|jailer)\s/.test(l)).length, 0);
    } finally {
      await removeDir(dir);
    }
  });

  it("refuses an unknown vmm or accelerator by key", async () => {
    const { parseFirecrackerDriverConfig } = await import("../../contracts/firecracker-driver-config.ts");
    assert.throws(() => parseFirecrackerDriverConfig({ vmm: "cloud-hypervisor" }), /vmm:/);
    assert.throws(() => parseFirecrackerDriverConfig({ qemu: { accelerator: "hvf" } }), /qemu\.accelerator/);
  });
});
