/**
 * What the host offers sandboxes a way out with, read from the host itself: the uplink (the interface
 * of its default route), the resolver (the first nameserver sandboxes can reach) and whether the
 * kernel forwards at all. One home for both drivers: the process sandbox's egress links
 * (process/egress.ts) and the local microVM platform's slots (cli/local-vm-base.ts, then the
 * firecracker driver's egressProblems()).
 */
import { readFile } from "node:fs/promises";
import type { CommandRunner } from "./command-runner.ts";

/** The phrase both drivers give when the kernel does not forward, with its fix. */
export const IP_FORWARD_OFF = "net.ipv4.ip_forward is off (sysctl -w net.ipv4.ip_forward=1)";

const read = (file: string) => readFile(file, "utf8").catch(() => undefined);

/** /proc/sys/net/ipv4/ip_forward as read now (undefined when unreadable). */
export function readIpForward(): Promise<string | undefined> {
  return read("/proc/sys/net/ipv4/ip_forward");
}

/** The first IPv4 nameserver of resolv.conf text that is not on the loopback (sandboxes cannot reach it). */
export function resolverOf(resolvConf: string): string | undefined {
  for (const line of resolvConf.split("\n")) {
    const m = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/.exec(line);
    if (m && !m[1]!.startsWith("127.")) return m[1];
  }
  return undefined;
}

/** The host's resolver for sandboxes: resolv.conf, or systemd-resolved's upstream list behind 127.0.0.53. */
export async function hostResolver(): Promise<string | undefined> {
  return (
    resolverOf((await read("/etc/resolv.conf")) ?? "") ??
    resolverOf((await read("/run/systemd/resolve/resolv.conf")) ?? "")
  );
}

/** The interface of the host's IPv4 default route, when it has one. */
export async function defaultUplink(run: CommandRunner): Promise<string | undefined> {
  const out = await run("ip", ["-o", "-4", "route", "show", "default"]).catch(() => undefined);
  return /\bdev (\S+)/.exec(out?.stdout ?? "")?.[1];
}

interface NftChain {
  readonly family: string;
  readonly table: string;
  readonly name: string;
  readonly hook?: string;
  readonly policy?: string;
}

/**
 * Another table's forward chain that drops by default (Docker's iptables FORWARD policy, seen through
 * iptables-nft): every base chain on the hook must accept a packet, so sandboxes' egress would go
 * nowhere while our own table lets it out. A chain with a rule naming one of `interfacePrefixes` is taken
 * as handled. One phrase with the fix, or undefined. Rules of iptables-legacy are not visible here.
 */
export async function foreignForwardDrop(
  run: CommandRunner,
  ownTables: readonly string[],
  interfacePrefixes: readonly string[],
): Promise<string | undefined> {
  const listed = await run("nft", ["-j", "list", "chains"]).catch(() => undefined);
  if (!listed) return undefined;
  const chains = (JSON.parse(listed.stdout) as { nftables: Array<{ chain?: NftChain }> }).nftables
    .map((item) => item.chain)
    .filter(
      (c): c is NftChain => c?.hook === "forward" && c.policy === "drop" && !ownTables.includes(c.table),
    );
  for (const chain of chains) {
    const rules = await run("nft", ["-j", "list", "chain", chain.family, chain.table, chain.name]);
    if (interfacePrefixes.some((prefix) => rules.stdout.includes(`"${prefix}`))) continue;
    const where = `${chain.family} ${chain.table} ${chain.name}`;
    const prefix = interfacePrefixes[0] ?? "";
    return `the forward chain ${where} drops forwarded traffic by default (as Docker's FORWARD policy does), so sandboxes' egress goes nowhere (nft insert rule ${where} iifname "${prefix}*" accept; nft insert rule ${where} oifname "${prefix}*" ct state established,related accept)`;
  }
  return undefined;
}
