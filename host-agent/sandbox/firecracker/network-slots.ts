/**
 * Network slots: one network namespace per VM, so every clone keeps the tap name and guest IP it was
 * baked with. Per slot:
 *   netns `<netnsPrefix>-<i>`, holding
 *     - the tap (same name, MAC and address in every slot), owned by the VM's uid/gid so the jailed
 *       Firecracker can open it; recreated for each VM because a tap's owner cannot be changed;
 *     - `veth0`, the namespace end of a veth pair, with the slot's unique "clone address";
 *     - an nftables table: DNAT clone address -> guest IP (host reaches the guest), masquerade of the
 *       guest's traffic out of veth0 (egress);
 *   on the host the other veth end `<vethPrefix>-<i>`, with the slot's unique host address.
 * Slot i uses the /30 at hostSubnetBase + 4i: .1 on the host end, .2 (the clone address) in the netns.
 * Forwarding is enabled inside each namespace only; the host's own ip_forward is not touched.
 */
import type { CommandRunner } from "./command-runner.ts";
import type { NetworkSlotsConfig } from "./config.ts";

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
const NFT_TABLE = "snapfaas_slot";

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

/** The nftables ruleset loaded into a slot namespace. */
export function slotRuleset(slot: NetworkSlot): string {
  return [
    `table ip ${NFT_TABLE} {`,
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    `    iifname "${SLOT_VETH}" ip daddr ${slot.cloneAddress} dnat to ${slot.guestAddress}`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${SLOT_VETH}" ip saddr ${slot.guestAddress} masquerade`,
    "  }",
    "}",
    "",
  ].join("\n");
}

export class NetworkSlotPool {
  private readonly free: NetworkSlot[] = [];
  private readonly leased = new Map<number, NetworkSlot>();
  private building = new Set<number>();

  constructor(
    private readonly config: NetworkSlotsConfig,
    private readonly run: CommandRunner,
  ) {}

  /** Deletes every namespace and host veth with our prefixes: what a crashed agent left. */
  async reclaim(): Promise<string[]> {
    const removed: string[] = [];
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
        await this.run("ip", ["link", "delete", name]);
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
      await this.destroySlot(slot).catch(() => undefined);
      throw err;
    }
    return slot;
  }

  /** Takes the VM's tap away and puts the slot back in the pool. */
  async release(slot: NetworkSlot): Promise<void> {
    if (!this.leased.delete(slot.index)) return;
    try {
      await this.run("ip", ["-n", slot.netnsName, "link", "delete", slot.tapName]);
      this.free.push(slot);
    } catch {
      // A slot we cannot clean is not reused: delete it whole.
      await this.destroySlot(slot).catch(() => undefined);
    }
  }

  /** Deletes every slot this pool built. */
  async close(): Promise<void> {
    const all = [...this.free.splice(0), ...this.leased.values()];
    this.leased.clear();
    for (const slot of all) await this.destroySlot(slot).catch(() => undefined);
  }

  get freeCount(): number {
    return this.free.length;
  }

  get leasedCount(): number {
    return this.leased.size;
  }

  private nextIndex(): number {
    const taken = new Set([...this.free.map((s) => s.index), ...this.leased.keys(), ...this.building]);
    for (let i = 0; i < this.config.maxSlots; i++) if (!taken.has(i)) return i;
    throw new Error(`all ${this.config.maxSlots} network slots are in use`);
  }

  private async build(index: number): Promise<NetworkSlot> {
    const slot = describeSlot(this.config, index);
    this.building.add(index);
    try {
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
      await this.run("ip", ["netns", "exec", slot.netnsName, "nft", "-f", "-"], { input: slotRuleset(slot) });
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
