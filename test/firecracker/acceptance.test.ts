import assert from "node:assert/strict";
import { open } from "node:fs/promises";
import { execa } from "execa";

async function kvmUsable(): Promise<boolean> {
  try {
    await (await open("/dev/kvm", "r+")).close();
    return true;
  } catch {
    return false;
  }
}

describe("acceptance script on a host without KVM or Firecracker", () => {
  it("prints one line saying why, measures nothing and exits 0", async function () {
    if (await kvmUsable()) {
      console.log("    skipped: /dev/kvm is usable here; run the acceptance script by hand (README)");
      this.skip();
    }
    const result = await execa(
      process.execPath,
      ["--import", "tsx", "host-agent/sandbox/firecracker/acceptance.ts", "--base", "/nonexistent"],
      {
        reject: false,
      },
    );
    assert.equal(result.exitCode, 0);
    const lines = result.stdout.split("\n").filter((l) => l.length > 0);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^acceptance: not run, nothing measured: \/dev\/kvm is not usable/);
    assert.doesNotMatch(result.stdout, /p50|p99/);
  });
});
