import assert from "node:assert/strict";
import { execa, type ResultPromise } from "execa";
import { networkSlotsConfigSchema } from "../../contracts/firecracker-driver-config.ts";
import { CommandError, type CommandRunner, execaRunner } from "../../host-agent/sandbox/command-runner.ts";
import {
  describeSlot,
  egressGateCommand,
  hostRuleset,
  hostTableName,
  NetworkSlotPool,
  slotRuleset,
} from "../../host-agent/sandbox/firecracker/network-slots.ts";
import { isRoot, slotEgressGate } from "./helpers.ts";

// Test-only prefixes and subnet, so a run never touches slots of a real agent on the same machine.
const config = networkSlotsConfigSchema.parse({
  netnsPrefix: "fctest",
  vethPrefix: "fctv",
  hostSubnetBase: "10.201.0.0",
  poolSize: 2,
  maxSlots: 8,
});

async function hasTool(name: string): Promise<boolean> {
  return (await execa(name, [name === "ip" ? "-V" : "--version"], { reject: false })).exitCode === 0;
}

async function netnsNames(): Promise<string[]> {
  const { stdout } = await execa("ip", ["netns", "list"]);
  return stdout
    .split("\n")
    .map((l) => l.trim().split(/\s+/)[0] ?? "")
    .filter((n) => n.length > 0);
}

async function hostLinks(): Promise<string[]> {
  const { stdout } = await execa("ip", ["-o", "link", "show"]);
  return stdout.split("\n").map((l) => l.split(":")[1]?.trim().split("@")[0] ?? "");
}

describe("network slots with scripted commands", () => {
  /** `ip` as the host answers right after a netns delete: the veth is listed, then already gone. */
  function racingHost(deleteAnswer: string): CommandRunner {
    return async (file, args) => {
      const line = [file, ...args].join(" ");
      if (line === "ip -o link show") return { stdout: "7: fctv-3@if2: <BROADCAST> mtu 1500\n", stderr: "" };
      if (line === "ip link delete fctv-3") throw new CommandError(line, 1, deleteAnswer);
      return { stdout: "", stderr: "" };
    };
  }

  it("keeps a released slot's index taken while it is cleaned: a start meanwhile builds another index", async () => {
    let finishTapDelete: () => void = () => {};
    const commands: string[] = [];
    const host: CommandRunner = async (file, args) => {
      const line = [file, ...args].join(" ");
      commands.push(line);
      if (line === "ip -n fctest-0 link delete tap0")
        await new Promise<void>((resolve) => {
          finishTapDelete = resolve;
        });
      return { stdout: "", stderr: "" };
    };
    const slots = new NetworkSlotPool({ ...config, poolSize: 0 }, host);
    const first = await slots.acquire({ uid: 900_001, gid: 900_001 });
    assert.equal(first.index, 0);
    const releasing = slots.release(first);
    await new Promise((r) => setImmediate(r));
    const second = await slots.acquire({ uid: 900_002, gid: 900_002 });
    assert.equal(second.index, 1, "index 0 is still being cleaned");
    finishTapDelete();
    await releasing;
    assert.equal(commands.filter((c) => c === "ip netns add fctest-0").length, 1, "slot 0 built once");
    const third = await slots.acquire({ uid: 900_003, gid: 900_003 });
    assert.equal(third.index, 0, "the cleaned slot is reused");
  });

  it("counts a veth the kernel removed in the meantime as removed, and still fails on any other error", async () => {
    const removed = await new NetworkSlotPool(config, racingHost('Cannot find device "fctv-3"')).reclaim();
    assert.deepEqual(removed, ["fctv-3"]);
    await assert.rejects(
      new NetworkSlotPool(config, racingHost("RTNETLINK answers: Operation not permitted")).reclaim(),
      /ip link delete fctv-3 failed.*Operation not permitted/,
    );
  });
});

describe("network slot layout (pure)", () => {
  it("gives each slot its own /30 on the host side and the same tap and guest IP", () => {
    const a = describeSlot(config, 0);
    const b = describeSlot({ ...config, maxSlots: 100 }, 65);
    assert.deepEqual(
      [a.hostAddress, a.cloneAddress, a.netnsName, a.hostVeth],
      ["10.201.0.1", "10.201.0.2", "fctest-0", "fctv-0"],
    );
    assert.deepEqual([b.hostAddress, b.cloneAddress], ["10.201.1.5", "10.201.1.6"]);
    assert.equal(a.tapName, b.tapName);
    assert.equal(a.guestAddress, b.guestAddress);
    assert.equal(a.netnsPath, "/var/run/netns/fctest-0");
    assert.throws(() => describeSlot(config, 8), /out of range/);
  });

  it("NATs the clone address to the guest and masquerades the guest's egress", () => {
    const rules = slotRuleset(describeSlot(config, 1));
    assert.match(rules, /iifname "veth0" ip daddr 10\.201\.0\.6 dnat to 172\.16\.0\.2/);
    assert.match(rules, /oifname "veth0" ip saddr 172\.16\.0\.2 masquerade/);
    assert.match(rules, /iifname "veth0" ct state new ip saddr != 10\.201\.0\.5 drop/);
    assert.doesNotMatch(rules, /dport 53/, "no DNS forwarding without egress");
  });

  it("with egress off, the host forwards nothing from a slot and takes no new connection from one", () => {
    const rules = hostRuleset(config);
    assert.match(rules, /table ip snapfaas_fctv \{/);
    assert.match(rules, /iifname "fctv-\*" oifname "fctv-\*" drop/);
    assert.match(rules, /chain forward \{[^}]*iifname "fctv-\*" drop\n/);
    assert.match(rules, /chain input \{[^}]*iifname "fctv-\*" ct state new drop/);
    assert.doesNotMatch(rules, /masquerade|accept\n/);
  });

  it("with egress on, masquerades out of the uplink, forwards the guest's DNS, keeps metadata out", () => {
    const egress = { enabled: true, uplink: "ens5", dnsResolver: "169.254.169.253" };
    const host = hostRuleset({ ...config, egress });
    assert.match(host, /oifname "ens5" ip saddr 10\.201\.0\.0\/16 masquerade/);
    assert.match(host, /iifname "fctv-\*" ip daddr 169\.254\.0\.0\/16 ip daddr != 169\.254\.169\.253 drop/);
    // Order matters: slot-to-slot and metadata drops come before the uplink accept.
    assert.ok(host.indexOf('oifname "fctv-*" drop') < host.indexOf('oifname "ens5" accept'));
    assert.ok(host.indexOf("169.254.0.0/16") < host.indexOf('oifname "ens5" accept'));
    const slot = slotRuleset(describeSlot(config, 0), egress, "172.16.0.1");
    assert.match(slot, /iifname "tap0" ip daddr 172\.16\.0\.1 udp dport 53 dnat to 169\.254\.169\.253/);
    assert.match(slot, /iifname "tap0" ip daddr 172\.16\.0\.1 tcp dport 53 dnat to 169\.254\.169\.253/);
  });

  it("starts every slot's egress gate closed: the guest sends nothing but answers to its host address", () => {
    const slot = describeSlot(config, 1);
    for (const egress of [undefined, { enabled: true, uplink: "ens5", dnsResolver: "10.0.0.2" }]) {
      const rules = slotRuleset(slot, egress);
      assert.match(
        rules,
        /chain egress_gate \{\n\s+type filter hook forward priority filter; policy accept;\n\s+iifname "tap0" ip daddr != 10\.201\.0\.5 drop\n\s+\}/,
      );
    }
    assert.equal(egressGateCommand(slot, true), "flush chain ip snapfaas_slot egress_gate\n");
    assert.equal(
      egressGateCommand(slot, false),
      'flush chain ip snapfaas_slot egress_gate\nadd rule ip snapfaas_slot egress_gate iifname "tap0" ip daddr != 10.201.0.5 drop\n',
    );
  });
});

describe("network slots for real (root, ip, nft)", function () {
  this.timeout(60_000);
  let pool: NetworkSlotPool | undefined;
  const guests: ResultPromise[] = [];

  before(async function () {
    if (!isRoot()) {
      console.log("    skipped: network slots need root");
      this.skip();
    }
    if (!(await hasTool("ip")) || !(await hasTool("nft"))) {
      console.log("    skipped: network slots need iproute2 (ip) and nftables (nft)");
      this.skip();
    }
    // Leftovers of an earlier interrupted run of this test.
    await new NetworkSlotPool(config, execaRunner).reclaim();
  });

  afterEach(async () => {
    for (const guest of guests.splice(0)) {
      guest.kill("SIGKILL");
      await guest.catch(() => undefined);
    }
    await pool?.close();
    pool = undefined;
  });

  after(async () => {
    if (isRoot()) await new NetworkSlotPool(config, execaRunner).reclaim().catch(() => undefined);
  });

  /**
   * Without a VM the tap has no carrier, so nothing behind it can answer. The stand-in guest instead
   * holds the guest IP on the slot namespace's loopback (this kernel has no dummy interfaces) and
   * listens there: the host's request still goes host veth -> clone address -> DNAT -> guest IP, which
   * is the path under test; only the last hop (tap -> VM) is not exercised.
   */
  async function startStandInGuest(netns: string, guestAddress: string, label: string): Promise<void> {
    await execa("ip", ["-n", netns, "addr", "add", `${guestAddress}/32`, "dev", "lo"]);
    const code = `require("node:http").createServer((q, s) => s.end(JSON.stringify({ slot: ${JSON.stringify(label)}, from: q.socket.remoteAddress }))).listen(8123, ${JSON.stringify(guestAddress)}, () => console.log("listening"));`;
    const guest = execa("ip", ["netns", "exec", netns, process.execPath, "-e", code]);
    guests.push(guest);
    await new Promise<void>((resolve, reject) => {
      guest.stdout?.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("listening")) resolve();
      });
      guest.catch(reject);
    });
  }

  it("builds 2 slots ahead of time, hands them out with a tap owned by the VM user, reaches each guest through its NAT", async () => {
    pool = new NetworkSlotPool(config, execaRunner);
    await pool.fill();
    assert.equal(pool.freeCount, 2);
    const a = await pool.acquire({ uid: 900_001, gid: 900_001 });
    const b = await pool.acquire({ uid: 900_002, gid: 900_002 });
    assert.notEqual(a.cloneAddress, b.cloneAddress);
    assert.ok((await netnsNames()).includes(a.netnsName));
    for (const [slot, uid] of [
      [a, 900_001],
      [b, 900_002],
    ] as const) {
      const { stdout } = await execa("ip", ["-n", slot.netnsName, "-d", "link", "show", "tap0"]);
      assert.match(stdout, new RegExp(`user ${uid} group ${uid}`));
      assert.match(stdout, /link\/ether 02:fa:a5:00:00:01/);
      const { stdout: addr } = await execa("ip", ["-n", slot.netnsName, "-4", "addr", "show", "tap0"]);
      assert.match(addr, /inet 172\.16\.0\.1\/30/);
    }
    await startStandInGuest(a.netnsName, a.guestAddress, "a");
    await startStandInGuest(b.netnsName, b.guestAddress, "b");
    for (const [slot, label] of [
      [a, "a"],
      [b, "b"],
    ] as const) {
      const res = await fetch(`http://${slot.cloneAddress}:8123/`, { signal: AbortSignal.timeout(5_000) });
      const body = (await res.json()) as { slot: string; from: string };
      assert.equal(body.slot, label, "each clone address leads to its own slot's guest");
      assert.equal(body.from, slot.hostAddress, "ingress is DNAT only: the guest sees the host's address");
    }
  });

  /** Connects from inside a slot, from the guest's address, as a guest would; true when it got an answer. */
  async function guestReaches(netns: string, from: string, host: string, port: number): Promise<boolean> {
    const code = `const s = require("node:net").connect({ host: ${JSON.stringify(host)}, port: ${port}, localAddress: ${JSON.stringify(from)} }); s.setTimeout(1500, () => { console.log("timeout"); process.exit(0); }); s.on("data", () => { console.log("answered"); process.exit(0); }); s.on("error", (e) => { console.log(e.code); process.exit(0); }); s.write("GET / HTTP/1.0\\r\\n\\r\\n");`;
    const { stdout } = await execa("ip", ["netns", "exec", netns, process.execPath, "-e", code]);
    return stdout.trim() === "answered";
  }

  /** Connects from the host, from a chosen local address; true when it got an answer. */
  async function hostReaches(host: string, port: number, from: string): Promise<boolean> {
    const { connect } = await import("node:net");
    return new Promise((resolve) => {
      const sock = connect({ host, port, localAddress: from });
      sock.setTimeout(1500, () => {
        sock.destroy();
        resolve(false);
      });
      sock.on("data", () => {
        sock.destroy();
        resolve(true);
      });
      sock.on("error", () => resolve(false));
      sock.write("GET / HTTP/1.0\r\n\r\n");
    });
  }

  it("keeps guests apart: no guest reaches another slot's guest or the host; the host still reaches both", async () => {
    pool = new NetworkSlotPool(config, execaRunner);
    const a = await pool.acquire({ uid: 900_011, gid: 900_011 });
    const b = await pool.acquire({ uid: 900_012, gid: 900_012 });
    await startStandInGuest(a.netnsName, a.guestAddress, "a");
    await startStandInGuest(b.netnsName, b.guestAddress, "b");
    // Something the host serves on all addresses (the data plane, sshd).
    const { createServer } = await import("node:net");
    const hostServer = createServer((sock) => sock.end("host\n")).listen(0, "0.0.0.0");
    await new Promise((r) => hostServer.once("listening", r));
    const hostPort = (hostServer.address() as { port: number }).port;
    try {
      assert.equal(await guestReaches(a.netnsName, a.guestAddress, b.cloneAddress, 8123), false, "a -> b");
      assert.equal(await guestReaches(b.netnsName, b.guestAddress, a.cloneAddress, 8123), false, "b -> a");
      assert.equal(
        await guestReaches(a.netnsName, a.guestAddress, a.hostAddress, hostPort),
        false,
        "a -> host",
      );
      assert.equal(
        await guestReaches(a.netnsName, a.guestAddress, b.hostAddress, hostPort),
        false,
        "a -> host via b's veth",
      );
      for (const slot of [a, b]) {
        const res = await fetch(`http://${slot.cloneAddress}:8123/`, { signal: AbortSignal.timeout(5_000) });
        assert.equal(res.status, 200, "the host's calls into each guest still pass");
      }
      // The host table is there while slots exist, and goes with the pool.
      const { stdout } = await execa("nft", ["list", "table", "ip", hostTableName(config)]);
      assert.match(stdout, /iifname "fctv-\*" ct state new drop/);
      // What another slot's traffic looks like when the host forwards it (this test host may not
      // forward at all): into b's slot from an address that is not b's host address.
      assert.equal(
        await hostReaches(b.cloneAddress, 8123, a.hostAddress),
        false,
        "b's slot refuses a stranger",
      );
      assert.equal(await hostReaches(b.cloneAddress, 8123, b.hostAddress), true, "and takes its host");
    } finally {
      hostServer.close();
    }
    await pool.close();
    pool = undefined;
    const gone = await execa("nft", ["list", "table", "ip", hostTableName(config)], { reject: false });
    assert.notEqual(gone.exitCode, 0, "close removes the host table");
  });

  it("recycles a released slot (tap removed) and tears everything down on close", async () => {
    pool = new NetworkSlotPool(config, execaRunner);
    const a = await pool.acquire({ uid: 900_003, gid: 900_003 });
    await pool.release(a);
    assert.equal(pool.freeCount, 1);
    const tap = await execa("ip", ["-n", a.netnsName, "link", "show", "tap0"], { reject: false });
    assert.notEqual(tap.exitCode, 0, "the released slot has no tap left");
    const again = await pool.acquire({ uid: 900_004, gid: 900_004 });
    assert.equal(again.index, a.index, "the same slot is reused");
    await pool.close();
    pool = undefined;
    assert.equal((await netnsNames()).filter((n) => n.startsWith("fctest-")).length, 0);
    assert.equal((await hostLinks()).filter((n) => n.startsWith("fctv-")).length, 0);
  });

  it("opens a leased slot's egress gate only when the host offers egress, and closes it before the slot is reused", async () => {
    const closedPool = new NetworkSlotPool(config, execaRunner);
    pool = closedPool;
    const c = await closedPool.acquire({ uid: 900_005, gid: 900_005 });
    await assert.rejects(closedPool.openEgress(c), /no egress/);
    assert.match(await slotEgressGate(c.netnsName), /iifname "tap0" ip daddr != 10\.201\.0\.\d+ drop/);
    await closedPool.close();
    pool = new NetworkSlotPool(
      { ...config, egress: { enabled: true, uplink: "lo", dnsResolver: "10.0.0.2" } },
      execaRunner,
    );
    const a = await pool.acquire({ uid: 900_006, gid: 900_006 });
    const b = await pool.acquire({ uid: 900_007, gid: 900_007 });
    await pool.openEgress(a);
    assert.doesNotMatch(await slotEgressGate(a.netnsName), /drop/, "a's gate is open");
    assert.match(await slotEgressGate(b.netnsName), /ip daddr != \S+ drop/, "b's stays closed");
    await pool.release(a);
    await assert.rejects(pool.openEgress(a), /not leased/);
    assert.match(
      await slotEgressGate(a.netnsName),
      new RegExp(`iifname "tap0" ip daddr != ${a.hostAddress.replaceAll(".", "\\.")} drop`),
    );
    const again = await pool.acquire({ uid: 900_008, gid: 900_008 });
    assert.equal(again.index, a.index, "the slot is reused, closed");
  });

  it("a released slot ends the host's connections to it: a call in flight fails at once, not at its deadline", async () => {
    pool = new NetworkSlotPool(config, execaRunner);
    const a = await pool.acquire({ uid: 900_005, gid: 900_005 });
    // A guest that takes the call and never answers (a VM that died mid-call sends nothing either).
    await execa("ip", ["-n", a.netnsName, "addr", "add", `${a.guestAddress}/32`, "dev", "lo"]);
    const code = `require("node:net").createServer(() => {}).listen(8123, ${JSON.stringify(a.guestAddress)}, () => console.log("listening"));`;
    const guest = execa("ip", ["netns", "exec", a.netnsName, process.execPath, "-e", code]);
    guests.push(guest);
    await new Promise<void>((resolve, reject) => {
      guest.stdout?.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("listening")) resolve();
      });
      guest.catch(reject);
    });
    const call = fetch(`http://${a.cloneAddress}:8123/`, { signal: AbortSignal.timeout(20_000) }).then(
      () => "answered",
      (err: Error) => String((err.cause as Error | undefined)?.message ?? err.message),
    );
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await pool.release(a);
    const outcome = await call;
    assert.ok(Date.now() - t0 < 5_000, `the call ended ${Date.now() - t0} ms after the release`);
    assert.match(outcome, /ECONNABORTED|ECONNRESET|closed/, `the call failed on its connection: ${outcome}`);
  });

  it("the reclaim pass removes slots leaked by a crash and nothing else", async () => {
    await execa("ip", ["netns", "add", "fctest-5"]);
    // A host veth end whose peer never reached a namespace (a crash mid-build).
    await execa("ip", ["link", "add", "fctv-6", "type", "veth", "peer", "name", "fctvpeer6"]);
    await execa("ip", ["netns", "add", "fctestkeep"]);
    try {
      const removed = await new NetworkSlotPool(config, execaRunner).reclaim();
      assert.deepEqual(removed.sort(), ["fctest-5", "fctv-6"]);
      assert.ok((await netnsNames()).includes("fctestkeep"));
      assert.equal((await netnsNames()).includes("fctest-5"), false);
      assert.equal((await hostLinks()).includes("fctv-6"), false);
    } finally {
      await execa("ip", ["netns", "delete", "fctestkeep"], { reject: false });
    }
  });
});
