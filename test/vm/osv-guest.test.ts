/**
 * The OSv guest as built by the recipe (guest-images/osv/local-image.ts: the pinned OSv source, the
 * recipe's patch, build-image.sh with the pinned Node and the runtime bundle), run by the production
 * FirecrackerDriver on the QEMU backend: the driver's own bake (boot on QEMU's `pc` machine, which
 * qemuMachineForGuest picks for OSv; health; pause; snapshot), two clones restored from it into real
 * network slots, hello-world's ROFS code disk attached AFTER each restore (the runtime reads it from
 * /dev/vblk1 at load: OSv cannot remount), the seed's call answered, and per-clone randomness.
 * TCG is 30-60x slower than KVM: generous timeouts, and the times printed are for information only.
 * Needs root, qemu-system-x86_64 and the OSv source tarball (../shared/vendor or OSV_SOURCE_TARBALL);
 * the image is built by `npm run guest:osv` (.ci/run runs it first; about 6 min cold).
 */
import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, rmdir, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { execa } from "execa";
import type { Context } from "mocha";
import { baseFiles } from "../../contracts/base-layout.ts";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { guestNetworkOf } from "../../guest-images/bake/firecracker-plan.ts";
import { buildCodeDisk } from "../../guest-images/code-disk/build.ts";
import {
  type OsvGuestImage,
  OsvImageUnavailable,
  osvGuestImage,
} from "../../guest-images/osv/local-image.ts";
import { osvKernelArgs } from "../../guest-images/osv/recipe.ts";
import { GuestClient } from "../../host-agent/guest/client.ts";
import { execaRunner } from "../../host-agent/sandbox/command-runner.ts";
import { bakeBaseSnapshot } from "../../host-agent/sandbox/firecracker/bake-snapshot.ts";
import {
  FirecrackerDriver,
  type FirecrackerInstance,
} from "../../host-agent/sandbox/firecracker/firecracker-driver.ts";
import { IdRangeAllocator } from "../../host-agent/sandbox/firecracker/id-range.ts";
import { NetworkSlotPool } from "../../host-agent/sandbox/firecracker/network-slots.ts";
import { qemuMachineForGuest } from "../../host-agent/sandbox/firecracker/qemu-argv.ts";
import { qemuSpawner } from "../../host-agent/sandbox/firecracker/qemu-spawner.ts";
import type { SpawnVmm, VmmProcess } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";
import { requireQemu, specValidator } from "../firecracker/qemu-helpers.ts";

const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
const MiB = 1024 * 1024;
/** Placeholder and code disks share one size: neither QEMU nor OSv's virtio-blk sees a drive grow. */
const CODE_DISK_BYTES = MiB;
const parentCgroup = "snapfaas-osvtest";
/**
 * The abort restored clones hit at /_faas/init before the image's node got its fprem popf rewritten
 * to sahf (guest-images/osv/patch-node-fprem.py, README "Status"): a page fault taken with interrupts
 * disabled. It is a failure now, named as such, so a V8 that brings the sequence back is caught here.
 */
const KNOWN_OSV_ABORT = "Assertion failed: ef->rflags & processor::rflags_if";

/** The cached OSv image (rebuilt when only the runtime or recipe changed: seconds), or a one-line skip. */
async function osvImageOrSkip(ctx: Context): Promise<OsvGuestImage> {
  try {
    return await osvGuestImage({ build: "image", log: (line) => console.log(`      ${line}`) });
  } catch (err) {
    if (!(err instanceof OsvImageUnavailable)) throw err;
    console.log(`      skipped: ${err.message}`);
    ctx.skip();
  }
}

describe("FirecrackerDriver on QEMU/TCG with the OSv guest: bake, two clones, code disk after restore, hello-world", function () {
  this.timeout(600_000);
  let image: OsvGuestImage;
  let dir: string | undefined;
  let slots: NetworkSlotPool | undefined;
  let driver: FirecrackerDriver | undefined;
  let spawnVmm: SpawnVmm;
  const vmms: VmmProcess[] = [];
  const consoles = new Map<string, string[]>();
  const consoleTail = (id: string) => (consoles.get(id) ?? []).slice(-30).join("\n");

  before(async function () {
    this.timeout(900_000);
    const qemuPath = requireQemu(this, true);
    image = await osvImageOrSkip(this);
    dir = await makeTempDir("osv-driver");
    // QEMU is not chrooted: the VM uids walk down to their jails (as under /srv/jailer).
    await chmod(dir, 0o755);
    const inner = qemuSpawner({
      qemuPath,
      accelerator: "tcg",
      // The bake's cold boot; the clones' QEMU takes the machine the vmstate records.
      machine: qemuMachineForGuest("osv"),
      cgroupRoot: "/sys/fs/cgroup",
      ...(specValidator() ? { extraValidator: specValidator()! } : {}),
      onConsoleLine: (id, line) => consoles.set(id, [...(consoles.get(id) ?? []).slice(-200), line]),
    });
    spawnVmm = async (request) => {
      const vmm = await inner(request);
      vmms.push(vmm);
      return vmm;
    };
  });

  after(async () => {
    await driver?.close().catch(() => undefined);
    for (const vmm of vmms) await vmm.kill().catch(() => undefined);
    await slots?.reclaim().catch(() => undefined);
    await slots?.close().catch(() => undefined);
    for (const c of ["memory", "cpu", ""])
      await rmdir(join("/sys/fs/cgroup", c, parentCgroup)).catch(() => undefined);
    await removeDir(dir);
  });

  it("bakes OSv with the driver's bake, restores two clones, attaches hello-world after restore and answers in each, with per-clone randomness", async () => {
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
        netnsPrefix: "osvm",
        vethPrefix: "osvv",
        hostSubnetBase: "10.204.0.0",
        poolSize: 3,
        maxSlots: 4,
      },
    });
    const inputs = join(root, "inputs");
    await mkdir(inputs, { recursive: true });
    await copyFile(image.kernel, join(inputs, baseFiles.kernel.name));
    await copyFile(image.root, join(inputs, baseFiles.rootDisk.name));
    const empty = join(root, "empty");
    await mkdir(empty);
    await buildCodeDisk(empty, join(inputs, baseFiles.codePlaceholder.name), {
      format: "rofs",
      sizeBytes: CODE_DISK_BYTES,
    });
    const hello = await helloWorldDisk(root);

    const bakeSlots = new NetworkSlotPool(config.network, execaRunner);
    slots = bakeSlots;
    await bakeSlots.reclaim();
    const base = join(root, "base");
    let baked: Awaited<ReturnType<typeof bakeBaseSnapshot>>;
    try {
      baked = await bakeBaseSnapshot(
        {
          id: "obake-1",
          inputsDir: inputs,
          outDir: base,
          bootArgs: osvKernelArgs(guestNetworkOf(config), config.guestPort),
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
      throw new Error(`bake failed: ${(err as Error).message}\nguest console:\n${consoleTail("obake-1")}`);
    } finally {
      await bakeSlots.close();
    }
    console.log(
      `      bake (TCG, pc): boot to health ${(baked.bootToReadyMs / 1000).toFixed(1)} s, snapshot ${baked.snapshotMs.toFixed(0)} ms`,
    );
    // It is OSv that booted (its banner; a tarball build has no git version to print).
    assert.match((consoles.get("obake-1") ?? []).join("\n"), /^OSv /m);

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
    const baseImage = { version: "osv-tcg-test", driver: "firecracker" as const, dir: base };
    const started = [];
    // One after the other: two TCG guests restoring at once on a 2-core host only slow each other.
    for (const id of ["oclone-1", "oclone-2"]) {
      try {
        started.push(await driver.startTimed({ id, base: baseImage, limits }));
      } catch (err) {
        const abort = (consoles.get(id) ?? []).find((line) => line.startsWith(KNOWN_OSV_ABORT));
        if (abort)
          throw new Error(
            `${id}: restored, then OSv aborted at init with interrupts disabled (${abort}): is the image's node rewritten by patch-node-fprem.py?`,
          );
        throw new Error(`start ${id} failed: ${(err as Error).message}\nguest console:\n${consoleTail(id)}`);
      }
    }
    for (const { instance, timings } of started) {
      console.log(
        `      ${instance.id}: restore ${timings.restoreMs.toFixed(0)} ms, guest ready + init ${timings.guestReadyMs.toFixed(0)} ms`,
      );
    }
    const instances = started.map((s) => s.instance);
    const results = [];
    for (const instance of instances) results.push(await attachLoadCall(instance, hello));
    assert.deepEqual(
      results.map((r) => r.hello),
      ["Hello world!", "Hello world!"],
    );
    const [a, b] = results.map((r) => r.facts) as [Facts, Facts];
    console.log(`      clone facts: ${JSON.stringify(a)} / ${JSON.stringify(b)}`);
    assert.equal(a.node, image.nodeVersion);
    // OSv's fixed uname (libc/misc/uname.c): the function runs on OSv, not on a Linux kernel.
    assert.equal(a.release, "3.7.0");
    // Fresh user-space randomness per clone (both restored from one memory image).
    assert.notEqual(a.random, b.random, "Math.random() differs between clones");
    assert.notEqual(a.uuid, b.uuid, "crypto.randomUUID() differs between clones");
    assert.notEqual(a.bytes, b.bytes, "crypto.randomBytes() differs between clones");

    const pids = vmms.map((v) => v.pid).filter((p): p is number => p !== undefined);
    for (const i of instances) await i.destroy("test done");
    await driver.close();
    driver = undefined;
    for (const pid of pids) assert.ok(await isGone(pid), `QEMU ${pid} is gone`);
    const { stdout } = await execa("ip", ["netns", "list"]);
    assert.doesNotMatch(stdout, /osvm-/);
  });

  interface Facts {
    node: string;
    release: string;
    random: number;
    uuid: string;
    bytes: string;
  }

  async function attachLoadCall(
    instance: FirecrackerInstance,
    disk: { file: string; sha256: string },
  ): Promise<{ hello: string; facts: Facts }> {
    try {
      await instance.attachCode({ functionName: "hello-world", codeHash: disk.sha256, hostPath: disk.file });
      const client = new GuestClient(instance.endpoint, { loadTimeoutMs: 120_000 });
      const loaded = await client.load(
        { functionName: "hello-world", entry: "index.js" },
        AbortSignal.timeout(120_000),
      );
      assert.deepEqual([...loaded.classes].sort(), ["CloneFacts", "HelloWorldService"]);
      const call = async (method: string) => {
        const answer = await client.forward({
          method: "POST",
          path: "/hello-world",
          headers: {
            "content-type": "application/json",
            "x-faas-request-id": `rid-${instance.id}-${method}`,
          },
          body: Buffer.from(JSON.stringify({ jsonrpc: "2.0", method, params: [], id: 1 })),
          signal: AbortSignal.timeout(60_000),
          maxResponseBytes: MiB,
        });
        assert.equal(answer.status, 200, answer.body.toString());
        return (JSON.parse(answer.body.toString()) as { result: unknown }).result;
      };
      return {
        hello: (await call("HelloWorldService.helloWorld")) as string,
        facts: (await call("CloneFacts.facts")) as Facts,
      };
    } catch (err) {
      throw new Error(
        `${instance.id}: ${(err as Error).message}\nguest console:\n${consoleTail(instance.id)}`,
      );
    }
  }
});

/**
 * examples/hello-world plus a class reporting the clone's randomness, bundled the way the CLI bundles
 * a function, on a ROFS code disk of the placeholder's size.
 */
async function helloWorldDisk(root: string): Promise<{ file: string; sha256: string }> {
  const src = join(root, "hello-src");
  const code = join(root, "hello");
  await mkdir(src, { recursive: true });
  await writeFile(
    join(src, "index.ts"),
    `export { HelloWorldService } from ${JSON.stringify(join(REPO, "examples/hello-world/index.ts"))};
import { randomBytes, randomUUID } from "node:crypto";
import { release } from "node:os";
export class CloneFacts {
  facts() {
    return { node: process.version, release: release(), random: Math.random(), uuid: randomUUID(), bytes: randomBytes(16).toString("hex") };
  }
}
`,
  );
  await build({
    entryPoints: [join(src, "index.ts")],
    bundle: true,
    platform: "node",
    format: "cjs",
    outfile: join(code, "index.js"),
    logLevel: "silent",
  });
  const disk = await buildCodeDisk(code, join(root, "hello.rofs"), { format: "rofs" });
  assert.ok(disk.bytes <= CODE_DISK_BYTES, `hello-world's disk (${disk.bytes} bytes) fits the placeholder`);
  await truncate(disk.file, CODE_DISK_BYTES);
  return { file: disk.file, sha256: disk.sha256 };
}

/** Gone or a zombie (PID 1 here does not reap). */
async function isGone(pid: number): Promise<boolean> {
  const { readFile } = await import("node:fs/promises");
  const s = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return s === "" || s.slice(s.lastIndexOf(")") + 2).startsWith("Z");
}
