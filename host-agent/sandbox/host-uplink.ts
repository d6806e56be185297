/**
 * What the host offers sandboxes a way out with, read from the host itself: the uplink (the interface
 * of its default route), the resolver (the first nameserver sandboxes can reach) and whether the
 * kernel forwards at all. One home for both drivers: the process sandbox's egress links
 * (process/egress.ts) and the local microVM platform's slots (cli/local-vm-base.ts, then the
 * firecracker driver's egressProblems()).
 */
import { readFile } from "node:fs/promises";
import type { CommandRunner } from "./firecracker/command-runner.ts";

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
