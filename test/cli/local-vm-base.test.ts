import assert from "node:assert/strict";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { CliError } from "../../host-agent/cli/admin-client.ts";
import { localVmBase, localVmChoice, localVmDriverConfig } from "../../host-agent/cli/local-vm-base.ts";
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

  it("says in one line to run npm run guest:linux when the image is not cached", async function () {
    if (process.getuid?.() !== 0) {
      console.log("      skipped: needs root (the root check comes first)");
      this.skip();
    }
    const empty = await makeTempDir("local-vm-nocache");
    try {
      await assert.rejects(
        localVmBase(empty, { SNAPFAAS_CACHE_DIR: empty }, () => {}),
        (err: Error) =>
          err instanceof CliError &&
          /run `npm run guest:linux` first/.test(err.message) &&
          !err.message.includes("\n"),
      );
    } finally {
      await removeDir(empty);
    }
  });
});
