/**
 * The agent's data plane on restored microVMs: one real agent with the firecracker driver on QEMU/TCG
 * and the Linux guest (baked here, as `faas start` does), every case through its HTTP planes only:
 * http-echo with headers and body, per-clone randomness and clock, what a guest can reach without
 * egress and with it (through the host's NAT and DNS to a stand-in outside, test/helpers/egress-outside.ts),
 * which code a guest can read, a call past its deadline, a function that kills its VM, a VM killed
 * under load.
 * The host-side views (which QEMU serves which slot) come from /proc and the slots' namespaces, not
 * from the agent's internals. One agent and one bake for the whole file: each VM restore costs seconds
 * under TCG, so cases delete their functions when done to give the VMs back.
 * Needs root, qemu-system-x86_64 and the cached Linux image (`npm run guest:linux`).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { REQUEST_ID_HEADER } from "../../contracts/guest-protocol.ts";
import { deployConfigHeaders } from "../../host-agent/cli/admin-client.ts";
import { packFunction } from "../../host-agent/cli/pack.ts";
import { slotEgressGate } from "../firecracker/helpers.ts";
import {
  METADATA_ADDRESS,
  OUTSIDE_DNS,
  OUTSIDE_NAME,
  OUTSIDE_SERVER,
  type Outside,
  startOutside,
  UPLINK_ADDRESS,
} from "../helpers/egress-outside.ts";
import { probeBundle } from "./probe-function.ts";
import { isGone, startVmAgent, type VmAgent } from "./vm-agent.ts";

const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
// Loads and restores on a busy 2-core host under TCG take tens of seconds; every call (and load) gets this.
const CALL_TIMEOUT_MS = 60_000;
const CLOCK_TOLERANCE_MS = 10_000;

interface Facts {
  clone: string;
  marker: { name: string; secret: string };
  random: number;
  uuid: string;
  bytes: string;
  now: number;
  clocksource: string;
  uptime: number;
  peers: string[];
}

describe("the agent's data plane on restored microVMs (QEMU/TCG, Linux guest)", function () {
  this.timeout(600_000);
  let vm: VmAgent | undefined;
  let outside: Outside | undefined;
  let closed = false;
  const secrets = new Map<string, string>();
  const codeHashes = new Map<string, string>();

  before(async function () {
    this.timeout(900_000);
    // The host offers egress (to the stand-in outside); only functions deployed with it get it.
    outside = await startOutside();
    vm = await startVmAgent(this, {
      FAAS_EGRESS_UPLINK: outside.uplink,
      FAAS_EGRESS_DNS: OUTSIDE_DNS,
      FAAS_CALL_TIMEOUT_MS: String(CALL_TIMEOUT_MS),
      FAAS_POOL_GENERIC: "1",
      FAAS_POOL_GENERIC_MAX: "2",
      FAAS_POOL_MAX_INSTANCES: "8",
      FAAS_POOL_MAX_STARTING: "2",
      // Both planes on every address, as on a host: the guest-to-host checks must meet a listener.
      HOST: "0.0.0.0",
      ADMIN_HOST: "0.0.0.0",
    });
    console.log(`      bake (TCG) and agent start in ${vm.bakeSeconds.toFixed(1)} s`);
    // The slots' /30s: what the host forwards from them goes to the outside.
    await outside.route(`${vm.driver.network.hostSubnetBase}/26`);
    await deployProbe("probe-a");
    await deployProbe("probe-b");
  });

  after(async () => {
    if (vm && !closed) await vm.close();
    await outside?.close();
  });

  async function deploy(name: string, bundle: Buffer, headers: Record<string, string> = {}): Promise<string> {
    const res = await vm!.agent.admin("PUT", `/v1/functions/${name}`, bundle, headers);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const codeHash = (res.json.function as { codeHash: string }).codeHash;
    codeHashes.set(name, codeHash);
    return codeHash;
  }

  async function deployProbe(name: string, headers: Record<string, string> = {}): Promise<void> {
    const secret = randomBytes(16).toString("hex");
    secrets.set(name, secret);
    await deploy(name, probeBundle({ name, secret }), headers);
  }

  const lastLogs = () =>
    vm!.agent.logs
      .slice(-15)
      .map((l) => JSON.stringify(l))
      .join("\n");

  async function remove(name: string): Promise<void> {
    assert.equal((await vm!.agent.admin("DELETE", `/v1/functions/${name}`)).status, 200);
  }

  const get = (fn: string, path: string) =>
    vm!.agent.call(fn, undefined, { method: "GET", path: `/${fn}${path}` });

  async function facts(fn: string): Promise<Facts> {
    const res = await get(fn, "/facts");
    assert.equal(res.status, 200, `${res.text}\nthe agent's last lines:\n${lastLogs()}`);
    return res.json() as Facts;
  }

  /** The slot and QEMU pid of the clone that answered `f` (the host's veth address is its peer). */
  async function cloneOf(f: Facts): Promise<{ slot: number; pid: number }> {
    const slots = f.peers.map((p) => vm!.slotOfPeer(p)).filter((s): s is number => s !== undefined);
    assert.equal(slots.length, 1, `one of this agent's slots among the guest's peers ${f.peers.join(", ")}`);
    const pid = await vm!.qemuInSlot(slots[0]!);
    assert.ok(pid, `a QEMU runs in slot ${slots[0]}`);
    return { slot: slots[0]!, pid };
  }

  async function untilGone(pid: number, ms = 60_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await isGone(pid))) {
      if (Date.now() > end) assert.fail(`QEMU ${pid} still runs ${ms} ms later`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it("serves examples/http-echo with the call's method, path, query and body, and forwards headers", async () => {
    await deploy("echo", await packFunction(join(REPO, "examples/http-echo")));
    const body = "hello from the host";
    const res = await vm!.agent.call("echo", body, {
      path: "/echo/some/path?x=1&y=two",
      headers: { "content-type": "text/plain" },
    });
    assert.equal(res.status, 200, res.text);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    assert.deepEqual(res.json(), {
      method: "POST",
      path: "/some/path",
      query: "x=1&y=two",
      body,
      requestId: res.headers[REQUEST_ID_HEADER],
    });
    const plain = await get("echo", "/");
    assert.equal(plain.status, 200, plain.text);
    assert.deepEqual([plain.json().method, plain.json().body], ["GET", null]);

    // The caller's headers reach the function; the agent's own x-faas-* names cannot be forged.
    const headers = await vm!.agent.call("probe-a", undefined, {
      method: "GET",
      path: "/probe-a/headers",
      headers: { "x-custom": "custom value", "x-faas-forged": "from the caller", accept: "text/plain" },
    });
    assert.equal(headers.status, 200, headers.text);
    const seen = headers.json() as Record<string, string>;
    assert.equal(seen["x-custom"], "custom value");
    assert.equal(seen.accept, "text/plain");
    assert.equal(seen["x-faas-forged"], undefined);
    await remove("echo");
  });

  it("gives every clone its own Math.random, randomUUID and randomBytes, and the host's clock", async () => {
    const before = Date.now();
    const a = await facts("probe-a");
    const b = await facts("probe-b");
    const after = Date.now();
    const [ca, cb] = [await cloneOf(a), await cloneOf(b)];
    assert.notEqual(ca.pid, cb.pid, "two functions, two clones");
    assert.deepEqual([a.marker.name, b.marker.name], ["probe-a", "probe-b"]);
    // Both clones resumed from the same memory: without a reseed at init these are equal.
    assert.notEqual(a.clone, b.clone);
    assert.notEqual(a.random, b.random);
    assert.notEqual(a.uuid, b.uuid);
    assert.notEqual(a.bytes, b.bytes);
    // The snapshot's wall clock is minutes old by now; each clone's is stepped to the host's at init.
    console.log(
      `      clocks: ${[a, b].map((f) => `${f.clocksource}, uptime ${f.uptime} s, ${f.now - after} ms off`).join("; ")}`,
    );
    // The step is as good as /_faas/init's latency: milliseconds on KVM, seconds for an emulated CPU
    // on a busy host. A clone left on the snapshot's clock would be a minute or more off.
    for (const f of [a, b]) {
      assert.ok(
        f.now >= before - CLOCK_TOLERANCE_MS && f.now <= after + CLOCK_TOLERANCE_MS,
        `the guest's Date.now() ${f.now} is within ${CLOCK_TOLERANCE_MS} ms of the host's [${before}, ${after}]`,
      );
    }
    // The same clone again: its own generator moves on, its name stays.
    const again = await facts("probe-a");
    assert.equal(again.clone, a.clone);
    assert.notEqual(again.random, a.random);
  });

  interface Reach {
    results: Array<{ what?: string; host: string; port: number; control?: boolean; outcome: string }>;
    dns: string;
    get?: { status?: number; body?: string; error?: string };
  }

  /** The probe in `fn` connects to each target, looks the outside's name up and GETs it by name. */
  async function reach(
    fn: string,
    targets: Array<{ what: string; host: string; port: number }>,
  ): Promise<Reach> {
    const res = await vm!.agent.call(
      fn,
      JSON.stringify({ targets, lookup: OUTSIDE_NAME, get: `http://${OUTSIDE_NAME}/` }),
      { path: `/${fn}/reach`, headers: { "content-type": "application/json" } },
    );
    assert.equal(res.status, 200, res.text);
    const got = res.json() as Reach;
    assert.equal(got.results[0]!.control, true);
    assert.equal(got.results[0]!.outcome, "connected", "the probe connects inside its own guest");
    assert.equal(got.results.length, targets.length + 1);
    return got;
  }

  /** What no guest may reach, egress or not: the other clone, the host's ports on any of its addresses, metadata. */
  async function forbiddenTargets(own: number, other: number, canaryPort: number) {
    const dataPort = Number(new URL(vm!.agent.dataUrl).port);
    const adminPort = Number(new URL(vm!.agent.adminUrl).port);
    const uplink = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(
      (await execa("ip", ["route", "get", "1.1.1.1"], { reject: false })).stdout,
    )?.[1];
    const hostA = vm!.hostAddress(own);
    const hostB = vm!.hostAddress(other);
    // The host itself reaches the canary on these addresses: a refusal below is the slots' rules.
    for (const host of [hostA, hostB, UPLINK_ADDRESS, ...(uplink ? [uplink] : [])])
      assert.equal(await hostConnect(host, canaryPort), "connected", `the host reaches ${host}`);
    return [
      { what: "the other clone", host: vm!.cloneAddress(other), port: vm!.driver.guestPort },
      { what: "the agent's data plane", host: hostA, port: dataPort },
      { what: "the agent's admin API", host: hostA, port: adminPort },
      { what: "a host service", host: hostA, port: canaryPort },
      { what: "a host service via the other slot", host: hostB, port: canaryPort },
      { what: "a host service on the egress uplink's address", host: UPLINK_ADDRESS, port: canaryPort },
      ...(uplink
        ? [
            { what: "the host's uplink address", host: uplink, port: canaryPort },
            { what: "the data plane on the uplink", host: uplink, port: dataPort },
          ]
        : []),
      // The outside answers on this address: only the host's rules keep a guest from it.
      { what: "the instance metadata service", host: METADATA_ADDRESS, port: 80 },
    ];
  }

  async function withCanary<T>(body: (port: number) => Promise<T>): Promise<T> {
    const canary = createServer((s) => s.end());
    await new Promise<void>((r) => canary.listen(0, "0.0.0.0", r));
    try {
      return await body((canary.address() as { port: number }).port);
    } finally {
      await new Promise((r) => canary.close(r));
    }
  }

  const connected = (r: Reach) =>
    r.results
      .slice(1)
      .filter((t) => t.outcome === "connected")
      .map((t) => `${t.what} (${t.host}:${t.port})`);

  it("a guest without egress reaches neither another guest, nor the host's ports, nor the outside the host offers", async () => {
    await withCanary(async (canaryPort) => {
      const a = await cloneOf(await facts("probe-a"));
      const b = await cloneOf(await facts("probe-b"));
      const targets = [
        ...(await forbiddenTargets(a.slot, b.slot, canaryPort)),
        { what: "the outside", host: OUTSIDE_SERVER, port: 80 },
        { what: "the internet", host: "1.1.1.1", port: 443 },
      ];
      const got = await reach("probe-a", targets);
      assert.deepEqual(connected(got), [], "nothing outside the guest is reachable");
      assert.doesNotMatch(got.dns, /^resolved/, "no DNS without egress");
      assert.equal(got.get?.status, undefined, "no HTTP answer from the outside");
    });
  });

  it("a guest with egress reaches the outside through the host's NAT and DNS, and still nothing of the host or the other guests", async () => {
    await deployProbe("probe-out", deployConfigHeaders({ egress: true }));
    await withCanary(async (canaryPort) => {
      const out = await cloneOf(await facts("probe-out"));
      const b = await cloneOf(await facts("probe-b"));
      const got = await reach("probe-out", [
        { what: "the outside", host: OUTSIDE_SERVER, port: 80 },
        ...(await forbiddenTargets(out.slot, b.slot, canaryPort)),
      ]);
      assert.deepEqual(connected(got), [`the outside (${OUTSIDE_SERVER}:80)`], "the outside only");
      assert.equal(got.dns, `resolved ${OUTSIDE_SERVER}`, "the guest's resolver (its gateway) is the host's");
      assert.equal(got.get?.status, 200, JSON.stringify(got.get));
      // The outside saw the host's uplink address: the call left masqueraded, twice (slot, then host).
      assert.deepEqual(JSON.parse(got.get!.body!), { from: UPLINK_ADDRESS, to: OUTSIDE_SERVER });
      // The other function's clone, on the same host at the same time, is still shut in.
      const closed = await reach("probe-b", [{ what: "the outside", host: OUTSIDE_SERVER, port: 80 }]);
      assert.deepEqual(connected(closed), []);

      // Egress off: a new clone serves it, shut in; the old clone's slot is closed before any reuse.
      const off = await vm!.agent.admin(
        "PATCH",
        "/v1/functions/probe-out/config",
        Buffer.from(JSON.stringify({ egress: false })),
        { "content-type": "application/json" },
      );
      assert.equal(off.status, 200, JSON.stringify(off.json));
      await untilGone(out.pid);
      const gate = await slotEgressGate(`${vm!.driver.network.netnsPrefix}-${out.slot}`);
      assert.match(gate, /ip daddr != \S+ drop/, "the released slot's gate is closed again");
      const after = await reach("probe-out", [{ what: "the outside", host: OUTSIDE_SERVER, port: 80 }]);
      assert.deepEqual(connected(after), [], "egress off: nothing");
      assert.doesNotMatch(after.dns, /^resolved/);
    });
    await remove("probe-out");
  });

  it("a guest sees only its own code disk: its device is its function's image, not another's", async () => {
    const codeDisks = join(vm!.agent.stateDir, "code-disks");
    const files = await readdir(codeDisks);
    const imageSha = async (fn: string) => {
      const file = files.find((f) => f.startsWith(`${codeHashes.get(fn)!}.`));
      assert.ok(file, `${fn}'s code disk is in ${codeDisks}`);
      return createHash("sha256")
        .update(await readFile(join(codeDisks, file)))
        .digest("hex");
    };
    const [shaA, shaB] = [await imageSha("probe-a"), await imageSha("probe-b")];
    assert.notEqual(shaA, shaB);
    const res = await get("probe-a", "/disks");
    assert.equal(res.status, 200, res.text);
    const disks = res.json() as {
      blockDevices: string[];
      sha256: Record<string, string>;
      code: Array<{ path: string; text: string }>;
    };
    assert.deepEqual(disks.blockDevices, ["vda", "vdb"], "the root disk and one code disk, nothing else");
    assert.equal(disks.sha256.vdb, shaA, "the code disk is probe-a's image, byte for byte");
    assert.deepEqual(disks.code.map((c) => c.path).sort(), ["/code/index.js", "/code/marker.json"]);
    const all = disks.code.map((c) => c.text).join("\n");
    assert.ok(all.includes(secrets.get("probe-a")!));
    assert.ok(!all.includes(secrets.get("probe-b")!), "nothing of probe-b's code");
  });

  it("a call past its deadline: 504, its clone is stopped, the next call is served by another clone", async () => {
    await deployProbe("sleeper");
    const first = await facts("sleeper");
    const { pid } = await cloneOf(first);
    const started = Date.now();
    const slow = await get("sleeper", "/sleep?ms=600000");
    const tookMs = Date.now() - started;
    assert.equal(slow.status, 504, slow.text);
    assert.equal(slow.json().error.code, "call_timeout");
    assert.match(slow.json().error.message, new RegExp(`deadline of ${CALL_TIMEOUT_MS} ms`));
    assert.ok(tookMs < CALL_TIMEOUT_MS + 10_000, `answered ${tookMs} ms after the call`);
    await untilGone(pid);
    const next = await facts("sleeper");
    assert.notEqual(next.clone, first.clone, "another clone serves the next call");
    assert.notEqual((await cloneOf(next)).pid, pid);
    await remove("sleeper");
  });

  it("a function that exits its VM: 502 naming the crash, and the pool serves the next call from a new clone", async () => {
    await deployProbe("crasher");
    const first = await facts("crasher");
    const { pid } = await cloneOf(first);
    const crash = await get("crasher", "/exit");
    assert.equal(crash.status, 502, crash.text);
    assert.equal(crash.json().error.code, "function_crashed");
    assert.match(crash.json().error.message, /instance failed during the call/);
    await untilGone(pid);
    const next = await facts("crasher");
    assert.notEqual(next.clone, first.clone);
    // The rest of the host goes on: another function's clone still answers.
    assert.equal((await facts("probe-b")).marker.name, "probe-b");
    await remove("crasher");
  });

  it("a clone killed (SIGKILL of its QEMU) under load: its call fails clearly, the others and the next ones are served", async () => {
    await deployProbe("victim");
    const first = await facts("victim");
    const { pid } = await cloneOf(first);
    // Three calls at once: the warm clone takes one, the pool finds clones for the others.
    const calls = [0, 1, 2].map(() => get("victim", "/sleep?ms=5000"));
    const end = Date.now() + 20_000;
    for (;;) {
      const pool = await vm!.agent.admin("GET", "/v1/pool");
      const fns = pool.json.functions as Record<string, { busy: number }> | undefined;
      if ((fns?.victim?.busy ?? 0) >= 1) break;
      if (Date.now() > end) assert.fail("no call of victim got busy");
      await new Promise((r) => setTimeout(r, 100));
    }
    process.kill(pid, "SIGKILL");
    const answers = await Promise.all(calls);
    const failed = answers.filter((a) => a.status !== 200);
    const served = answers.filter((a) => a.status === 200);
    assert.ok(failed.length >= 1, "the call on the killed clone failed");
    for (const f of failed) {
      assert.equal(f.status, 502, f.text);
      assert.match(f.json().error.code, /^(function_crashed|instance_failed)$/);
      assert.ok(f.json().error.message.length > 20, `a message that says what happened: ${f.text}`);
    }
    for (const s of served) assert.notEqual(s.json().clone, first.clone, "served by a clone still alive");
    await untilGone(pid);
    for (let i = 0; i < 3; i++) {
      const next = await facts("victim");
      assert.notEqual(next.clone, first.clone, "the next calls are served by other clones");
    }
    await remove("victim");
  });

  it("stops with no QEMU, network namespace or cgroup left", async () => {
    closed = true;
    const left = await vm!.close();
    assert.deepEqual(left, { qemus: [], netns: [], cgroups: [] });
  });
});

/** The host's own connect, the reference for what the guest's probe sees. */
function hostConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (outcome: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => done("timeout"), 3_000);
    socket.once("connect", () => done("connected"));
    socket.once("error", (err: NodeJS.ErrnoException) => done(err.code ?? String(err)));
  });
}
