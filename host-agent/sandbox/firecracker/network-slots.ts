/**
 * Network slots: one network namespace per VM, so every clone keeps the tap name and guest IP it was
 * baked with. Per slot:
 *   netns `<netnsPrefix>-<i>`, holding
 *     - the tap (same name, MAC and address in every slot), owned by the VM's uid/gid so the jailed
 *       Firecracker can open it; recreated for each VM because a tap's owner cannot be changed;
 *     - `veth0`, the namespace end of a veth pair, with the slot's unique "clone address";
 *     - an nftables table: DNAT clone address -> guest IP (host reaches the guest), new connections
 *       into the slot refused unless they come from the slot's host address (no other guest reaches
 *       this one), masquerade of the guest's traffic out of veth0, and with egress on, the guest's DNS
 *       (to its gateway) DNATed to the configured resolver;
 *     - the egress gate: a forward chain that drops everything the guest sends anywhere but its slot's
 *       host address (the answers to the host's calls). A generic clone does not know its function
 *       yet, so every slot starts closed; openEgress() empties the gate when the clone is specialized
 *       for a function with egress, and release() closes it again before the slot is reused;
 *   on the host the other veth end `<vethPrefix>-<i>`, with the slot's unique host address.
 * On the host, one table for all slots (hostRuleset): nothing is forwarded from one slot to another,
 * guests open no connection to the host itself (sshd, the data plane), and guests' traffic leaves by
 * the uplink, masqueraded, only when egress is enabled.
 * Slot i uses the /30 at hostSubnetBase + 4i: .1 on the host end, .2 (the clone address) in the netns.
 * Forwarding is enabled inside each namespace; the host's own ip_forward is the host bootstrap's.
 */

import type { NetworkSlotsConfig } from "../../../contracts/firecracker-driver-config.ts";
import { CommandError, type CommandRunner } from "../command-runner.ts";
import { guestForwardRules, guestInputRules, uplinkMasqueradeChain } from "../egress-rules.ts";
import { foreignForwardDrop, IP_FORWARD_OFF, readIpForward } from "../host-uplink.ts";

export interface NetworkSlot {
  readonly index: number;
  readonly netnsName: string;
  /** What the jailer's --netns takes. */
  readonly netnsPath: string;
  readonly hostVeth: string;
  readonly hostAddress: string;
  /** Unique per slot; the host reaches the guest at this address (DNAT to the guest IP). */
  readonly cloneAddress: string;
  readonly tapName: string;
  readonly guestAddress: string;
}

export interface SlotOwner {
  readonly uid: number;
  readonly gid: number;
}

/** The veth end inside every slot namespace. */
export const SLOT_VETH = "veth0";
/** The nftables table in every slot namespace, and its egress gate chain. */
export const NFT_TABLE = "snapfaas_slot";
export const EGRESS_GATE = "egress_gate";

function ipToInt(ip: string): number {
  return ip.split(".").reduce((acc, part) => acc * 256 + Number(part), 0);
}

function intToIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join(".");
}

/** Names and addresses of slot `index`; pure, so tests and the reclaim pass agree with the builder. */
export function describeSlot(config: NetworkSlotsConfig, index: number): NetworkSlot {
  if (!Number.isInteger(index) || index < 0 || index >= config.maxSlots)
    throw new Error(`slot index out of range: ${index}`);
  const subnet = ipToInt(config.hostSubnetBase) + 4 * index;
  const netnsName = `${config.netnsPrefix}-${index}`;
  return {
    index,
    netnsName,
    netnsPath: `/var/run/netns/${netnsName}`,
    hostVeth: `${config.vethPrefix}-${index}`,
    hostAddress: intToIp(subnet + 1),
    cloneAddress: intToIp(subnet + 2),
    tapName: config.tapName,
    guestAddress: config.guestAddress,
  };
}

/** What the slot and host rules need to know about egress (NetworkSlotsConfig["egress"]). */
export interface EgressPolicy {
  readonly enabled: boolean;
  readonly uplink: string;
  readonly dnsResolver: string;
}

const NO_EGRESS: EgressPolicy = { enabled: false, uplink: "eth0", dnsResolver: "169.254.169.253" };

/** The nftables ruleset loaded into a slot namespace. `tapAddress` is the guest's gateway (its DNS). */
export function slotRuleset(
  slot: NetworkSlot,
  egress: EgressPolicy = NO_EGRESS,
  tapAddress = "172.16.0.1",
): string {
  const dns = egress.enabled
    ? [
        `    iifname "${slot.tapName}" ip daddr ${tapAddress} udp dport 53 dnat to ${egress.dnsResolver}`,
        `    iifname "${slot.tapName}" ip daddr ${tapAddress} tcp dport 53 dnat to ${egress.dnsResolver}`,
      ]
    : [];
  return [
    `table ip ${NFT_TABLE} {`,
    "  chain ingress_guard {",
    // Before DNAT, so it sees the clone address; conntrack has run, so replies to the guest pass.
    "    type filter hook prerouting priority -150; policy accept;",
    `    iifname "${SLOT_VETH}" ct state new ip saddr != ${slot.hostAddress} drop`,
    "  }",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    iifname "${SLOT_VETH}" ip daddr ${slot.cloneAddress} dnat to ${slot.guestAddress}`,
    ...dns,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${SLOT_VETH}" ip saddr ${slot.guestAddress} masquerade`,
    "  }",
    `  chain ${EGRESS_GATE} {`,
    "    type filter hook forward priority filter; policy accept;",
    closedGateRule(slot),
    "  }",
    "}",
    "",
  ].join("\n");
}

/**
 * The closed gate's one rule: whatever the guest sends goes nowhere but to its slot's host address (the
 * answers to the host's calls; a new connection to the host itself is refused by the host's rules).
 * It matches on addresses, not connection state, so a connection an earlier function opened through
 * an open gate cannot go on through this slot's next guest.
 */
function closedGateRule(slot: NetworkSlot): string {
  return `    iifname "${slot.tapName}" ip daddr != ${slot.hostAddress} drop`;
}

/** nft input that opens (empties) or closes a slot's egress gate, in one transaction. */
export function egressGateCommand(slot: NetworkSlot, open: boolean): string {
  const chain = `ip ${NFT_TABLE} ${EGRESS_GATE}`;
  return open
    ? `flush chain ${chain}\n`
    : `flush chain ${chain}\nadd rule ${chain} ${closedGateRule(slot).trim()}\n`;
}

/** The host table's name: one per veth prefix, so a test's slots never touch a real agent's. */
export function hostTableName(config: Pick<NetworkSlotsConfig, "vethPrefix">): string {
  return `snapfaas_${config.vethPrefix}`;
}

/** The host's nftables table for every slot: no slot-to-slot forwarding, no guest-to-host connections. */
export function hostRuleset(
  config: Pick<NetworkSlotsConfig, "vethPrefix" | "hostSubnetBase" | "egress">,
): string {
  const veths = `"${config.vethPrefix}-*"`;
  const egress = config.egress.enabled ? config.egress : undefined;
  return [
    `table ip ${hostTableName(config)} {`,
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    ...guestForwardRules(veths, egress),
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    ...guestInputRules(veths),
    "  }",
    ...(egress ? uplinkMasqueradeChain(egress.uplink, `${config.hostSubnetBase}/16`) : []),
    "}",
    "",
  ].join("\n");
}

export class NetworkSlotPool {
  private readonly free: NetworkSlot[] = [];
  private readonly leased = new Map<number, NetworkSlot>();
  private building = new Set<number>();
  /** Indexes whose slot is being cleaned after its lease (see retire()). */
  private readonly retiring = new Set<number>();
  /** Leased slots whose egress gate is open (closed again at release). */
  private readonly egressOpen = new Set<number>();
  private hostRulesLoaded = false;

  constructor(
    private readonly config: NetworkSlotsConfig,
    private readonly run: CommandRunner,
  ) {}

  /** Deletes every namespace and host veth with our prefixes: what a crashed agent left. */
  async reclaim(): Promise<string[]> {
    const removed: string[] = [];
    // The host table is rebuilt with the first slot (a crashed agent's may hold an older policy).
    await this.deleteHostRules();
    const netnsPattern = new RegExp(`^${this.config.netnsPrefix}-\\d+$`);
    const { stdout: nsList } = await this.run("ip", ["netns", "list"]);
    for (const line of nsList.split("\n")) {
      const name = line.trim().split(/\s+/)[0];
      if (name && netnsPattern.test(name)) {
        await this.run("ip", ["netns", "delete", name]);
        removed.push(name);
      }
    }
    // A veth whose namespace end was never moved (crash mid-build) survives the netns deletion.
    const vethPattern = new RegExp(`^${this.config.vethPrefix}-\\d+$`);
    const { stdout: links } = await this.run("ip", ["-o", "link", "show"]);
    for (const line of links.split("\n")) {
      const name = line.split(":")[1]?.trim().split("@")[0];
      if (name && vethPattern.test(name)) {
        // The kernel tears a deleted netns down in the background, taking its veth pair with it: a veth
        // listed a moment ago may be gone by now, which is what this wanted.
        await this.run("ip", ["link", "delete", name]).catch((err: unknown) => {
          if (!(err instanceof CommandError && /Cannot find device/.test(err.stderr))) throw err;
        });
        removed.push(name);
      }
    }
    return removed;
  }

  /** Builds slots until `poolSize` are free, so acquiring one costs only the tap. */
  async fill(): Promise<void> {
    while (this.free.length < this.config.poolSize) this.free.push(await this.build(this.nextIndex()));
  }

  /** A ready slot whose tap the given VM user can open. Builds one when none is free. */
  async acquire(owner: SlotOwner): Promise<NetworkSlot> {
    const slot = this.free.shift() ?? (await this.build(this.nextIndex()));
    this.leased.set(slot.index, slot);
    try {
      await this.createTap(slot, owner);
    } catch (err) {
      this.leased.delete(slot.index);
      await this.retire(slot, () => this.destroySlot(slot).catch(() => undefined));
      throw err;
    }
    return slot;
  }

  /**
   * Lets a leased slot's guest out (NAT to the uplink, DNS to the resolver): its clone now serves a
   * function with egress. Refused when the host offers no egress (config.egress.enabled off).
   */
  async openEgress(slot: NetworkSlot): Promise<void> {
    if (!this.config.egress.enabled) throw new Error("this host's microVM network has no egress");
    if (!this.leased.has(slot.index)) throw new Error(`slot ${slot.index} is not leased`);
    this.egressOpen.add(slot.index);
    await this.setGate(slot, true);
  }

  /** What keeps guests' traffic from leaving, with egress offered: ip_forward off, another firewall's drop. */
  async egressProblems(): Promise<string[]> {
    const problems: string[] = [];
    if ((await readIpForward())?.trim() !== "1") problems.push(IP_FORWARD_OFF);
    const dropped = await foreignForwardDrop(
      this.run,
      [hostTableName(this.config), NFT_TABLE],
      [this.config.vethPrefix],
    );
    if (dropped) problems.push(dropped);
    return problems;
  }

  private async setGate(slot: NetworkSlot, open: boolean): Promise<void> {
    await this.run("ip", ["netns", "exec", slot.netnsName, "nft", "-f", "-"], {
      input: egressGateCommand(slot, open),
    });
  }

  /**
   * Takes the VM's tap away, ends the host's connections to the slot and puts the slot back in the
   * pool. A VM that dies sends no reset: without this, a call in flight to it waits for an answer
   * that cannot come until its deadline, and a keep-alive connection would be reused by the slot's
   * next VM. (`ss -K` needs the host kernel's INET_DIAG_DESTROY; without it the call still ends at
   * its deadline.)
   */
  async release(slot: NetworkSlot): Promise<void> {
    if (!this.leased.delete(slot.index)) return;
    await this.retire(slot, async () => {
      try {
        await this.run("ip", ["-n", slot.netnsName, "link", "delete", slot.tapName]);
        if (this.egressOpen.delete(slot.index)) await this.setGate(slot, false);
        this.free.push(slot);
      } catch {
        // A slot we cannot clean (or close) is not reused: delete it whole.
        this.egressOpen.delete(slot.index);
        await this.destroySlot(slot).catch(() => undefined);
      }
    });
    await this.run("ss", ["-K", "-t", "dst", slot.cloneAddress]).catch(() => undefined);
  }

  /**
   * Runs the cleanup of a slot no longer leased with its index still taken: a start meanwhile must not
   * build the same index over a namespace that is still being deleted (or have it deleted under it).
   */
  private async retire(slot: NetworkSlot, cleanup: () => Promise<void>): Promise<void> {
    this.retiring.add(slot.index);
    try {
      await cleanup();
    } finally {
      this.retiring.delete(slot.index);
    }
  }

  /** Deletes every slot this pool built. */
  async close(): Promise<void> {
    const all = [...this.free.splice(0), ...this.leased.values()];
    this.leased.clear();
    for (const slot of all) await this.destroySlot(slot).catch(() => undefined);
    await this.deleteHostRules().catch(() => undefined);
  }

  /** Loads (or replaces) the host table; runs before the first slot's veth exists. */
  private async loadHostRules(): Promise<void> {
    if (this.hostRulesLoaded) return;
    const table = `ip ${hostTableName(this.config)}`;
    // Declaring then deleting makes the load replace an existing table in one transaction.
    await this.run("nft", ["-f", "-"], {
      input: `table ${table}\ndelete table ${table}\n${hostRuleset(this.config)}`,
    });
    this.hostRulesLoaded = true;
  }

  private async deleteHostRules(): Promise<void> {
    this.hostRulesLoaded = false;
    const table = `ip ${hostTableName(this.config)}`;
    await this.run("nft", ["-f", "-"], { input: `table ${table}\ndelete table ${table}\n` });
  }

  get freeCount(): number {
    return this.free.length;
  }

  get leasedCount(): number {
    return this.leased.size;
  }

  private nextIndex(): number {
    const taken = new Set([
      ...this.free.map((s) => s.index),
      ...this.leased.keys(),
      ...this.building,
      ...this.retiring,
    ]);
    for (let i = 0; i < this.config.maxSlots; i++) if (!taken.has(i)) return i;
    throw new Error(`all ${this.config.maxSlots} network slots are in use`);
  }

  private async build(index: number): Promise<NetworkSlot> {
    const slot = describeSlot(this.config, index);
    this.building.add(index);
    try {
      await this.loadHostRules();
      await this.run("ip", ["netns", "add", slot.netnsName]);
      await this.run("ip", [
        "link",
        "add",
        slot.hostVeth,
        "type",
        "veth",
        "peer",
        "name",
        SLOT_VETH,
        "netns",
        slot.netnsName,
      ]);
      await this.run("ip", ["addr", "add", `${slot.hostAddress}/30`, "dev", slot.hostVeth]);
      await this.run("ip", ["link", "set", slot.hostVeth, "up"]);
      await this.run("ip", ["-n", slot.netnsName, "-batch", "-"], {
        input: [
          "link set lo up",
          `addr add ${slot.cloneAddress}/30 dev ${SLOT_VETH}`,
          `link set ${SLOT_VETH} up`,
          `route add default via ${slot.hostAddress} dev ${SLOT_VETH}`,
          "",
        ].join("\n"),
      });
      await this.run("ip", ["netns", "exec", slot.netnsName, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
      await this.run("ip", ["netns", "exec", slot.netnsName, "nft", "-f", "-"], {
        input: slotRuleset(slot, this.config.egress, this.config.tapAddress),
      });
      return slot;
    } catch (err) {
      await this.destroySlot(slot).catch(() => undefined);
      throw err;
    } finally {
      this.building.delete(index);
    }
  }

  private async createTap(slot: NetworkSlot, owner: SlotOwner): Promise<void> {
    const prefix = `${this.config.tapAddress}/${this.config.linkPrefixLength}`;
    await this.run("ip", ["-n", slot.netnsName, "-batch", "-"], {
      input: [
        `tuntap add name ${slot.tapName} mode tap user ${owner.uid} group ${owner.gid}`,
        `link set ${slot.tapName} address ${this.config.tapMac}`,
        `addr add ${prefix} dev ${slot.tapName}`,
        `link set ${slot.tapName} up`,
        "",
      ].join("\n"),
    });
  }

  private async destroySlot(slot: NetworkSlot): Promise<void> {
    // Deleting the namespace deletes veth0 and with it the host end; the explicit delete covers a
    // half-built slot whose peer never reached the namespace.
    await this.run("ip", ["netns", "delete", slot.netnsName]).catch(() => undefined);
    await this.run("ip", ["link", "delete", slot.hostVeth]).catch(() => undefined);
  }
}
