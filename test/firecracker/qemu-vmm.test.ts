/**
 * The QEMU adapter for real: the driver's own call sequences (vm-lifecycle.ts) over the API socket,
 * carried out by a real QEMU (TCG) booting the probe guest, in a netns with a tap, under the VM's
 * cgroup and uid. Bake: boot, pause, snapshot; clone: load, limiters, resume, code disk swap; and the
 * refusals (bad body, failed load). The Linux guest runs in test/vm/.
 */
import assert from "node:assert/strict";
import {
  chmod,
  copyFile,
  readdir,
  readFile,
  readlink,
  rmdir,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { baseFiles } from "../../contracts/base-layout.ts";
import {
  FirecrackerApiClient,
  FirecrackerApiError,
} from "../../host-agent/sandbox/firecracker/api-client.ts";
import {
  type FileToStage,
  prepareJail,
  removeJail,
  stageFile,
} from "../../host-agent/sandbox/firecracker/jail-staging.ts";
import { buildJailerArgs, jailPaths } from "../../host-agent/sandbox/firecracker/jailer-args.ts";
import { toRateLimiter } from "../../host-agent/sandbox/firecracker/limits.ts";
import { buildProbeGuestElf } from "../../host-agent/sandbox/firecracker/qemu-probe-guest.ts";
import { qemuSpawner } from "../../host-agent/sandbox/firecracker/qemu-spawner.ts";
import { decodeVmstateHeader, type QemuVmm } from "../../host-agent/sandbox/firecracker/qemu-vmm.ts";
import {
  type BootPlan,
  bootVm,
  createSnapshot,
  loadSnapshot,
  pauseVm,
  reapplyRateLimiters,
  resumeVm,
  swapCodeDisk,
} from "../../host-agent/sandbox/firecracker/vm-lifecycle.ts";
import { type VmmProcess, waitForApiSocket } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { waitFor } from "../helpers/wait.ts";
import { makeTempDir, removeDir } from "./helpers.ts";
import { makeTapNetns, removeNetns, requireQemu, specValidator } from "./qemu-helpers.ts";

type AdapterProcess = VmmProcess & { readonly vmm: QemuVmm };

const limiter = toRateLimiter({ bandwidth: { size: 1_000_000, refillTimeMs: 100 } });
const plan: BootPlan = {
  bootArgs: "console=ttyS0",
  vcpus: 1,
  memMiB: 32,
  ifaceId: "eth0",
  tapName: "tap0",
  guestMac: "06:00:ac:10:00:02",
  limiters: { rootDisk: limiter, codeDisk: limiter, networkRx: limiter, networkTx: limiter },
};
const MiB = 1024 * 1024;
const parentCgroup = "snapfaas-qemutest";

describe("QEMU adapter on a real QEMU (probe guest, TCG)", function () {
  this.timeout(120_000);
  let qemu: string;
  let dir: string;
  const prefix = `qvt${process.pid % 10_000}`;
  const netns: string[] = [];
  const processes: AdapterProcess[] = [];
  const clients: FirecrackerApiClient[] = [];
  const consoles = new Map<string, string[]>();

  before(async function () {
    qemu = requireQemu(this, true);
    dir = await makeTempDir("qemu-vmm");
    // QEMU is not chrooted: the VM's uid must be able to walk down to its jail (as under /srv/jailer).
    await chmod(dir, 0o755);
  });

  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const p of processes) await p.kill();
    for (const n of netns) await removeNetns(n);
    for (const c of ["memory", "cpu"])
      await rmdir(`/sys/fs/cgroup/${c}/${parentCgroup}`).catch(() => undefined);
    await removeDir(dir);
  });

  const spawn = () =>
    qemuSpawner({
      qemuPath: qemu,
      accelerator: "tcg",
      tscKhz: 2_000_000,
      cgroupRoot: "/sys/fs/cgroup",
      ...(specValidator() ? { extraValidator: specValidator()! } : {}),
      onConsoleLine: (id, line) => consoles.set(id, [...(consoles.get(id) ?? []), line]),
    });

  /** A jail with `files` staged, its own netns + tap, and the adapter listening on its API socket. */
  async function startVm(id: string, uid: number, files: FileToStage[]) {
    const paths = jailPaths(dir, "/usr/local/bin/firecracker", id);
    await prepareJail(paths, { uid, gid: uid }, files);
    const ns = `${prefix}-${netns.length}`;
    const netnsPath = await makeTapNetns(ns, uid);
    netns.push(ns);
    const jailerArgv = buildJailerArgs({
      id,
      execFile: "/usr/local/bin/firecracker",
      uid,
      gid: uid,
      chrootBase: dir,
      netnsPath,
      newPidNs: false,
      daemonize: false,
      parentCgroup,
      cgroups: [`memory.max=${128 * MiB}`, "cpu.max=50000 100000"],
      resourceLimits: [`fsize=${64 * MiB}`, "no-file=512"],
      apiSocket: "/run/firecracker.socket",
    });
    const vmm = (await spawn()({
      id,
      jailerArgv,
      jailRoot: paths.root,
      apiSocketPath: paths.apiSocket,
      pidFilePath: paths.pidFile,
    })) as AdapterProcess;
    processes.push(vmm);
    await waitForApiSocket(vmm, 2_000);
    const api = new FirecrackerApiClient({ socketPath: paths.apiSocket, timeoutMs: 60_000 });
    clients.push(api);
    return { paths, vmm, api, netnsPath };
  }

  let bakeOut: string;

  it("boots the probe guest confined like the jailer would, pauses it and snapshots it", async () => {
    const inputs = join(dir, "inputs");
    await makeInputs(inputs);
    const { paths, vmm, api, netnsPath } = await startVm(
      "bake-1",
      910_001,
      [baseFiles.kernel, baseFiles.rootDisk, baseFiles.codePlaceholder].map((f) => ({
        source: join(inputs, f.name),
        jailPath: f.jailPath,
        readOnly: true,
      })),
    );
    await bootVm(api, plan, baseFiles.kernel.jailPath);
    assert.equal(vmm.vmm.state, "Running");
    await waitFor(
      "the probe guest's marker line",
      () => (consoles.get("bake-1") ?? []).includes("K"),
      30_000,
    );
    const pid = vmm.pid!;
    // Confinement: the VM's uid, the slot's netns, its own v1 memory cgroup with the jailer's limit.
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    assert.match(status, /^Uid:\s+910001\s+910001/m);
    assert.equal((await stat(`/proc/${pid}/ns/net`)).ino, (await stat(netnsPath)).ino);
    const cgroups = await readFile(`/proc/${pid}/cgroup`, "utf8");
    assert.match(cgroups, new RegExp(`memory:/${parentCgroup}/bake-1$`, "m"));
    assert.equal(
      (await readFile(`/sys/fs/cgroup/memory/${parentCgroup}/bake-1/memory.limit_in_bytes`, "utf8")).trim(),
      String((128 + 128) * MiB),
      "the jailer's memory.max plus QEMU's own overhead",
    );
    assert.equal(
      (await readFile(`/sys/fs/cgroup/cpu/${parentCgroup}/bake-1/cpu.cfs_quota_us`, "utf8")).trim(),
      "50000",
    );
    assert.match(await readFile(`/proc/${pid}/limits`, "utf8"), /Max open files\s+512\s+512/);
    assert.equal((await readFile(paths.pidFile, "utf8")).trim(), String(pid));
    // The TCG guest got the host TSC on its command line.
    assert.match(await readFile(`/proc/${pid}/cmdline`, "utf8"), /tsc_early_khz=2000000/);

    await pauseVm(api);
    assert.equal(vmm.vmm.state, "Paused");
    await createSnapshot(api, "Full");
    const vmstate = await readFile(join(paths.root, baseFiles.vmstate.jailPath));
    const { header } = decodeVmstateHeader(vmstate);
    assert.deepEqual(
      header.drives.map((d) => d.jailPath),
      [baseFiles.rootDisk.jailPath, baseFiles.codePlaceholder.jailPath],
    );
    assert.equal(header.ramInMemoryFile, true);
    assert.ok(
      vmstate.length < MiB,
      `RAM stays out of the vmstate (x-ignore-shared): ${vmstate.length} bytes`,
    );
    assert.equal((await stat(join(paths.root, baseFiles.memory.jailPath))).size, 32 * MiB);
    // Diff snapshots need dirty page tracking QEMU's backend does not give: refused by name.
    await assert.rejects(createSnapshot(api, "Diff"), /Diff snapshots are not supported/);

    bakeOut = join(dir, "base");
    await makeInputsCopy(inputs, bakeOut, paths.root);
    await vmm.kill();
    const exit = await vmm.exited;
    assert.equal(exit.signal, "SIGKILL");
    assert.ok(await isGone(pid), "QEMU is gone once kill() resolved");
    assert.equal(await exists(`/sys/fs/cgroup/memory/${parentCgroup}/bake-1`), false, "v1 cgroup removed");
    assert.equal(await exists(paths.apiSocket), false, "API socket removed");
    await removeJail(paths, undefined);
  });

  it("restores a clone paused, re-applies limiters, resumes and swaps the code disk", async () => {
    assert.ok(bakeOut, "needs the bake above");
    const files = Object.values(baseFiles)
      .filter((f) => f.neededForRestore)
      .map((f) => ({ source: join(bakeOut, f.name), jailPath: f.jailPath, readOnly: true }));
    const { paths, vmm, api } = await startVm("clone-1", 910_002, files);
    await loadSnapshot(api, plan.ifaceId, "tap0");
    assert.equal(vmm.vmm.state, "Paused");
    const pid = vmm.pid!;
    // The clone maps the base memory file (private) and opened the staged disks.
    const fds = await openFiles(pid);
    assert.ok(fds.includes(join(paths.root, baseFiles.memory.jailPath)), fds.join("\n"));
    assert.ok(fds.includes(join(paths.root, baseFiles.codePlaceholder.jailPath)));
    await reapplyRateLimiters(api, plan.ifaceId, plan.limiters);
    assert.deepEqual(vmm.vmm.rateLimiters.get("drive:root"), limiter);
    assert.deepEqual(vmm.vmm.rateLimiters.get("net:eth0:rx"), limiter);
    await resumeVm(api);
    assert.equal(vmm.vmm.state, "Running");

    const codeSource = join(dir, "hello.img");
    await writeFile(codeSource, "a code disk\n");
    await truncate(codeSource, MiB);
    await stageFile(
      paths,
      { uid: 910_002, gid: 910_002 },
      { source: codeSource, jailPath: "/code/abc.img", readOnly: true },
    );
    // A disk larger than the baked placeholder would be read at the old size: refused by name.
    const big = join(dir, "big.img");
    await writeFile(big, "");
    await truncate(big, 2 * MiB);
    await stageFile(
      paths,
      { uid: 910_002, gid: 910_002 },
      { source: big, jailPath: "/code/big.img", readOnly: true },
    );
    await assert.rejects(swapCodeDisk(api, "/code/big.img", limiter), /larger than the one the guest sees/);
    assert.equal(vmm.vmm.state, "Running", "resumed after the refused swap");
    await swapCodeDisk(api, "/code/abc.img", limiter);
    assert.equal(vmm.vmm.state, "Running");
    const after = await openFiles(pid);
    assert.ok(after.includes(join(paths.root, "/code/abc.img")), after.join("\n"));
    assert.ok(
      !after.includes(join(paths.root, baseFiles.codePlaceholder.jailPath)),
      "placeholder closed after the swap",
    );

    // Refusals carry Firecracker's fault_message and name what is wrong.
    await assert.rejects(
      api.patchDrive({ drive_id: "code", bogus: 1 } as never),
      (err: unknown) =>
        err instanceof FirecrackerApiError && err.status === 400 && /bogus/.test(err.faultMessage ?? ""),
    );
    await assert.rejects(
      api.patchDrive({ drive_id: "nope", path_on_host: "/code/abc.img" }),
      /Invalid block device ID: nope/,
    );
    await assert.rejects(
      api.putBootSource({ kernel_image_path: "/base/kernel.elf" }),
      /not supported after starting the microVM/,
    );
  });

  it("exits after a failed load, like Firecracker", async () => {
    assert.ok(bakeOut, "needs the bake above");
    const broken = join(dir, "broken");
    await makeInputsCopy(bakeOut, broken, undefined);
    await writeFile(join(broken, "vmstate"), "garbage\n");
    const files = Object.values(baseFiles)
      .filter((f) => f.neededForRestore)
      .map((f) => ({ source: join(broken, f.name), jailPath: f.jailPath, readOnly: true }));
    const { vmm, api } = await startVm("clone-2", 910_003, files);
    await assert.rejects(loadSnapshot(api, plan.ifaceId, "tap0"), /not a QEMU-backend vmstate/);
    const exit = await vmm.exited;
    assert.match(exit.description, /the VMM exited: Load snapshot error/);
  });
});

async function makeInputs(inputs: string): Promise<void> {
  const { mkdir } = await import("node:fs/promises");
  await mkdir(inputs, { recursive: true });
  await writeFile(join(inputs, baseFiles.kernel.name), buildProbeGuestElf("halt"));
  for (const f of [baseFiles.rootDisk, baseFiles.codePlaceholder]) {
    await writeFile(join(inputs, f.name), "");
    await truncate(join(inputs, f.name), MiB);
  }
}

/** Copies the inputs and (from a bake jail) the snapshot files into a base folder. */
async function makeInputsCopy(from: string, to: string, bakeJailRoot: string | undefined): Promise<void> {
  const { mkdir } = await import("node:fs/promises");
  await mkdir(to, { recursive: true });
  for (const name of await readdir(from)) await copyFile(join(from, name), join(to, name));
  if (bakeJailRoot) {
    for (const f of [baseFiles.vmstate, baseFiles.memory])
      await copyFile(join(bakeJailRoot, f.jailPath), join(to, f.name));
  }
}

async function openFiles(pid: number): Promise<string[]> {
  const fds = await readdir(`/proc/${pid}/fd`);
  const links = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")));
  return links;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Gone or a zombie (PID 1 here does not reap). */
async function isGone(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s === "" || s.slice(s.lastIndexOf(")") + 2).startsWith("Z");
}
