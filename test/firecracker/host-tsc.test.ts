/** The host's TSC rate for tsc_early_khz under TCG: which source wins, and what each parser accepts. */
import assert from "node:assert/strict";
import { hostTscKhz, tscKhzFromDmesg } from "../../host-agent/sandbox/firecracker/host-tsc.ts";

const CPUINFO = "processor\t: 0\ncpu MHz\t\t: 2445.406\n";
const DMESG =
  "[    0.000000] tsc: Detected 2100.000 MHz processor\n[    0.1] tsc: Refined TSC clocksource calibration: 2099.99 MHz\n";
const unreadable = () => {
  throw new Error("EPERM");
};

describe("host TSC rate", () => {
  it("reads the kernel's boot-time 'tsc: Detected' line", () => {
    assert.equal(tscKhzFromDmesg(DMESG), 2_100_000);
    assert.equal(tscKhzFromDmesg("[ 0.0] Linux version 6.1\n"), undefined);
  });

  it("prefers dmesg over the current clock in /proc/cpuinfo, and falls back when dmesg is unreadable or silent", () => {
    assert.equal(hostTscKhz({ dmesg: () => DMESG, cpuinfo: () => CPUINFO }), 2_100_000);
    assert.equal(hostTscKhz({ dmesg: unreadable, cpuinfo: () => CPUINFO }), 2_445_406);
    assert.equal(hostTscKhz({ dmesg: () => "", cpuinfo: () => CPUINFO }), 2_445_406);
    assert.equal(hostTscKhz({ dmesg: unreadable, cpuinfo: unreadable }), undefined);
    assert.equal(hostTscKhz({ dmesg: () => "", cpuinfo: () => "processor\t: 0\n" }), undefined);
  });

  it("reads this host's TSC rate", () => {
    const khz = hostTscKhz();
    assert.ok(khz !== undefined && Number.isInteger(khz) && khz > 100_000 && khz < 10_000_000, String(khz));
  });
});
