/**
 * The production FirecrackerDriver on the QEMU backend with the real Linux guest: real network slots
 * (netns, veth, nftables DNAT, tap), the driver's own bake (bakeBaseSnapshot: boot, health, pause,
 * snapshot), two clones restored from it in parallel, a squashfs code disk attached to each, then
 * load and hello-world through the guest channel. Only Firecracker and its jailer are replaced (by the
 * QEMU adapter, confined the same way). TCG is 30-60x slower than KVM: generous timeouts, and the
 * times printed are for information only.
 * Needs root, qemu-system-x86_64 and the cached Linux image (`npm run guest:linux`).
 */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, readFile, rmdir, truncate } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { execa } from "execa";
import { baseFiles } from "../../contracts/base-layout.ts";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { guestNetworkOf } from "../../guest-images/bake/firecracker-plan.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import type { LinuxGuestImage } from "../../guest-images/linux/local-image.ts";
import { linuxKernelArgs } from "../../guest-images/linux/recipe.ts";
import { GuestClient } from "../../host-agent/guest/client.ts";
import { execaRunner } from "../../host-agent/sandbox/command-runner.ts";
import { bakeBaseSnapshot } from "../../host-agent/sandbox/firecracker/bake-snapshot.ts";
import {
  FirecrackerDriver,
  type FirecrackerInstance,
} from "../../host-agent/sandbox/firecracker/firecracker-driver.ts";
import { hostTscKhz } from "../../host-agent/sandbox/firecracker/host-tsc.ts";
import { IdRangeAllocator } from "../../host-agent/sandbox/firecracker/id-range.ts";
import { NetworkSlotPool } from "../../host-agent/sandbox/firecracker/network-slots.ts";
import { qemuSpawner } from "../../host-agent/sandbox/firecracker/qemu-spawner.ts";
import type { SpawnVmm, VmmProcess } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";
import { linuxImageOrSkip, requireQemu, specValidator } from "../firecracker/qemu-helpers.ts";

const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
const MiB = 1024 * 1024;
/** Placeholder and code disks share one size: QEMU cannot grow a drive under a restored guest. */
const CODE_DISK_BYTES = MiB;
const parentCgroup = "snapfaas-vmtest";

describe("FirecrackerDriver on QEMU/TCG with the Linux guest: bake, two clones, code disk, hello-world", function () {
  this.timeout(600_000);
  let image: LinuxGuestImage;
  let dir: string | undefined;
  let slots: NetworkSlotPool | undefined;
  let driver: FirecrackerDriver | undefined;
  const vmms: VmmProcess[] = [];
  const consoles = new Map<string, string[]>();
  const consoleTail = (id: string) => (consoles.get(id) ?? []).slice(-30).join("\n");

  before(async function () {
    const qemuPath = requireQemu(this, true);
    image = await linuxImageOrSkip(this);
    dir = await makeTempDir("qemu-driver");
    // QEMU is not chrooted: the VM uids walk down to their jails (as under /srv/jailer).
    await chmod(dir, 0o755);
    spawnVmm = recording(
      qemuSpawner({
        qemuPath,
        accelerator: "tcg",
        ...(hostTscKhz() !== undefined ? { tscKhz: hostTscKhz()! } : {}),
        cgroupRoot: "/sys/fs/cgroup",
        ...(specValidator() ? { extraValidator: specValidator()! } : {}),
        onConsoleLine: (id, line) => consoles.set(id, [...(consoles.get(id) ?? []).slice(-200), line]),
      }),
    );
  });

  let spawnVmm: SpawnVmm;
  function recording(inner: SpawnVmm): SpawnVmm {
    return async (request) => {
      const vmm = await inner(request);
      vmms.push(vmm);
      return vmm;
    };
  }

  after(async () => {
    await driver?.close().catch(() => undefined);
    for (const vmm of vmms) await vmm.kill().catch(() => undefined);
    await slots?.reclaim().catch(() => undefined);
    await slots?.close().catch(() => undefined);
    for (const c of ["memory", "cpu"])
      await rmdir(`/sys/fs/cgroup/${c}/${parentCgroup}`).catch(() => undefined);
    await removeDir(dir);
  });

  it("bakes with the driver's own bake, restores two clones and answers hello-world in each", async () => {
    const root = dir!;
    const config = parseFirecrackerDriverConfig({
      vmm: "qemu",
      qemu: { accelerator: "tcg" },
      chrootBase: join(root, "jails"),
      cgroupRoot: "/sys/fs/cgroup",
      parentCgroup,
      guestReadyTimeoutMs: 120_000,
      apiSocketTimeoutMs: 10_000,
      network: {
        netnsPrefix: "qvm",
        vethPrefix: "qvmv",
        hostSubnetBase: "10.203.0.0",
        poolSize: 3,
        maxSlots: 4,
      },
    });
    const inputs = join(root, "inputs");
    await mkdir(inputs, { recursive: true });
    await copyFile(image.kernel, join(inputs, baseFiles.kernel.name));
    await copyFile(image.rootfs, join(inputs, baseFiles.rootDisk.name));
    const empty = join(root, "empty");
    await mkdir(empty);
    await buildCodeDisk(empty, join(inputs, baseFiles.codePlaceholder.name), { format: "squashfs" });
    await truncate(join(inputs, baseFiles.codePlaceholder.name), CODE_DISK_BYTES);
    const hello = await helloWorldDisk(root);

    // The bake's own slot pool, closed before the driver builds its pool (as a bake host and an
    // agent host would): reclaim() of slots torn down a moment earlier can race the kernel.
    const bakeSlots = new NetworkSlotPool(config.network, execaRunner);
    slots = bakeSlots;
    await bakeSlots.reclaim();
    const base = join(root, "base");
    let baked: Awaited<ReturnType<typeof bakeBaseSnapshot>>;
    try {
      baked = await bakeBaseSnapshot(
        {
          id: "qbake-1",
          inputsDir: inputs,
          outDir: base,
          bootArgs: linuxKernelArgs(guestNetworkOf(config)),
          guestReadyTimeoutMs: 240_000,
        },
        {
          config,
          spawnVmm,
          slots: bakeSlots,
          ids: new IdRangeAllocator(config.idRange.first, config.idRange.count),
        },
      );
    } catch (err) {
      throw new Error(`bake failed: ${(err as Error).message}\nguest console:\n${consoleTail("qbake-1")}`);
    } finally {
      await bakeSlots.close();
    }
    console.log(
      `      bake (TCG): boot to health ${(baked.bootToReadyMs / 1000).toFixed(1)} s, snapshot ${baked.snapshotMs.toFixed(0)} ms`,
    );
    // The vmstate holds only device state; the guest RAM is the memory file.
    const vmstate = await readFile(join(base, baseFiles.vmstate.name));
    assert.ok(vmstate.length < 4 * MiB, `vmstate is ${vmstate.length} bytes`);

    slots = new NetworkSlotPool(config.network, execaRunner);
    driver = new FirecrackerDriver(config, { spawnVmm, slots, preflight: async () => [] });
    await driver.init();
    const limits = {
      memoryMiB: 256,
      cpuPercent: 100,
      pids: 64,
      tmpMiB: 16,
      openFiles: 1024,
      fileSizeMiB: 512,
    };
    const baseImage = { version: "tcg-test", driver: "firecracker" as const, dir: base };
    const started = await Promise.all(
      ["qclone-1", "qclone-2"].map(async (id) => {
        try {
          return await driver!.startTimed({ id, base: baseImage, limits });
        } catch (err) {
          throw new Error(
            `start ${id} failed: ${(err as Error).message}\nguest console:\n${consoleTail(id)}`,
          );
        }
      }),
    );
    for (const { instance, timings } of started) {
      console.log(
        `      ${instance.id}: restore ${timings.restoreMs.toFixed(0)} ms, guest ready + init ${timings.guestReadyMs.toFixed(0)} ms`,
      );
    }
    const instances = started.map((s) => s.instance);
    assert.notEqual(instances[0]!.slot.cloneAddress, instances[1]!.slot.cloneAddress);
    // Each clone is its own QEMU, running as its own VM uid.
    const clonePids = vmms.slice(-2).map((v) => v.pid!);
    const uids = await Promise.all(
      clonePids.map(async (pid) =>
        Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, "utf8"))?.[1]),
      ),
    );
    assert.deepEqual(uids.sort(), instances.map((i) => i.uid).sort());

    const answers = await Promise.all(instances.map((i) => attachLoadCall(i, hello)));
    assert.deepEqual(answers, ["Hello world!", "Hello world!"]);

    const pids = vmms.map((v) => v.pid).filter((p): p is number => p !== undefined);
    for (const i of instances) await i.destroy("test done");
    await driver.close();
    driver = undefined;
    for (const pid of pids) assert.ok(await isGone(pid), `QEMU ${pid} is gone`);
    const { stdout } = await execa("ip", ["netns", "list"]);
    assert.doesNotMatch(stdout, /qvm-/);
  });

  async function attachLoadCall(instance: FirecrackerInstance, disk: { file: string; sha256: string }) {
    try {
      await instance.attachCode({ functionName: "hello-world", codeHash: disk.sha256, hostPath: disk.file });
      const client = new GuestClient(instance.endpoint, { loadTimeoutMs: 120_000 });
      const loaded = await client.load(
        { functionName: "hello-world", entry: "index.js" },
        AbortSignal.timeout(120_000),
      );
      assert.deepEqual([...loaded.classes], ["HelloWorldService"]);
      const answer = await client.forward({
        method: "POST",
        path: "/hello-world",
        headers: { "content-type": "application/json", "x-faas-request-id": `rid-${instance.id}` },
        body: Buffer.from(
          JSON.stringify({ jsonrpc: "2.0", method: "HelloWorldService.helloWorld", params: [], id: 1 }),
        ),
        signal: AbortSignal.timeout(60_000),
        maxResponseBytes: MiB,
      });
      assert.equal(answer.status, 200, answer.body.toString());
      return (JSON.parse(answer.body.toString()) as { result: string }).result;
    } catch (err) {
      throw new Error(
        `${instance.id}: ${(err as Error).message}\nguest console:\n${consoleTail(instance.id)}`,
      );
    }
  }
});

/** examples/hello-world bundled the way the CLI bundles it, on a squashfs code disk padded to the placeholder's size. */
async function helloWorldDisk(root: string): Promise<{ file: string; sha256: string }> {
  const code = join(root, "hello");
  await build({
    entryPoints: [join(REPO, "examples/hello-world/index.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    outfile: join(code, "index.js"),
    logLevel: "silent",
  });
  const disk = await buildCodeDisk(code, join(root, "hello.img"), { format: "squashfs" });
  assert.ok(disk.bytes <= CODE_DISK_BYTES, `hello-world's disk (${disk.bytes} bytes) fits the placeholder`);
  await truncate(disk.file, CODE_DISK_BYTES);
  return { file: disk.file, sha256: disk.sha256 };
}

/** Gone or a zombie (PID 1 here does not reap). */
async function isGone(pid: number): Promise<boolean> {
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s === "" || s.slice(s.lastIndexOf(")") + 2).startsWith("Z");
}
