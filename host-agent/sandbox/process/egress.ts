/**
 * Per-function egress for the process sandbox. Every jail starts in an empty network namespace of its
 * own (bwrap --unshare-net: only a loopback). A function with egress gets, when an instance is
 * specialized for it and before its code loads, a veth pair into that very namespace:
 *   jail end `eth0` with the link's jail address and a default route to the host end;
 *   host end `<vethPrefix>-<i>` with the link's host address (no IPv6: no link-local way to the host);
 *   in the jail's namespace, a small nftables table sending DNS to the loopback (where glibc and c-ares
 *   look when there is no /etc/resolv.conf, as in the base's root) on to the host's resolver.
 * On the host, one table for the agent: nothing between jails, nothing new into a jail, nothing to the
 * host itself (any address or port: the agent's planes, sshd, and 127.0.0.0/8, which a jail's own
 * loopback shadows anyway), no link-local (metadata) but the resolver, no IPv6, and out of the uplink
 * only, masqueraded.
 * The link goes away with the jail: the kernel deletes a veth whose namespace dies, and the driver
 * deletes the host end when the instance ends. Names come from the state folder (like the local
 * microVMs'), so two agents never reclaim each other's links; the reclaim pass at start removes links
 * and the table a crashed agent left.
 *
 * Why the generic instance's own namespace rather than a pool of ready-made ones: warm generic instances
 * are started before their function is known, and a namespace cannot be swapped under a running jail,
 * while a veth can be moved into it. So every generic instance stays exactly as it was (no network), and
 * an egress function still takes a warm one. Measured on the 2-core development machine under a load
 * average of 9: making the link takes about 100 ms (median of 8; two process runs: `ip -batch` on the
 * host, `nsenter` with `ip` and `nft` in the jail), against about 400 ms for a jail start, which an
 * instance started for the function would cost on top of its load.
 */
import { createHash } from "node:crypto";
import path from "node:path";
import type { CommandRunner } from "../command-runner.ts";
import { guestForwardRules, guestInputRules, uplinkMasqueradeChain } from "../egress-rules.ts";
import {
  defaultUplink,
  foreignForwardDrop,
  hostResolver,
  IP_FORWARD_OFF,
  readIpForward,
} from "../host-uplink.ts";

/** The jail's end of its link. */
export const JAIL_LINK = "eth0";
/** Links per agent: the /30s of its /24. */
export const EGRESS_LINKS = 64;
/**
 * Run in the jail's namespace (its /proc/sys/net is the namespace's): route_localnet on the link, for
 * the DNATed DNS from the loopback; then $1, an `ip -batch` script, and $2, an nftables ruleset.
 */
const JAIL_SETUP_SCRIPT = `echo 1 > /proc/sys/net/ipv4/conf/${JAIL_LINK}/route_localnet && printf "%s" "$1" | ip -batch - && printf "%s" "$2" | nft -f -`;
/** The jail-side table that sends the loopback's DNS to the resolver. */
const JAIL_TABLE = "faas_dns";

export interface EgressNames {
  /** Host ends are `<vethPrefix>-<index>`. */
  readonly vethPrefix: string;
  /** The host's nftables table (family inet). */
  readonly table: string;
  /** The /24 links are carved from, as "a.b.c.0". */
  readonly subnetBase: string;
}

/** The names and the /24 of one agent's links, from its state folder (or a /24 it was given). */
export function egressNames(stateDir: string, subnet?: string): EgressNames {
  const tag = createHash("sha256").update(path.resolve(stateDir)).digest("hex").slice(0, 5);
  const vethPrefix = `fe${tag}`;
  return {
    vethPrefix,
    table: `snapfaas_${vethPrefix}`,
    subnetBase: subnet ? subnet.replace(/\/24$/, "") : `10.207.${Number.parseInt(tag, 16) % 256}.0`,
  };
}

export interface EgressLink {
  readonly index: number;
  readonly hostVeth: string;
  readonly hostAddress: string;
  readonly jailAddress: string;
}

/** Link `index`: the /30 at subnet + 4 * index, .1 on the host end and .2 in the jail. Pure. */
export function describeLink(names: EgressNames, index: number): EgressLink {
  if (!Number.isInteger(index) || index < 0 || index >= EGRESS_LINKS)
    throw new Error(`egress link index out of range: ${index}`);
  const prefix = names.subnetBase.split(".").slice(0, 3).join(".");
  return {
    index,
    hostVeth: `${names.vethPrefix}-${index}`,
    hostAddress: `${prefix}.${4 * index + 1}`,
    jailAddress: `${prefix}.${4 * index + 2}`,
  };
}

export interface EgressRoute {
  readonly uplink: string;
  readonly dnsResolver: string;
}

/** The host's table for every link of one agent. Pure. */
export function hostEgressRuleset(names: EgressNames, route: EgressRoute): string {
  const veths = `"${names.vethPrefix}-*"`;
  return [
    `table inet ${names.table} {`,
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    // Replies to a jail's own connections come back; nothing else starts one towards a jail.
    `    oifname ${veths} ct state established,related accept`,
    `    oifname ${veths} drop`,
    `    iifname ${veths} meta nfproto ipv6 drop`,
    `    iifname ${veths} ip daddr 127.0.0.0/8 drop`,
    ...guestForwardRules(veths, route),
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy accept;",
    ...guestInputRules(veths),
    // Not even a stray packet: a jail has no business with the host itself.
    `    iifname ${veths} drop`,
    "  }",
    "  chain output {",
    "    type filter hook output priority filter; policy accept;",
    `    oifname ${veths} ct state new drop`,
    "  }",
    ...uplinkMasqueradeChain(route.uplink, `${names.subnetBase}/24`),
    "}",
    "",
  ].join("\n");
}

/**
 * The jail namespace's table: DNS sent to the loopback goes to the resolver, from the link's address
 * (a loopback source cannot leave; the link has route_localnet for the DNATed packets). Pure.
 */
export function jailDnsRuleset(dnsResolver: string): string {
  return [
    `table ip ${JAIL_TABLE} {`,
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    `    ip daddr 127.0.0.0/8 udp dport 53 dnat to ${dnsResolver}`,
    `    ip daddr 127.0.0.0/8 tcp dport 53 dnat to ${dnsResolver}`,
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "${JAIL_LINK}" ip saddr 127.0.0.0/8 masquerade`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/** What the host offers egress with, read when it is needed. */
export interface EgressHostFacts {
  readonly isRoot: boolean;
  readonly has: (tool: string) => boolean;
  /** /proc/sys/net/ipv4/ip_forward, undefined when unreadable. */
  readonly ipForward: string | undefined;
  readonly uplink: string | undefined;
  readonly dnsResolver: string | undefined;
  /** Another firewall's forward chain that drops the links' traffic (host-uplink.ts), when there is one. */
  readonly foreignForwardDrop?: string | undefined;
}

/** What the host lacks for egress, one phrase each with its fix; empty when it has it all. Pure. */
export function egressHostProblems(facts: EgressHostFacts): string[] {
  const problems: string[] = [];
  if (!facts.isRoot) problems.push("the agent does not run as root (egress links need CAP_NET_ADMIN)");
  const missing = [
    ["ip", "iproute2"],
    ["nft", "nftables"],
    ["nsenter", "util-linux"],
  ].filter(([tool]) => !facts.has(tool!));
  if (missing.length > 0) {
    problems.push(
      `${missing.map(([t]) => t).join(", ")} not installed (apt-get install -y ${[...new Set(missing.map(([, p]) => p))].join(" ")})`,
    );
  }
  if (facts.ipForward?.trim() !== "1") problems.push(IP_FORWARD_OFF);
  if (!facts.uplink)
    problems.push("the host has no default route (or set FAAS_EGRESS_UPLINK to the interface out)");
  if (facts.foreignForwardDrop) problems.push(facts.foreignForwardDrop);
  if (!facts.dnsResolver) {
    problems.push(
      "no non-loopback nameserver in /etc/resolv.conf or /run/systemd/resolve/resolv.conf (set FAAS_EGRESS_DNS)",
    );
  }
  return problems;
}

export interface ProcessEgressOptions {
  readonly names: EgressNames;
  readonly run: CommandRunner;
  readonly isRoot: boolean;
  readonly has: (tool: string) => boolean;
  /** Overrides of what the host's routes and resolv.conf say (FAAS_EGRESS_UPLINK, FAAS_EGRESS_DNS). */
  readonly uplink?: string | undefined;
  readonly dnsResolver?: string | undefined;
}

/** One agent's egress links: allocated per instance, the host table loaded with the first one. */
export class ProcessEgress {
  private readonly used = new Set<number>();
  private route: EgressRoute | undefined;
  private tableLoaded: Promise<void> | undefined;

  constructor(private readonly opts: ProcessEgressOptions) {}

  get names(): EgressNames {
    return this.opts.names;
  }

  private async facts(): Promise<EgressHostFacts> {
    const uplink = this.opts.uplink ?? (this.opts.has("ip") ? await defaultUplink(this.opts.run) : undefined);
    const dnsResolver = this.opts.dnsResolver ?? (await hostResolver());
    return {
      isRoot: this.opts.isRoot,
      has: this.opts.has,
      ipForward: await readIpForward(),
      ...(this.opts.isRoot && this.opts.has("nft")
        ? {
            foreignForwardDrop: await foreignForwardDrop(
              this.opts.run,
              [this.names.table],
              [this.names.vethPrefix],
            ),
          }
        : {}),
      uplink,
      dnsResolver,
    };
  }

  /** What the host lacks for egress now (read fresh each time: a sysctl may change under the agent). */
  async problems(): Promise<string[]> {
    const facts = await this.facts();
    const problems = egressHostProblems(facts);
    if (problems.length === 0) this.route = { uplink: facts.uplink!, dnsResolver: facts.dnsResolver! };
    return problems;
  }

  /** Deletes the table and every link with this agent's names: what a crashed agent left. */
  async reclaim(): Promise<number> {
    if (!this.opts.isRoot || !this.opts.has("ip") || !this.opts.has("nft")) return 0;
    let removed = 0;
    const { stdout: tables } = await this.opts.run("nft", ["list", "tables"]);
    if (tables.split("\n").some((l) => l.trim() === `table inet ${this.names.table}`)) {
      await this.opts.run("nft", ["delete", "table", "inet", this.names.table]);
      removed++;
    }
    const pattern = new RegExp(`^${this.names.vethPrefix}-\\d+$`);
    const { stdout: links } = await this.opts.run("ip", ["-o", "link", "show"]);
    for (const line of links.split("\n")) {
      const name = line.split(":")[1]?.trim().split("@")[0];
      if (name && pattern.test(name)) {
        await this.opts.run("ip", ["link", "delete", name]).catch(() => undefined);
        removed++;
      }
    }
    return removed;
  }

  private loadTable(): Promise<void> {
    this.tableLoaded ??= (async () => {
      if (!this.route) {
        const problems = await this.problems();
        if (problems.length > 0) throw new Error(`egress is not available: ${problems.join("; ")}`);
      }
      const table = `inet ${this.names.table}`;
      // Declaring then deleting makes the load replace a table left from before in one transaction.
      await this.opts.run("nft", ["-f", "-"], {
        input: `table ${table}\ndelete table ${table}\n${hostEgressRuleset(this.names, this.route!)}`,
      });
    })().catch((err) => {
      this.tableLoaded = undefined;
      throw err;
    });
    return this.tableLoaded;
  }

  /** A link into the network namespace of process `jailPid` (a jail's), with DNS and a default route. */
  async open(jailPid: number): Promise<EgressLink> {
    await this.loadTable();
    const index = [...Array(EGRESS_LINKS).keys()].find((i) => !this.used.has(i));
    if (index === undefined) throw new Error(`all ${EGRESS_LINKS} egress links of this agent are in use`);
    this.used.add(index);
    const link = describeLink(this.names, index);
    const run = this.opts.run;
    try {
      // Two runs, not six: each costs a process start, and this is on a cold call's path. No IPv6
      // link-local address on either end (addrgenmode none, before up): no way to the host's fe80.
      await run("ip", ["-batch", "-"], {
        input: [
          `link add ${link.hostVeth} type veth peer name ${JAIL_LINK} netns ${jailPid}`,
          `link set ${link.hostVeth} addrgenmode none`,
          `addr add ${link.hostAddress}/30 dev ${link.hostVeth}`,
          `link set ${link.hostVeth} up`,
          "",
        ].join("\n"),
      });
      await run("nsenter", [
        `--net=/proc/${jailPid}/ns/net`,
        "/bin/sh",
        "-c",
        JAIL_SETUP_SCRIPT,
        "faas-egress",
        [
          `link set ${JAIL_LINK} addrgenmode none`,
          `addr add ${link.jailAddress}/30 dev ${JAIL_LINK}`,
          `link set ${JAIL_LINK} up`,
          `route add default via ${link.hostAddress} dev ${JAIL_LINK}`,
          "",
        ].join("\n"),
        jailDnsRuleset(this.route!.dnsResolver),
      ]);
    } catch (err) {
      await this.release(link);
      throw err;
    }
    return link;
  }

  /** Deletes the host end (and with it the jail's) and frees the link's addresses. */
  async release(link: EgressLink): Promise<void> {
    await this.opts.run("ip", ["link", "delete", link.hostVeth]).catch(() => undefined);
    this.used.delete(link.index);
  }

  /** Deletes the host table (links are released with their instances). */
  async close(): Promise<void> {
    const loaded = this.tableLoaded;
    this.tableLoaded = undefined;
    if (!loaded) return;
    await loaded.catch(() => undefined);
    await this.opts.run("nft", ["delete", "table", "inet", this.names.table]).catch(() => undefined);
  }
}
