import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { type InstanceSpec, SandboxStartError } from "../../host-agent/sandbox/driver.ts";
import { FirecrackerApiClient } from "../../host-agent/sandbox/firecracker/api-client.ts";
import { bakeBaseSnapshot } from "../../host-agent/sandbox/firecracker/bake-snapshot.ts";
import {
  FirecrackerDriver,
  type SlotProvider,
} from "../../host-agent/sandbox/firecracker/firecracker-driver.ts";
import { IdRangeAllocator } from "../../host-agent/sandbox/firecracker/id-range.ts";
import { cgroupDir } from "../../host-agent/sandbox/firecracker/jailer-args.ts";
import type { NetworkSlot, SlotOwner } from "../../host-agent/sandbox/firecracker/network-slots.ts";
import { bootVm, createSnapshot, pauseVm } from "../../host-agent/sandbox/firecracker/vm-lifecycle.ts";
import type { SpawnVmm, VmmSpawnRequest } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { FakeFirecracker } from "./fake-firecracker.ts";
import { FakeGuest, type GuestInitCall } from "./fake-guest.ts";
import { isRoot, makeTempDir, removeDir, writeBakeInputs } from "./helpers.ts";
import { loadSpec, skipWithoutSpec } from "./spec-schemas.ts";

/** In-memory slots on loopback addresses: the real pool is tested in network-slots.test.ts. */
class FakeSlots implements SlotProvider {
  readonly leased = new Map<number, { slot: NetworkSlot; owner: SlotOwner }>();
  reclaimed = 0;
  filled = 0;
  closed = false;
  async reclaim() {
    this.reclaimed++;
    return [];
  }
  async fill() {
    this.filled++;
  }
  async acquire(owner: SlotOwner): Promise<NetworkSlot> {
    let index = 0;
    while (this.leased.has(index)) index++;
    const slot: NetworkSlot = {
      index,
      netnsName: `fake-${index}`,
      netnsPath: `/var/run/netns/fake-${index}`,
      hostVeth: `fakev-${index}`,
      hostAddress: "127.0.0.1",
      cloneAddress: `127.0.3.${10 + index}`,
      tapName: "tap0",
      guestAddress: "172.16.0.2",
    };
    this.leased.set(index, { slot, owner });
    return slot;
  }
  readonly egressOpened: number[] = [];
  egressBlockers: string[] = [];
  async egressProblems() {
    return this.egressBlockers;
  }
  async openEgress(slot: NetworkSlot) {
    this.egressOpened.push(slot.index);
  }
  async release(slot: NetworkSlot) {
    this.leased.delete(slot.index);
  }
  async close() {
    this.closed = true;
  }
}

describe("FirecrackerDriver against the strict fake", function () {
  this.timeout(20_000);
  let dir: string;
  let baseDir: string;
  let slots: FakeSlots;
  let driver: FirecrackerDriver | undefined;
  const fakes: FakeFirecracker[] = [];
  const guests = new Set<FakeGuest>();
  const spawned: VmmSpawnRequest[] = [];
  const inits: GuestInitCall[] = [];
  let guestPort: number;
  let behaviour: {
    failLoadWith?: string;
    guestSilent?: boolean;
    refuseInit?: boolean;
    /** Held resumes: the guest comes up only once this settles. */
    resumeGate?: Promise<void>;
  };

  /** Stands in for the jailer: makes the cgroup the jailer would make, runs the fake API in the jail. */
  const spawnFake: SpawnVmm = async (req) => {
    spawned.push(req);
    const config = driver!.config;
    await mkdir(cgroupDir(config.cgroupRoot, config.parentCgroup, req.id), { recursive: true });
    await mkdir(join(req.jailRoot, "run"), { recursive: true });
    const netns = req.jailerArgv[req.jailerArgv.indexOf("--netns") + 1];
    const slot = [...slots.leased.values()].find((l) => l.slot.netnsPath === netns)!.slot;
    let guest: FakeGuest | undefined;
    const fake = await FakeFirecracker.start({
      socketPath: req.apiSocketPath,
      rootDir: req.jailRoot,
      ...(behaviour.failLoadWith ? { failLoadWith: behaviour.failLoadWith } : {}),
      onGuestRunning: async (running) => {
        if (running && !guest && !behaviour.guestSilent) {
          await behaviour.resumeGate;
          guest = await FakeGuest.start(slot.cloneAddress, guestPort, inits, behaviour.refuseInit);
          guests.add(guest);
        } else if (!running && guest) {
          await guest.stop();
          guests.delete(guest);
          guest = undefined;
        }
      },
    });
    fakes.push(fake);
    return {
      pid: undefined,
      apiSocketPath: req.apiSocketPath,
      exited: fake.exited.then((e) => ({ code: null, signal: null, description: e.reason })),
      kill: () => fake.exit("killed by the driver"),
    };
  };

  /** A roomy guest deadline, so a loaded machine does not fail ordinary starts; tests of the deadline pass their own. */
  function makeDriver(guestReadyTimeoutMs = 5000, network: Record<string, unknown> = {}): FirecrackerDriver {
    const config = parseFirecrackerDriverConfig({
      firecrackerPath: "/usr/local/bin/firecracker",
      chrootBase: join(dir, "jails"),
      cgroupRoot: join(dir, "cgroup"),
      idRange: { first: 900_100, count: 4 },
      guestPort,
      guestReadyTimeoutMs,
      network,
      limits: {
        codeDisk: { bandwidth: { size: 5_000_000, refillTimeMs: 100 } },
        networkRx: { bandwidth: { size: 1_000_000, refillTimeMs: 100 } },
        networkTx: { ops: { size: 1_000, refillTimeMs: 100 } },
      },
    });
    driver = new FirecrackerDriver(config, {
      spawnVmm: spawnFake,
      slots,
      preflight: async () => [],
      now: () => 1_764_000_000_000,
      randomBytes: (n) => Buffer.alloc(n, 7),
    });
    return driver;
  }

  function spec(id: string): InstanceSpec {
    return {
      id,
      base: { version: "base-v1", driver: "firecracker", dir: baseDir },
      limits: { memoryMiB: 256, cpuPercent: 50, pids: 64, tmpMiB: 16, openFiles: 256, fileSizeMiB: 4 },
    };
  }

  before(async function () {
    skipWithoutSpec(this);
    if (!isRoot()) {
      console.log("    skipped: the driver stages jails with chown, which needs root");
      this.skip();
    }
    dir = await makeTempDir("driver");
    // Bake a base image through the fake, the way the bake does it on a KVM host.
    const bakeRoot = join(dir, "bake");
    await writeBakeInputs(bakeRoot);
    await mkdir(join(bakeRoot, "run"));
    const bakeFc = await FakeFirecracker.start({
      socketPath: join(bakeRoot, "run", "api.sock"),
      rootDir: bakeRoot,
    });
    const api = new FirecrackerApiClient({ socketPath: join(bakeRoot, "run", "api.sock") });
    await bootVm(
      api,
      {
        bootArgs: "--nopci /runtime.js",
        vcpus: 1,
        memMiB: 256,
        ifaceId: "eth0",
        tapName: "tap0",
        limiters: {},
      },
      "/base/kernel.elf",
    );
    await pauseVm(api);
    await createSnapshot(api);
    await api.close();
    await bakeFc.exit("bake done");
    baseDir = join(bakeRoot, "base");
    guestPort = 30_000 + Math.floor(Math.random() * 20_000);
  });

  after(async () => {
    await removeDir(dir);
  });

  beforeEach(() => {
    slots = new FakeSlots();
    behaviour = {};
    spawned.length = 0;
    inits.length = 0;
  });

  afterEach(async () => {
    await driver?.close();
    driver = undefined;
    for (const f of fakes.splice(0)) await f.exit("test over");
    for (const g of guests) await g.stop();
    guests.clear();
  });

  it("start restores a paused clone, re-applies limits, resumes, and initialises the guest before handing it out", async () => {
    const d = makeDriver();
    const { instance, timings } = await d.startTimed(spec("vm-a"));
    const fake = fakes[0]!;
    assert.deepEqual(fake.callLine, ["PUT /snapshot/load", "PATCH /network-interfaces/eth0", "PATCH /vm"]);
    const load = fake.calls[0]!.body as {
      resume_vm: boolean;
      mem_backend: { backend_type: string };
      network_overrides: unknown;
    };
    assert.equal(load.resume_vm, false);
    assert.equal(load.mem_backend.backend_type, "File");
    assert.deepEqual(load.network_overrides, [{ iface_id: "eth0", host_dev_name: "tap0" }]);
    assert.deepEqual(fake.calls[2]!.body, { state: "Resumed" });
    assert.equal(fake.state, "Running");
    const controlSecret = Buffer.alloc(32, 7).toString("base64url");
    assert.deepEqual(inits, [
      {
        instanceId: "vm-a",
        unixTimeMs: 1_764_000_000_000,
        entropy: Buffer.alloc(32, 7).toString("base64"),
        controlSecret,
      },
    ]);
    // The secret given at init goes with the endpoint, so the host's later control calls carry it.
    assert.deepEqual(instance.endpoint, { kind: "tcp", host: "127.0.3.10", port: guestPort, controlSecret });
    assert.ok(timings.jailSetupMs >= 0 && timings.restoreMs >= 0 && timings.guestReadyMs >= 0);
    // Jailed as its own user, in its slot's netns, with cgroup limits and rlimits.
    const argv = spawned[0]!.jailerArgv;
    assert.equal(argv[argv.indexOf("--uid") + 1], "900100");
    assert.equal(argv[argv.indexOf("--netns") + 1], "/var/run/netns/fake-0");
    assert.ok(argv.includes("cpu.max=50000 100000"));
    assert.ok(argv.includes("no-file=256"));
    assert.equal(
      (await stat(join(spawned[0]!.jailRoot, "base", "memory"))).nlink,
      2,
      "memory file is hard linked",
    );
    for (const c of fake.calls) assert.equal(loadSpec().validateRequest(c.method, c.path, c.body), null);
  });

  it("attachCode stages the code disk and swaps it while paused, then resumes; only once", async () => {
    const d = makeDriver();
    const instance = await d.start(spec("vm-b"));
    const codeDisk = join(dir, "code-1234.img");
    await writeFile(codeDisk, "code disk image");
    await instance.attachCode({ functionName: "hello", codeHash: "1234abcd", hostPath: codeDisk });
    const fake = fakes[0]!;
    assert.deepEqual(fake.callLine.slice(3), ["PATCH /vm", "PATCH /drives/code", "PATCH /vm"]);
    assert.deepEqual(fake.calls[3]!.body, { state: "Paused" });
    assert.deepEqual(fake.calls[4]!.body, {
      drive_id: "code",
      path_on_host: "/code/1234abcd.img",
      rate_limiter: { bandwidth: { size: 5_000_000, refill_time: 100 } },
    });
    assert.deepEqual(fake.calls[5]!.body, { state: "Resumed" });
    assert.equal(fake.state, "Running");
    assert.ok(existsSync(join(spawned[0]!.jailRoot, "code", "1234abcd.img")));
    await assert.rejects(
      instance.attachCode({ functionName: "x", codeHash: "ffff", hostPath: codeDisk }),
      /already/,
    );
  });

  it("destroy kills the VMM and frees jail, cgroup, slot and uid; it is idempotent", async () => {
    const d = makeDriver();
    const instance = await d.start(spec("vm-c"));
    const jailDir = join(dir, "jails", "firecracker", "vm-c");
    const cgroup = join(dir, "cgroup", "snapfaas", "vm-c");
    assert.ok(existsSync(jailDir) && existsSync(cgroup));
    await Promise.all([instance.destroy("test says so"), instance.destroy("twice")]);
    const exit = await instance.exited;
    assert.deepEqual([exit.cause, exit.reason], ["destroyed", "test says so"]);
    assert.match((await fakes[0]!.exited).reason, /killed/);
    assert.equal(existsSync(jailDir), false);
    assert.equal(existsSync(cgroup), false);
    assert.equal(slots.leased.size, 0);
    assert.deepEqual(d.liveIds, []);
    // The uid went back to the range: 4 more starts fit in a range of 4.
    const more = await Promise.all(["vm-d", "vm-e", "vm-f", "vm-g"].map((id) => d.start(spec(id))));
    assert.equal(new Set(more.map((i) => i.endpoint.kind === "tcp" && i.endpoint.host)).size, 4);
  });

  it("egress per function: refused while the host offers none; offered, a VM opens its own slot's gate only", async () => {
    const closed = makeDriver();
    assert.deepEqual(
      (await closed.egressProblems()).map((p) => /network\.egress\.enabled is off/.test(p)),
      [true],
    );
    await closed.close();
    const d = makeDriver(5000, { egress: { enabled: true, uplink: "ens5" } });
    // Offered: what the slots find in the host's way (ip_forward, another firewall) is the answer.
    assert.deepEqual(await d.egressProblems(), []);
    slots.egressBlockers = ["net.ipv4.ip_forward is off (sysctl -w net.ipv4.ip_forward=1)"];
    assert.deepEqual(await d.egressProblems(), slots.egressBlockers);
    const [a, b] = await Promise.all([d.start(spec("vm-eg-a")), d.start(spec("vm-eg-b"))]);
    assert.ok(a.openEgress, "a microVM instance can be given egress");
    await a.openEgress!();
    const slotOf = (i: typeof a) => (i as unknown as { slot: NetworkSlot }).slot.index;
    assert.deepEqual(slots.egressOpened, [slotOf(a)], "a's slot only, not b's");
    assert.notEqual(slotOf(a), slotOf(b));
    await a.destroy("done");
    await assert.rejects(a.openEgress!(), /gone/);
    assert.deepEqual(slots.egressOpened, [slotOf(a)]);
  });

  it("a failed load is a dead instance with the reason, and nothing is left behind", async () => {
    behaviour.failLoadWith = "Load snapshot error: snapshot version mismatch";
    const d = makeDriver();
    await assert.rejects(d.start(spec("vm-h")), (err: unknown) => {
      assert.ok(err instanceof SandboxStartError);
      assert.equal(err.instanceId, "vm-h");
      assert.match(
        err.message,
        /snapshot load failed, firecracker exited: Load snapshot error: snapshot version mismatch/,
      );
      return true;
    });
    assert.match((await fakes[0]!.exited).reason, /snapshot load failed/);
    assert.equal(existsSync(join(dir, "jails", "firecracker", "vm-h")), false);
    assert.equal(existsSync(join(dir, "cgroup", "snapfaas", "vm-h")), false);
    assert.equal(slots.leased.size, 0);
  });

  it("a guest that never answers fails the start within the deadline and is cleaned up", async () => {
    behaviour.guestSilent = true;
    const d = makeDriver(500);
    await assert.rejects(
      d.start(spec("vm-i")),
      /reaching the guest runtime failed: .*did not become healthy within 500 ms/,
    );
    assert.equal(fakes[0]!.state, "Exited");
    assert.equal(slots.leased.size, 0);
  });

  it("a guest that refuses /_faas/init is not handed out", async () => {
    behaviour.refuseInit = true;
    const d = makeDriver();
    await assert.rejects(
      d.start(spec("vm-j")),
      /initialising the guest runtime failed: .*refused \/_faas\/init with 500/,
    );
    assert.equal(slots.leased.size, 0);
  });

  it("a VMM that dies on its own resolves exited with cause 'exited' and frees its resources", async () => {
    const d = makeDriver();
    const instance = await d.start(spec("vm-k"));
    await fakes[0]!.exit("simulated crash");
    const exit = await instance.exited;
    assert.equal(exit.cause, "exited");
    assert.match(exit.reason, /simulated crash/);
    assert.equal(slots.leased.size, 0);
    assert.equal(existsSync(join(dir, "jails", "firecracker", "vm-k")), false);
  });

  it("init reclaims jails and cgroups left by a crashed agent and builds the slot pool", async () => {
    const d = makeDriver();
    const leftover = join(dir, "jails", "firecracker", "vm-old", "root");
    await mkdir(join(leftover, "run"), { recursive: true });
    await writeFile(join(leftover, "firecracker.pid"), "999999999");
    await mkdir(join(dir, "cgroup", "snapfaas", "vm-old"), { recursive: true });
    await d.init();
    assert.deepEqual(await readdir(join(dir, "jails", "firecracker")), []);
    assert.equal(existsSync(join(dir, "cgroup", "snapfaas", "vm-old")), false);
    assert.equal(slots.reclaimed, 1);
    assert.equal(slots.filled, 1);
  });

  it("bakeBaseSnapshot boots in a jail and slot, waits for the guest, pauses, snapshots; clones restore from it", async () => {
    const d = makeDriver();
    const inputs = join(dir, "bake-inputs");
    await writeBakeInputs(inputs);
    const outDir = join(dir, "baked");
    const result = await bakeBaseSnapshot(
      {
        id: "bake-1",
        inputsDir: join(inputs, "base"),
        outDir,
        bootArgs: "--nopci /runtime.js",
        guestReadyTimeoutMs: 2_000,
      },
      { config: d.config, spawnVmm: spawnFake, slots, ids: new IdRangeAllocator(900_500, 1) },
    );
    assert.ok(result.bootToReadyMs >= 0 && result.snapshotMs >= 0);
    assert.deepEqual(fakes[0]!.callLine, [
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
    assert.deepEqual((await readdir(outDir)).sort(), [
      "code-empty.img",
      "kernel.elf",
      "memory",
      "root.img",
      "vmstate",
    ]);
    assert.equal((await stat(join(outDir, "memory"))).mode & 0o777, 0o444);
    assert.equal(existsSync(join(dir, "jails", "firecracker", "bake-1")), false, "the bake jail is removed");
    assert.equal(slots.leased.size, 0);
    const instance = await d.start({
      ...spec("vm-from-bake"),
      base: { version: "baked", driver: "firecracker", dir: outDir },
    });
    assert.equal(fakes[1]!.state, "Running");
    assert.equal(inits.at(-1)?.instanceId, "vm-from-bake");
    await instance.destroy("done");
  });

  it("refuses a second instance with an id that is starting or live", async () => {
    const d = makeDriver();
    const first = d.start(spec("vm-dup"));
    await assert.rejects(d.start(spec("vm-dup")), /already in use/);
    await first;
    await assert.rejects(d.start(spec("vm-dup")), /already in use/);
  });

  it("close destroys every live instance and closes the slot pool", async () => {
    const d = makeDriver();
    const a = await d.start(spec("vm-l"));
    const b = await d.start(spec("vm-m"));
    await d.close();
    assert.equal((await a.exited).cause, "destroyed");
    assert.equal((await b.exited).cause, "destroyed");
    assert.ok(slots.closed);
    driver = undefined;
  });

  // protection: FirecrackerDriver.close waits for restores in flight, which see the close at their
  // hand-over and release their VMM, jail, slot and uid
  it("close during restores leaves no VMM, jail or slot behind and refuses later starts", async () => {
    let openGate = () => {};
    behaviour.resumeGate = new Promise((r) => {
      openGate = r;
    });
    const d = makeDriver();
    const starts = ["vm-n", "vm-o", "vm-p"].map((id) =>
      d.start(spec(id)).then(
        () => "started",
        (err: Error) => err.message,
      ),
    );
    // Every restore is held at its resume when the close comes, and goes on to its hand-over after.
    while (fakes.filter((f) => f.state === "Running").length < 3) await new Promise((r) => setTimeout(r, 1));
    const closed = d.close();
    openGate();
    await closed;
    const outcomes = await Promise.all(starts);
    for (const outcome of outcomes) assert.match(outcome, /the firecracker sandbox is shutting down/);
    for (const f of fakes) assert.equal(f.state, "Exited");
    assert.deepEqual(d.liveIds, []);
    assert.equal(slots.leased.size, 0);
    for (const id of ["vm-n", "vm-o", "vm-p"])
      assert.equal(existsSync(join(dir, "jails", "firecracker", id)), false, `${id}'s jail is gone`);
    await assert.rejects(d.start(spec("vm-q")), /the firecracker sandbox is shutting down/);
    driver = undefined;
  });
});
