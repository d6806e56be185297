import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DoctorFs, doctorConfigSchema, runDoctor } from "../../host-agent/doctor/checks.ts";
import { doctorMain } from "../../host-agent/doctor/main.ts";
import type { CommandRunner } from "../../host-agent/sandbox/command-runner.ts";
import { firecrackerPreflight } from "../../host-agent/sandbox/firecracker/preflight.ts";

const FC_SHA = "a".repeat(64);
const JAILER_SHA = "b".repeat(64);

/** A host description the checks read through the injected fs and exec. */
interface FakeHost {
  files: Record<string, string>;
  charDevices: string[];
  rwDenied: string[];
  executables: Record<string, { version: string; sha256: string }>;
  tools: string[];
  /** Network interfaces (`ip link show dev <name>` answers for these). */
  links: string[];
  freeGiB: number;
}

function healthyHost(): FakeHost {
  return {
    files: {
      "/proc/mounts": "sysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n",
      "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
      "/proc/sys/kernel/osrelease": "6.1.102-111.182.amzn2023.x86_64\n",
      "/proc/sys/net/ipv4/ip_forward": "1\n",
    },
    charDevices: ["/dev/kvm", "/dev/net/tun"],
    rwDenied: [],
    executables: {
      "/usr/local/bin/firecracker": { version: "Firecracker v1.16.1", sha256: FC_SHA },
      "/usr/local/bin/jailer": { version: "Jailer v1.16.1", sha256: JAILER_SHA },
    },
    tools: ["nft", "ip"],
    links: ["lo", "ens5"],
    freeGiB: 100,
  };
}

function depsFor(host: FakeHost, configOverrides: Record<string, unknown> = {}) {
  const enoent = (path: string) => Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
  const fs: DoctorFs = {
    async stat(path) {
      const isChar = host.charDevices.includes(path);
      const isExe = path in host.executables;
      if (!isChar && !isExe) throw enoent(path);
      return { isCharacterDevice: () => isChar, isFile: () => isExe, mode: 0o755 };
    },
    async openReadWrite(path) {
      if (host.rwDenied.includes(path)) throw Object.assign(new Error("EACCES"), { code: "EACCES" });
    },
    async readFile(path) {
      const text = host.files[path];
      if (text === undefined) throw enoent(path);
      return text;
    },
    async freeBytes() {
      return host.freeGiB * 1024 ** 3;
    },
    async sha256(path) {
      return host.executables[path]?.sha256 ?? "";
    },
  };
  const exec: CommandRunner = async (file, args) => {
    const exe = host.executables[file];
    if (file === "ip" && args[1] === "link" && host.tools.includes("ip")) {
      const dev = args.at(-1)!;
      if (host.links.includes(dev)) return { stdout: `2: ${dev}: <UP> mtu 9001\n`, stderr: "" };
      throw new Error(`Device "${dev}" does not exist.`);
    }
    if (exe) return { stdout: `${exe.version}\n`, stderr: "" };
    if (host.tools.includes(file)) return { stdout: `${file} 1.0\n`, stderr: "" };
    throw new Error(`spawn ${file} ENOENT`);
  };
  const config = doctorConfigSchema.parse({
    firecrackerSha256: FC_SHA,
    jailerSha256: JAILER_SHA,
    ...configOverrides,
  });
  return { fs, exec, config };
}

function failed(report: Awaited<ReturnType<typeof runDoctor>>): string[] {
  return report.checks.filter((c) => !c.ok).map((c) => c.name);
}

describe("faas doctor", () => {
  it("passes a healthy metal host, one line per check plus a verdict", async () => {
    const report = await runDoctor(depsFor(healthyHost()));
    assert.deepEqual(failed(report), []);
    assert.equal(report.ok, true);
    assert.equal(report.lines.length, report.checks.length + 1);
    assert.equal(report.lines.at(-1), "doctor: all checks passed");
  });

  it("fails without a usable /dev/kvm", async () => {
    const missing = healthyHost();
    missing.charDevices = ["/dev/net/tun"];
    assert.deepEqual(failed(await runDoctor(depsFor(missing))), ["kvm"]);
    const denied = healthyHost();
    denied.rwDenied = ["/dev/kvm"];
    const report = await runDoctor(depsFor(denied));
    assert.deepEqual(failed(report), ["kvm"]);
    assert.match(report.lines[0]!, /FAIL\s+kvm.*read-write \(EACCES\)/);
  });

  it("fails on a missing binary, a different version, a checksum mismatch or no pinned checksum", async () => {
    const none = healthyHost();
    delete none.executables["/usr/local/bin/firecracker"];
    assert.deepEqual(failed(await runDoctor(depsFor(none))), ["firecracker"]);
    const old = healthyHost();
    old.executables["/usr/local/bin/jailer"] = { version: "Jailer v1.15.1", sha256: JAILER_SHA };
    assert.deepEqual(failed(await runDoctor(depsFor(old))), ["jailer"]);
    const tampered = healthyHost();
    tampered.executables["/usr/local/bin/firecracker"] = {
      version: "Firecracker v1.16.1",
      sha256: "c".repeat(64),
    };
    const report = await runDoctor(depsFor(tampered));
    assert.match(report.checks.find((c) => c.name === "firecracker")!.detail, /does not match/);
    assert.deepEqual(failed(await runDoctor(depsFor(healthyHost(), { firecrackerSha256: undefined }))), [
      "firecracker",
    ]);
  });

  it("fails a hybrid cgroup layout whose v2 hierarchy lacks the controllers, naming the missing ones", async () => {
    const host = healthyHost();
    host.files["/proc/mounts"] =
      "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    host.files["/sys/fs/cgroup/unified/cgroup.controllers"] = "hugetlb\n";
    const report = await runDoctor(depsFor(host));
    assert.deepEqual(failed(report), ["cgroup v2"]);
    assert.match(
      report.checks.find((c) => c.name === "cgroup v2")!.detail,
      /lacks controllers: cpu, memory, io, pids/,
    );
  });

  it("keeps the hybrid cgroup layout and a missing /dev/kvm fatal for Firecracker, not for QEMU on TCG", async () => {
    const host = healthyHost();
    host.files["/proc/mounts"] =
      "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    host.files["/sys/fs/cgroup/unified/cgroup.controllers"] = "hugetlb\n";
    host.charDevices = ["/dev/net/tun"];
    host.executables["/usr/bin/qemu-system-x86_64"] = { version: "QEMU emulator version 7.2.22", sha256: "" };
    const fatalOf = (report: Awaited<ReturnType<typeof runDoctor>>) =>
      report.checks.filter((c) => !c.ok && c.fatal).map((c) => c.name);
    assert.deepEqual(fatalOf(await runDoctor(depsFor(host))), ["kvm", "cgroup v2"]);
    const tcg = await runDoctor(depsFor(host, { vmm: "qemu", accelerator: "tcg" }));
    assert.deepEqual(failed(tcg), ["kvm", "cgroup v2"], "both still reported");
    assert.deepEqual(fatalOf(tcg), [], "neither refuses a QEMU/TCG start");
    assert.deepEqual(
      (await firecrackerPreflight(depsFor(host, { vmm: "qemu", accelerator: "tcg" }))).filter((p) => p.fatal),
      [],
    );
  });

  it("fails an old kernel, no tun device, ip_forward off, missing nft, and too little disk", async () => {
    const host = healthyHost();
    host.charDevices = ["/dev/kvm"];
    host.files["/proc/sys/kernel/osrelease"] = "4.19.0\n";
    host.files["/proc/sys/net/ipv4/ip_forward"] = "0\n";
    host.tools = ["ip"];
    host.freeGiB = 3;
    const report = await runDoctor(depsFor(host));
    assert.deepEqual(failed(report), ["kernel", "tun", "ip_forward", "nftables", "snapshot disk"]);
    assert.equal(report.ok, false);
    assert.equal(report.lines.at(-1), "doctor: 5 of 12 checks failed");
  });

  it("preflight turns failures into problems with a fix; ip_forward is not fatal", async () => {
    const host = healthyHost();
    host.files["/proc/sys/net/ipv4/ip_forward"] = "0\n";
    const problems = await firecrackerPreflight(depsFor(host));
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.fatal, false);
    assert.match(problems[0]!.fix, /ip_forward=1/);
  });

  it("reports function egress: not offered, offered by an uplink that exists, or naming one that does not", async () => {
    const off = await runDoctor(depsFor(healthyHost()));
    const egressOf = (r: typeof off) => r.checks.find((c) => c.name === "egress")!;
    assert.equal(egressOf(off).ok, true);
    assert.match(egressOf(off).detail, /^not offered: a function deployed with --egress is refused/);
    const offered = { egress: { enabled: true, uplink: "ens5", dnsResolver: "169.254.169.253" } };
    const on = await runDoctor(depsFor(healthyHost(), offered));
    assert.equal(egressOf(on).ok, true);
    assert.equal(
      egressOf(on).detail,
      "functions deployed with --egress leave by ens5 (NAT), DNS to 169.254.169.253",
    );
    const elsewhere = healthyHost();
    elsewhere.links = ["lo", "enp1s0"];
    const missing = egressOf(await runDoctor(depsFor(elsewhere, offered)));
    assert.deepEqual([missing.ok, missing.fatal], [false, false]);
    assert.match(missing.detail, /the uplink ens5 is no interface here/);
    assert.match(missing.fix!, /network\.egress\.uplink/);
  });

  it("reads a host's driver config (firecracker.json): the binaries and the hashes pinned under doctor", async () => {
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-doctor-cfg-"));
    try {
      const fc = join(dir, "firecracker");
      const jailer = join(dir, "jailer");
      writeFileSync(fc, "#!/bin/sh\necho 'Firecracker v1.16.1'\n", { mode: 0o755 });
      writeFileSync(jailer, "#!/bin/sh\necho 'Jailer v1.16.1'\n", { mode: 0o755 });
      const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");
      const configFile = join(dir, "firecracker.json");
      writeFileSync(
        configFile,
        JSON.stringify({
          firecrackerPath: fc,
          jailerPath: jailer,
          doctor: { firecrackerSha256: sha(fc), jailerSha256: "0".repeat(64) },
        }),
      );
      const { report } = await doctorMain([configFile]);
      const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]));
      assert.equal(byName.firecracker?.ok, true, byName.firecracker?.detail);
      assert.equal(byName.jailer?.ok, false);
      assert.match(
        byName.jailer!.detail,
        new RegExp(`sha256 ${sha(jailer)} does not match the pinned 0{64}`),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("runs on this machine and exits non-zero exactly when a check fails", async () => {
    const { report, exitCode } = await doctorMain([]);
    assert.equal(report.checks.length, 12);
    assert.equal(exitCode, report.ok ? 0 : 1);
  });
});

describe("createFirecrackerDriver", () => {
  it("wires the production driver; its preflight is the doctor's verdict on this host", async () => {
    const { createFirecrackerDriver } = await import("../../host-agent/sandbox/firecracker/create-driver.ts");
    const driver = createFirecrackerDriver({ firecrackerPath: "/nonexistent/firecracker" });
    assert.equal(driver.kind, "firecracker");
    const problems = await driver.preflight();
    const firecracker = problems.find((p) => p.what.startsWith("firecracker:"));
    assert.ok(firecracker, "a missing binary is a problem");
    assert.match(firecracker.what, /\/nonexistent\/firecracker not found/);
    assert.equal(firecracker.fatal, true);
  });

  it("checks the binaries against the sha256 the driver config pins (what the boot script writes)", async () => {
    const { createFirecrackerDriver } = await import("../../host-agent/sandbox/firecracker/create-driver.ts");
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-pins-"));
    try {
      const write = (name: string, text: string) => {
        const file = join(dir, name);
        writeFileSync(file, text, { mode: 0o755 });
        return { file, sha256: createHash("sha256").update(text).digest("hex") };
      };
      const fc = write("firecracker", "#!/bin/sh\necho 'Firecracker v1.16.1'\n");
      const jailer = write("jailer", "#!/bin/sh\necho 'Jailer v1.16.1'\n");
      const binaryProblems = async (doctor: Record<string, string>) =>
        (
          await createFirecrackerDriver({
            firecrackerPath: fc.file,
            jailerPath: jailer.file,
            doctor,
          }).preflight()
        )
          .filter((p) => /^(firecracker|jailer):/.test(p.what))
          .map((p) => p.what);
      assert.deepEqual(
        await binaryProblems({ firecrackerSha256: fc.sha256, jailerSha256: jailer.sha256 }),
        [],
      );
      assert.deepEqual(await binaryProblems({ firecrackerSha256: fc.sha256, jailerSha256: fc.sha256 }), [
        `jailer: sha256 ${jailer.sha256} does not match the pinned ${fc.sha256}`,
      ]);
      assert.match((await binaryProblems({}))[0]!, /no sha256 is pinned/);
      assert.throws(
        () => createFirecrackerDriver({ doctor: { firecrackerSha256: "x" } }),
        /doctor\.firecrackerSha256/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
