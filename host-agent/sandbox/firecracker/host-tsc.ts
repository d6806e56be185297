/**
 * The host's TSC rate in kHz. A Linux guest under QEMU's TCG has no HPET or PM timer on `microvm` to
 * calibrate its TSC against, and its TSC ticks at the host's rate, so it is told that rate with
 * `tsc_early_khz=` (../shared/research/microvm-lane/README.md). The kernel's own boot-time
 * "tsc: Detected" line is preferred: /proc/cpuinfo's "cpu MHz" is the current clock, which frequency
 * scaling moves, and is only the fallback when dmesg is unreadable (dmesg_restrict) or has rotated.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** The rate from dmesg text ("tsc: Detected 2445.406 MHz processor"); undefined when the line is absent. */
export function tscKhzFromDmesg(dmesg: string): number | undefined {
  const match = /tsc: Detected ([0-9]+(?:\.[0-9]+)?) MHz/.exec(dmesg);
  return match ? positiveKhz(match[1]!) : undefined;
}

/** The rate from /proc/cpuinfo text (`cpu MHz`); undefined when it says nothing. */
export function tscKhzFromCpuinfo(cpuinfo: string): number | undefined {
  const match = /^cpu MHz\s*:\s*([0-9]+(?:\.[0-9]+)?)/m.exec(cpuinfo);
  return match ? positiveKhz(match[1]!) : undefined;
}

function positiveKhz(mhz: string): number | undefined {
  const khz = Math.round(Number(mhz) * 1000);
  return khz > 0 ? khz : undefined;
}

export interface HostTscSources {
  /** The kernel log; throws when unreadable. */
  readonly dmesg: () => string;
  /** /proc/cpuinfo; throws when unreadable. */
  readonly cpuinfo: () => string;
}

const HOST_SOURCES: HostTscSources = {
  dmesg: () =>
    execFileSync("dmesg", { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 5_000 }),
  cpuinfo: () => readFileSync("/proc/cpuinfo", "utf8"),
};

/** The host's TSC rate in kHz (dmesg, else /proc/cpuinfo); undefined when neither tells it. */
export function hostTscKhz(sources: HostTscSources = HOST_SOURCES): number | undefined {
  return (
    attempt(() => tscKhzFromDmesg(sources.dmesg())) ?? attempt(() => tscKhzFromCpuinfo(sources.cpuinfo()))
  );
}

function attempt(read: () => number | undefined): number | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}
