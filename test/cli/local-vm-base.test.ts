import assert from "node:assert/strict";
import { join } from "node:path";
import { execa } from "execa";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { CliError } from "../../host-agent/cli/admin-client.ts";
import {
  localVmBase,
  localVmChoice,
  localVmDriverConfig,
  localVmEgress,
  localVmHostNames,
} from "../../host-agent/cli/local-vm-base.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";

describe("faas start's local microVM base", () => {
  it("runs on QEMU with TCG unless told otherwise, and names what is allowed", () => {
    assert.deepEqual(localVmChoice({}), { accelerator: "tcg" });
    assert.deepEqual(localVmChoice({ FAAS_VMM: "qemu", FAAS_VMM_ACCELERATOR: "auto" }), {
      accelerator: "auto",
    });
    assert.throws(
      () => localVmChoice({ FAAS_VMM: "firecracker" }),
      /set FAAS_BASE_DIR and FAAS_FIRECRACKER_CONFIG/,
    );
    assert.throws(
      () => localVmChoice({ FAAS_VMM: "xen" }),
      /FAAS_VMM must be "qemu" or "firecracker", not "xen"/,
    );
    assert.throws(
      () => localVmChoice({ FAAS_VMM_ACCELERATOR: "hvf" }),
      /FAAS_VMM_ACCELERATOR must be one of tcg, kvm, auto, not "hvf"/,
    );
  });

  it("writes a driver config the driver accepts: QEMU, jails under the state dir, its own slot prefixes", () => {
    const config = parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/state", "tcg"));
    assert.equal(config.vmm, "qemu");
    assert.equal(config.qemu.accelerator, "tcg");
    assert.equal(config.chrootBase, "/var/tmp/state/local-vm/jails");
    assert.notEqual(config.network.netnsPrefix, parseFirecrackerDriverConfig({}).network.netnsPrefix);
  });

  it("gives each state dir its own netns and veth prefixes, cgroup and slot subnet", () => {
    const a = parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/one", "tcg"));
    const b = parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/two", "tcg"));
    const again = parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/one/", "tcg"));
    assert.deepEqual(localVmHostNames("/var/tmp/one"), localVmHostNames("/var/tmp/one/"));
    assert.deepEqual(
      again.network,
      a.network,
      "the same state dir, the same names (a restart reclaims them)",
    );
    assert.notEqual(a.network.netnsPrefix, b.network.netnsPrefix);
    assert.notEqual(a.network.vethPrefix, b.network.vethPrefix);
    assert.notEqual(a.parentCgroup, b.parentCgroup);
    assert.notEqual(a.network.hostSubnetBase, b.network.hostSubnetBase);
    for (const c of [a, b]) {
      // Every slot's /30 stays inside the platform's block of 10.206.0.0/16.
      const [, , third, fourth] = c.network.hostSubnetBase.split(".").map(Number);
      const last = third! * 256 + fourth! + 4 * c.network.maxSlots - 1;
      assert.ok(c.network.hostSubnetBase.startsWith("10.206.") && last < 65_536);
      assert.equal(fourth! % 64, 0);
    }
  });

  it("offers egress out of the uplink and resolver it is given (or finds), off when it has neither", async () => {
    assert.equal(
      parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/s", "tcg")).network.egress.enabled,
      false,
    );
    const egress = await localVmEgress({ FAAS_EGRESS_UPLINK: "ens9", FAAS_EGRESS_DNS: "10.9.9.9" });
    assert.deepEqual(egress, { uplink: "ens9", dnsResolver: "10.9.9.9" });
    const config = parseFirecrackerDriverConfig(localVmDriverConfig("/var/tmp/s", "tcg", egress));
    assert.deepEqual(config.network.egress, { enabled: true, uplink: "ens9", dnsResolver: "10.9.9.9" });
    // Without overrides: the host's own default route and resolver, as `ip` and resolv.conf say.
    const found = await localVmEgress({});
    const route = await execa("ip", ["-o", "-4", "route", "show", "default"], { reject: false });
    const dev = /\bdev (\S+)/.exec(route.stdout ?? "")?.[1];
    assert.equal(found?.uplink, found ? dev : undefined);
  });

  it("says in one line what is missing when the guest image can be neither found nor built", async function () {
    if (process.getuid?.() !== 0) {
      console.log("      skipped: needs root (the root check comes first)");
      this.skip();
    }
    // QEMU's version is one of the base's inputs, so a missing QEMU is what it says first.
    if ((await execa("qemu-system-x86_64", ["--version"], { reject: false })).exitCode === undefined) {
      console.log("      skipped: qemu-system-x86_64 is not installed (apt-get install -y qemu-system-x86)");
      this.skip();
    }
    const empty = await makeTempDir("local-vm-nocache");
    try {
      await assert.rejects(
        // Nothing cached and no kernel config to build from: nothing is built, one line says why.
        localVmBase(
          empty,
          { SNAPFAAS_CACHE_DIR: empty, FIRECRACKER_GUEST_CONFIG: join(empty, "no-such.config") },
          () => {},
        ),
        (err: Error) =>
          err instanceof CliError &&
          /cannot build the Linux guest image on this machine: FIRECRACKER_GUEST_CONFIG names no file/.test(
            err.message,
          ) &&
          !err.message.includes("\n"),
      );
    } finally {
      await removeDir(empty);
    }
  });
});
