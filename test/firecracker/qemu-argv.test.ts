/** Pure parts of the QEMU backend: argv, cgroup mapping, the jailer argv it reads, the vmstate header. */
import assert from "node:assert/strict";
import { BOUND_TO_AGENT_SCRIPT } from "../../host-agent/sandbox/bound-to-agent.ts";
import { tscKhzFromCpuinfo } from "../../host-agent/sandbox/firecracker/host-tsc.ts";
import { buildJailerArgs } from "../../host-agent/sandbox/firecracker/jailer-args.ts";
import {
  buildQemuArgv,
  type QemuMachinePlan,
  qemuMachineForGuest,
  withQemuMemoryOverhead,
  withTripleFaultReboot,
  withTscEarlyKhz,
} from "../../host-agent/sandbox/firecracker/qemu-argv.ts";
import {
  confinedCommand,
  confinedEnv,
  parseJailerArgv,
  planCgroups,
  prlimitArgs,
} from "../../host-agent/sandbox/firecracker/qemu-spawner.ts";
import {
  decodeVmstateHeader,
  encodeVmstateHeader,
  shellQuote,
  type VmstateHeader,
} from "../../host-agent/sandbox/firecracker/qemu-vmm.ts";

const bootPlan: QemuMachinePlan = {
  name: "vm-1",
  accelerator: "tcg",
  tscKhz: 2_100_000,
  vcpus: 2,
  memMiB: 256,
  memoryFile: { hostPath: "/jail/run/mem", shared: true },
  boot: { kind: "kernel", kernelHostPath: "/jail/base/kernel.elf", cmdline: "console=ttyS0 reboot=k" },
  drives: [
    { id: "root", hostPath: "/jail/base/root.img", readOnly: true },
    { id: "code", hostPath: "/jail/base/code,empty.img", readOnly: true },
  ],
  nics: [{ id: "eth0", tapName: "tap0", mac: "06:00:ac:10:00:02" }],
  entropy: true,
  qmpSocketPath: "/jail/run/qmp.sock",
  runAs: { uid: 900_001, gid: 900_001 },
};

function valuesOf(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));
}

describe("QEMU argv builder", () => {
  it("boots an OSv guest on pc: virtio-pci devices in the same order, --nopci dropped, no Linux parameters", () => {
    assert.equal(qemuMachineForGuest("osv"), "pc");
    assert.equal(qemuMachineForGuest("linux"), "microvm");
    const argv = buildQemuArgv({
      ...bootPlan,
      machine: "pc",
      boot: {
        kind: "kernel",
        kernelHostPath: "/jail/base/kernel.elf",
        cmdline: "--nopci --env=TZ=UTC --rootfs=rofs /node /runtime/runtime.js --listen tcp:0.0.0.0:8123",
      },
    });
    assert.deepEqual(valuesOf(argv, "-M"), ["pc,memory-backend=mem"]);
    assert.deepEqual(valuesOf(argv, "-append"), [
      "--env=TZ=UTC --rootfs=rofs /node /runtime/runtime.js --listen tcp:0.0.0.0:8123",
    ]);
    const devices = valuesOf(argv, "-device");
    assert.deepEqual(
      devices.map((d) => d.split(",")[0]),
      ["virtio-blk-pci", "virtio-blk-pci", "virtio-net-pci", "virtio-rng-pci"],
    );
    assert.ok(devices[0]!.includes("id=dev-root") && devices[1]!.includes("id=dev-code"));
    assert.throws(
      () => buildQemuArgv({ ...bootPlan, machine: "q35" as "pc" }),
      /machine must be microvm or pc/,
    );
  });

  it("builds a microvm with the memory file, kernel, drives in order, tap NIC, rng, QMP and uid", () => {
    const argv = buildQemuArgv(bootPlan);
    assert.deepEqual(valuesOf(argv, "-name"), ["vm-1"]);
    assert.deepEqual(valuesOf(argv, "-M"), ["microvm,memory-backend=mem"]);
    assert.deepEqual(valuesOf(argv, "-accel"), ["tcg,tb-size=32"]);
    assert.deepEqual(valuesOf(argv, "-smp"), ["2"]);
    assert.ok(argv.includes("-S"), "starts with stopped vCPUs");
    assert.ok(argv.includes("-no-reboot"));
    assert.deepEqual(
      valuesOf(argv, "-object")[0],
      "memory-backend-file,id=mem,size=256M,mem-path=/jail/run/mem,share=on",
    );
    assert.deepEqual(valuesOf(argv, "-append"), [
      "console=ttyS0 reboot=k tsc_early_khz=2100000 tsc=reliable reboot=t",
    ]);
    assert.deepEqual(valuesOf(argv, "-device"), [
      "virtio-blk-device,drive=drive-root,id=dev-root",
      "virtio-blk-device,drive=drive-code,id=dev-code",
      "virtio-net-device,netdev=net-eth0,id=dev-net-eth0,mac=06:00:ac:10:00:02",
      "virtio-rng-device,rng=rng0,id=dev-rng",
    ]);
    // A comma in a path is doubled, so it cannot inject an option.
    assert.ok(
      valuesOf(argv, "-blockdev").includes(
        "driver=file,filename=/jail/base/code,,empty.img,node-name=drive-code-file0,read-only=on",
      ),
    );
    assert.deepEqual(valuesOf(argv, "-netdev"), ["tap,id=net-eth0,ifname=tap0,script=no,downscript=no"]);
    assert.deepEqual(valuesOf(argv, "-runas"), ["900001:900001"]);
    assert.deepEqual(valuesOf(argv, "-qmp"), ["unix:/jail/run/qmp.sock,server=on,wait=off"]);
  });

  it("restores with -incoming defer, a private memory mapping and no kernel; KVM gets -cpu host and no tsc argument", () => {
    const argv = buildQemuArgv({
      ...bootPlan,
      accelerator: "kvm",
      memoryFile: { hostPath: "/jail/base/memory", shared: false },
      boot: { kind: "incoming" },
    });
    assert.deepEqual(valuesOf(argv, "-incoming"), ["defer"]);
    assert.deepEqual(valuesOf(argv, "-cpu"), ["host"]);
    assert.equal(argv.includes("-kernel"), false);
    assert.match(valuesOf(argv, "-object")[0]!, /mem-path=\/jail\/base\/memory,share=off$/);
    const kvmBoot = buildQemuArgv({ ...bootPlan, accelerator: "kvm" });
    assert.deepEqual(valuesOf(kvmBoot, "-append"), ["console=ttyS0 reboot=k reboot=t"]);
  });

  it("refuses root, bad ids and bad tap names by name", () => {
    assert.throws(() => buildQemuArgv({ ...bootPlan, runAs: { uid: 0, gid: 0 } }), /never runs as root/);
    assert.throws(
      () => buildQemuArgv({ ...bootPlan, drives: [{ id: "a,b", hostPath: "/x", readOnly: true }] }),
      /device id/,
    );
    assert.throws(
      () => buildQemuArgv({ ...bootPlan, nics: [{ id: "eth0", tapName: "tap0,script=/x" }] }),
      /tap name/,
    );
    assert.throws(() => buildQemuArgv({ ...bootPlan, name: "../x" }), /VM name/);
  });

  it("adds QEMU's own memory to memory.max and leaves other settings alone", () => {
    assert.deepEqual(withQemuMemoryOverhead(["cpu.max=1 2", "memory.max=1048576"], 2), [
      "cpu.max=1 2",
      "memory.max=3145728",
    ]);
  });

  it("adds tsc_early_khz and tsc=reliable once, and reads the host TSC from /proc/cpuinfo", () => {
    assert.equal(withTscEarlyKhz("a tsc_early_khz=5 tsc=reliable", 7), "a tsc_early_khz=5 tsc=reliable");
    assert.equal(withTscEarlyKhz("a tsc_early_khz=5", 7), "a tsc_early_khz=5 tsc=reliable");
    assert.equal(withTscEarlyKhz("a", 7), "a tsc_early_khz=7 tsc=reliable");
    assert.equal(withTripleFaultReboot("a reboot=k"), "a reboot=k reboot=t");
    assert.equal(withTripleFaultReboot("a reboot=t"), "a reboot=t");
    assert.equal(withTscEarlyKhz("a", undefined), "a");
    assert.equal(tscKhzFromCpuinfo("processor\t: 0\ncpu MHz\t\t: 2445.406\n"), 2_445_406);
    assert.equal(tscKhzFromCpuinfo("processor\t: 0\n"), undefined);
  });
});

describe("QEMU spawner: what it takes from the jailer argv", () => {
  const jailerArgv = buildJailerArgs({
    id: "vm-7",
    execFile: "/usr/local/bin/firecracker",
    uid: 900_007,
    gid: 900_008,
    chrootBase: "/srv/jailer",
    netnsPath: "/var/run/netns/fcslot-3",
    newPidNs: true,
    daemonize: true,
    parentCgroup: "snapfaas/vms",
    cgroups: ["cpu.max=50000 100000", "memory.max=335544320", "io.max=259:0 rbps=1000 wiops=20"],
    resourceLimits: ["fsize=1048576", "no-file=2048"],
    apiSocket: "/run/firecracker.socket",
  });

  it("reads id, uid/gid, netns, cgroups and rlimits from the argv jailer-args.ts builds", () => {
    assert.deepEqual(parseJailerArgv(jailerArgv), {
      id: "vm-7",
      uid: 900_007,
      gid: 900_008,
      netnsPath: "/var/run/netns/fcslot-3",
      parentCgroup: "snapfaas/vms",
      cgroups: ["cpu.max=50000 100000", "memory.max=335544320", "io.max=259:0 rbps=1000 wiops=20"],
      resourceLimits: ["fsize=1048576", "no-file=2048"],
    });
    assert.throws(() => parseJailerArgv(["--id", "x", "--uid", "0", "--gid", "0"]), /never runs as root/);
  });

  it("maps cgroup v2 settings onto the v1 controllers of a hybrid host", () => {
    const plan = planCgroups(
      "v1",
      "/sys/fs/cgroup",
      "snapfaas/vms",
      "vm-7",
      parseJailerArgv(jailerArgv).cgroups,
    );
    assert.deepEqual(plan.writes, [
      { file: "/sys/fs/cgroup/cpu/snapfaas/vms/vm-7/cpu.cfs_period_us", value: "100000" },
      { file: "/sys/fs/cgroup/cpu/snapfaas/vms/vm-7/cpu.cfs_quota_us", value: "50000" },
      { file: "/sys/fs/cgroup/memory/snapfaas/vms/vm-7/memory.limit_in_bytes", value: "335544320" },
      { file: "/sys/fs/cgroup/blkio/snapfaas/vms/vm-7/blkio.throttle.read_bps_device", value: "259:0 1000" },
      { file: "/sys/fs/cgroup/blkio/snapfaas/vms/vm-7/blkio.throttle.write_iops_device", value: "259:0 20" },
    ]);
    assert.deepEqual(plan.procs, [
      "/sys/fs/cgroup/cpu/snapfaas/vms/vm-7/cgroup.procs",
      "/sys/fs/cgroup/memory/snapfaas/vms/vm-7/cgroup.procs",
      "/sys/fs/cgroup/blkio/snapfaas/vms/vm-7/cgroup.procs",
    ]);
    assert.deepEqual(plan.dirs.slice(0, 3), [
      "/sys/fs/cgroup/cpu/snapfaas",
      "/sys/fs/cgroup/cpu/snapfaas/vms",
      "/sys/fs/cgroup/cpu/snapfaas/vms/vm-7",
    ]);
    assert.throws(
      () => planCgroups("v1", "/c", "p", "i", ["cpuset.cpus=0"]),
      /no cgroup v1 equivalent for cpuset.cpus/,
    );
  });

  it("keeps cgroup v2 settings as the jailer writes them", () => {
    const plan = planCgroups("v2", "/sys/fs/cgroup/", "snapfaas", "vm-7", ["memory.max=1"]);
    assert.deepEqual(plan.writes, [{ file: "/sys/fs/cgroup/snapfaas/vm-7/memory.max", value: "1" }]);
    assert.deepEqual(plan.procs, ["/sys/fs/cgroup/snapfaas/vm-7/cgroup.procs"]);
    assert.deepEqual(plan.removeDirs, [], "the driver removes the v2 cgroup itself");
  });

  it("runs QEMU through nsenter (slot netns), setpriv (death signal), a parent check, a PID namespace, prlimit and a cgroup-joining pid 1", () => {
    const cmd = confinedCommand(parseJailerArgv(jailerArgv), "/usr/bin/qemu-system-x86_64", [
      "-name",
      "vm-7",
    ]);
    assert.deepEqual(cmd.slice(0, 8), [
      "nsenter",
      "--net=/var/run/netns/fcslot-3",
      "--",
      "setpriv",
      "--pdeathsig=KILL",
      "--",
      "/bin/sh",
      "-c",
    ]);
    assert.equal(cmd[8], BOUND_TO_AGENT_SCRIPT);
    const unshare = cmd.indexOf("unshare");
    assert.deepEqual(cmd.slice(unshare, unshare + 9), [
      "unshare",
      "--pid",
      "--fork",
      "--kill-child=SIGKILL",
      "--",
      "prlimit",
      "--fsize=1048576",
      "--nofile=2048",
      "--",
    ]);
    // pid 1 of the namespace runs QEMU as a child (no exec): its death takes QEMU with it.
    const joinScript = cmd[unshare + 11]!;
    assert.match(joinScript, /cgroup|SNAPFAAS_CGROUP_PROCS/);
    assert.match(joinScript, /exec "\$@"\); exit \$\?$/, "QEMU is a child (a subshell's exec)");
    assert.deepEqual(cmd.slice(-3), ["/usr/bin/qemu-system-x86_64", "-name", "vm-7"]);
    assert.deepEqual(confinedEnv(["/cg/a/cgroup.procs", "/cg/b/cgroup.procs"], "/jail/qemu.pid"), {
      SNAPFAAS_CGROUP_PROCS: "/cg/a/cgroup.procs /cg/b/cgroup.procs",
      SNAPFAAS_PID_FILE: "/jail/qemu.pid",
      FAAS_AGENT_PID: String(process.pid),
    });
    assert.throws(() => prlimitArgs(["cpu=1"]), /fsize=N or no-file=N/);
  });
});

describe("QEMU vmstate header", () => {
  const header: VmstateHeader = {
    format: "snapfaas-qemu-vmstate",
    version: 1,
    accelerator: "tcg",
    vcpus: 1,
    memMiB: 256,
    ramInMemoryFile: true,
    drives: [{ id: "root", jailPath: "/base/root.img", readOnly: true }],
    nics: [{ id: "eth0", tapName: "tap0" }],
    entropy: true,
  };

  it("round-trips and says where QEMU's stream starts", () => {
    const encoded = encodeVmstateHeader(header);
    const file = Buffer.concat([encoded, Buffer.from("QEVM\0\0\0\x03")]);
    const decoded = decodeVmstateHeader(file);
    assert.deepEqual(decoded.header, header);
    assert.equal(file.subarray(decoded.streamOffset, decoded.streamOffset + 4).toString(), "QEVM");
  });

  it("refuses a Firecracker or foreign vmstate by name", () => {
    assert.throws(() => decodeVmstateHeader(Buffer.from("QEVM\0\0\0\x03")), /no header line/);
    assert.throws(
      () => decodeVmstateHeader(Buffer.from('{"fakeFirecrackerSnapshot":1}\n')),
      /not a QEMU-backend vmstate/,
    );
  });

  it("quotes paths for the exec: migration command and refuses quotes", () => {
    assert.equal(shellQuote("/srv/jailer/a b/vmstate"), "'/srv/jailer/a b/vmstate'");
    assert.throws(() => shellQuote("/x'; rm -rf /"), /not usable/);
  });
});
