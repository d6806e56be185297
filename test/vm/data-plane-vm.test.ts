/**
 * The agent's data plane on restored microVMs: one real agent with the firecracker driver on QEMU/TCG
 * and the Linux guest (baked here, as `faas start` does), every case through its HTTP planes only:
 * http-echo with headers and body, per-clone randomness and clock, what a guest can reach, which code
 * a guest can read, a call past its deadline, a function that kills its VM, a VM killed under load.
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
import { packFunction } from "../../host-agent/cli/pack.ts";
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
  let closed = false;
  const secrets = new Map<string, string>();
  const codeHashes = new Map<string, string>();

  before(async function () {
    this.timeout(900_000);
    vm = await startVmAgent(this, {
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
    await deployProbe("probe-a");
    await deployProbe("probe-b");
  });

  after(async () => {
    if (vm && !closed) await vm.close();
  });

  async function deploy(name: string, bundle: Buffer): Promise<string> {
    const res = await vm!.agent.admin("PUT", `/v1/functions/${name}`, bundle);
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const codeHash = (res.json.function as { codeHash: string }).codeHash;
    codeHashes.set(name, codeHash);
    return codeHash;
  }

  async function deployProbe(name: string): Promise<void> {
    const secret = randomBytes(16).toString("hex");
    secrets.set(name, secret);
    await deploy(name, probeBundle({ name, secret }));
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

  it("a guest reaches neither another guest, nor the host's ports, nor the outside (egress is off)", async () => {
    const canary = createServer((s) => s.end());
    await new Promise<void>((r) => canary.listen(0, "0.0.0.0", r));
    try {
      const canaryPort = (canary.address() as { port: number }).port;
      const a = await cloneOf(await facts("probe-a"));
      const b = await cloneOf(await facts("probe-b"));
      const dataPort = Number(new URL(vm!.agent.dataUrl).port);
      const adminPort = Number(new URL(vm!.agent.adminUrl).port);
      const uplink = /\bsrc (\d+\.\d+\.\d+\.\d+)/.exec(
        (await execa("ip", ["route", "get", "1.1.1.1"], { reject: false })).stdout,
      )?.[1];
      const hostA = vm!.hostAddress(a.slot);
      const hostB = vm!.hostAddress(b.slot);
      // The host itself reaches the canary on these addresses: a refusal below is the slots' rules.
      for (const host of [hostA, hostB, ...(uplink ? [uplink] : [])])
        assert.equal(await hostConnect(host, canaryPort), "connected", `the host reaches ${host}`);
      const targets = [
        { what: "the other clone", host: vm!.cloneAddress(b.slot), port: vm!.driver.guestPort },
        { what: "the agent's data plane", host: hostA, port: dataPort },
        { what: "the agent's admin API", host: hostA, port: adminPort },
        { what: "a host service", host: hostA, port: canaryPort },
        { what: "a host service via the other slot", host: hostB, port: canaryPort },
        ...(uplink
          ? [
              { what: "the host's uplink address", host: uplink, port: canaryPort },
              { what: "the data plane on the uplink", host: uplink, port: dataPort },
            ]
          : []),
        { what: "the outside", host: "1.1.1.1", port: 443 },
        { what: "the instance metadata service", host: "169.254.169.254", port: 80 },
      ];
      const res = await vm!.agent.call("probe-a", JSON.stringify(targets), {
        path: "/probe-a/reach",
        headers: { "content-type": "application/json" },
      });
      assert.equal(res.status, 200, res.text);
      const { results, dns } = res.json() as {
        results: Array<{ what?: string; host: string; port: number; control?: boolean; outcome: string }>;
        dns: string;
      };
      assert.equal(results[0]!.control, true);
      assert.equal(results[0]!.outcome, "connected", "the probe connects inside its own guest");
      const reached = results.slice(1).filter((r) => r.outcome === "connected");
      assert.deepEqual(
        reached.map((r) => `${r.what} (${r.host}:${r.port})`),
        [],
        "nothing outside the guest is reachable",
      );
      assert.equal(results.length, targets.length + 1);
      assert.doesNotMatch(dns, /^resolved/, "no DNS without egress");
    } finally {
      await new Promise((r) => canary.close(r));
    }
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
