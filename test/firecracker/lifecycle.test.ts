import assert from "node:assert/strict";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import {
  FirecrackerApiClient,
  FirecrackerApiError,
} from "../../host-agent/sandbox/firecracker/api-client.ts";
import { toRateLimiter } from "../../host-agent/sandbox/firecracker/limits.ts";
import { snapshotLoadBody } from "../../host-agent/sandbox/firecracker/request-bodies.ts";
import {
  type BootPlan,
  bootVm,
  createSnapshot,
  loadSnapshot,
  pauseVm,
  reapplyRateLimiters,
  resumeVm,
  shutdownVm,
  swapCodeDisk,
} from "../../host-agent/sandbox/firecracker/vm-lifecycle.ts";
import type { VmmProcess } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { FakeFirecracker, type FakeFirecrackerOptions } from "./fake-firecracker.ts";
import { makeTempDir, removeDir, writeBakeInputs } from "./helpers.ts";
import { loadSpec, skipWithoutSpec } from "./spec-schemas.ts";

const limiter = toRateLimiter({ bandwidth: { size: 1_000_000, refillTimeMs: 100 } });
const plan: BootPlan = {
  bootArgs: "--nopci --ip=eth0,172.16.0.2,255.255.255.252 --defaultgw=172.16.0.1 /node /runtime.js",
  vcpus: 1,
  memMiB: 256,
  ifaceId: "eth0",
  tapName: "tap0",
  guestMac: "06:00:ac:10:00:02",
  trackDirtyPages: true,
  limiters: { rootDisk: limiter, codeDisk: limiter, networkRx: limiter, networkTx: limiter },
};

describe("firecracker lifecycle against the strict fake", () => {
  before(function () {
    skipWithoutSpec(this);
  });
  let dir: string;
  const fakes: FakeFirecracker[] = [];
  const clients: FirecrackerApiClient[] = [];

  async function startFake(root: string, extra: Partial<FakeFirecrackerOptions> = {}) {
    await mkdir(join(root, "run"), { recursive: true });
    const socketPath = join(root, "run", "firecracker.socket");
    const fake = await FakeFirecracker.start({ socketPath, rootDir: root, ...extra });
    fakes.push(fake);
    const api = new FirecrackerApiClient({ socketPath, timeoutMs: 1_000 });
    clients.push(api);
    return { fake, api };
  }

  /** Boots, pauses and snapshots in `<dir>/bake`, like the bake does; returns that root. */
  async function bake(): Promise<string> {
    const root = join(dir, "bake");
    await writeBakeInputs(root);
    const { fake, api } = await startFake(root);
    await bootVm(api, plan, "/base/kernel.elf");
    await pauseVm(api);
    await createSnapshot(api, "Full");
    assert.equal(fake.state, "Paused");
    return root;
  }

  /** A second jail root with the restore files staged in it. */
  async function stageRestore(bakeRoot: string, name: string): Promise<string> {
    const root = join(dir, name);
    await mkdir(join(root, "base"), { recursive: true });
    for (const f of ["root.img", "code-empty.img", "vmstate", "memory"]) {
      await copyFile(join(bakeRoot, "base", f), join(root, "base", f));
    }
    return root;
  }

  beforeEach(async () => {
    dir = await makeTempDir("lifecycle");
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const f of fakes.splice(0)) await f.exit("test over");
    await removeDir(dir);
  });

  it("boot -> pause -> Full snapshot, every body valid against the spec", async () => {
    const root = await bake();
    const fake = fakes[0]!;
    assert.deepEqual(fake.callLine, [
      "PUT /boot-source",
      "PUT /machine-config",
      "PUT /drives/root",
      "PUT /drives/code",
      "PUT /network-interfaces/eth0",
      "PUT /entropy",
      "PUT /actions",
      "PATCH /vm",
      "PUT /snapshot/create",
    ]);
    assert.ok(
      fake.calls.every((c) => c.status === 204),
      JSON.stringify(fake.calls.filter((c) => c.status !== 204)),
    );
    const spec = loadSpec();
    for (const c of fake.calls) assert.equal(spec.validateRequest(c.method, c.path, c.body), null);
    assert.ok(root);
  });

  it("restore: load paused with overrides -> limiters re-applied -> code disk swapped while paused -> resumed", async () => {
    const restoreRoot = await stageRestore(await bake(), "clone1");
    await mkdir(join(restoreRoot, "code"));
    await copyFile(join(restoreRoot, "base", "root.img"), join(restoreRoot, "code", "abc.img"));
    const { fake, api } = await startFake(restoreRoot);
    await loadSnapshot(api, "eth0", "tap0");
    assert.equal(fake.state, "Paused", "a restore is not resumed");
    await reapplyRateLimiters(api, "eth0", plan.limiters);
    await swapCodeDisk(api, "/code/abc.img", limiter, true);
    assert.equal(fake.state, "Running");
    assert.equal(fake.drives.get("code")?.path_on_host, "/code/abc.img");
    assert.deepEqual(fake.nics.get("eth0")?.rx_rate_limiter, limiter);
    assert.deepEqual(fake.callLine, [
      "PUT /snapshot/load",
      "PATCH /drives/root",
      "PATCH /network-interfaces/eth0",
      "PATCH /drives/code",
      "PATCH /vm",
    ]);
  });

  it("answers call-order violations with 400 and the spec's error shape, surfaced as FirecrackerApiError", async () => {
    const root = join(dir, "fresh");
    await writeBakeInputs(root);
    const { api } = await startFake(root);
    const isOrderFault = (pattern: RegExp) => (err: unknown) => {
      assert.ok(err instanceof FirecrackerApiError);
      assert.equal(err.status, 400);
      assert.match(err.faultMessage, pattern);
      return true;
    };
    await assert.rejects(pauseVm(api), isOrderFault(/before starting/));
    await assert.rejects(
      swapCodeDisk(api, "/base/root.img", undefined, true),
      isOrderFault(/before starting/),
    );
    await bootVm(api, plan, "/base/kernel.elf");
    await assert.rejects(createSnapshot(api), isOrderFault(/not paused/), "snapshot only while paused");
    await assert.rejects(loadSnapshot(api, "eth0", "tap0"), isOrderFault(/not allowed after configuring/));
    await assert.rejects(bootVm(api, plan, "/base/kernel.elf"), isOrderFault(/after starting/));
    await assert.rejects(
      api.patchDrive({ drive_id: "code", path_on_host: "/base/root.img" }),
      isOrderFault(/only while the VM is paused/),
    );
    await pauseVm(api);
    await resumeVm(api);
  });

  it("refuses snapshot/load once any boot resource is configured", async () => {
    const restoreRoot = await stageRestore(await bake(), "clone2");
    const { fake, api } = await startFake(restoreRoot);
    await api.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128 });
    await assert.rejects(api.loadSnapshot(snapshotLoadBody("eth0", "tap0")), (err: unknown) => {
      assert.ok(err instanceof FirecrackerApiError);
      assert.match(err.faultMessage, /not allowed after configuring/);
      assert.equal(err.method, "PUT");
      assert.equal(err.path, "/snapshot/load");
      return true;
    });
    assert.equal(fake.state, "Not started");
  });

  it("a failed load ends the process: the socket closes and later calls fail to connect", async () => {
    const restoreRoot = await stageRestore(await bake(), "clone3");
    await rm(join(restoreRoot, "base", "memory"));
    const { fake, api } = await startFake(restoreRoot);
    await assert.rejects(loadSnapshot(api, "eth0", "tap0"), /memory backing file/);
    const exit = await fake.exited;
    assert.match(exit.reason, /snapshot load failed/);
    await assert.rejects(api.describeInstance(), { name: "FirecrackerConnectionError" });
  });

  it("a drive path baked into the snapshot must exist again at load", async () => {
    const restoreRoot = await stageRestore(await bake(), "clone4");
    await rm(join(restoreRoot, "base", "code-empty.img"));
    const { fake, api } = await startFake(restoreRoot);
    await assert.rejects(loadSnapshot(api, "eth0", "tap0"), /block device code/);
    await fake.exited;
  });

  it("after a load the VM is Paused, unless resume_vm asks for Running", async () => {
    const restoreRoot = await stageRestore(await bake(), "clone5");
    const { fake, api } = await startFake(restoreRoot);
    await api.loadSnapshot({ ...snapshotLoadBody("eth0", "tap0"), resume_vm: true });
    assert.equal(fake.state, "Running");
    await assert.rejects(api.loadSnapshot(snapshotLoadBody("eth0", "tap0")), /not allowed after configuring/);
  });

  it("surfaces a non-JSON error body as the fault message, with status, method and path", async () => {
    const socketPath = join(dir, "plain.sock");
    const server = createServer((_req, res) => res.writeHead(500).end("internal: vmm thread panicked"));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const api = new FirecrackerApiClient({ socketPath });
    try {
      await assert.rejects(pauseVm(api), (err: unknown) => {
        assert.ok(err instanceof FirecrackerApiError);
        assert.deepEqual(
          [err.status, err.faultMessage, err.method, err.path],
          [500, "internal: vmm thread panicked", "PATCH", "/vm"],
        );
        return true;
      });
    } finally {
      await api.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("rejects bodies that do not match the spec (a misspelt key)", async () => {
    const root = join(dir, "fresh");
    await writeBakeInputs(root);
    const { api } = await startFake(root);
    const bad = { vcpu_count: 1, mem_size_mib: 128, memory: 1 } as unknown as Parameters<
      typeof api.putMachineConfig
    >[0];
    await assert.rejects(api.putMachineConfig(bad), /additional properties/);
  });

  it("Diff snapshots need dirty page tracking; shutdown ends the process", async () => {
    const root = await bake();
    const fake = fakes[0]!;
    const api = clients[0]!;
    await createSnapshot(api, "Diff");
    await resumeVm(api);
    const vmm: VmmProcess = {
      pid: undefined,
      apiSocketPath: api.socketPath,
      exited: fake.exited.then((e) => ({ code: 0, signal: null, description: e.reason })),
      kill: () => fake.exit("killed"),
    };
    await shutdownVm(api, vmm, 1_000);
    assert.match((await fake.exited).reason, /SendCtrlAltDel/);
    assert.ok(root);
  });
});
