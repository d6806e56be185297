/**
 * The agent's start refuses a microVM base that cannot restore right on this host: one baked on another
 * CPU model (cpuinfo read from a file the test controls) or for another VM shape than the release's.
 */
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type BakeJob, bakeBaseImage } from "../../guest-images/bake/pipeline.ts";
import { BaseImageError } from "../../guest-images/bake/verify.ts";
import { sha256Text } from "../../guest-images/hash.ts";
import { startAgent } from "../../host-agent/agent.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";

const job: BakeJob = {
  driver: "firecracker",
  guest: "linux",
  inputs: { node: sha256Text("node"), machine: sha256Text("2x512") },
  kernelArgs: "console=ttyS0",
  firecrackerVersion: "1.16.1",
  machine: { vcpus: 2, memMiB: 512 },
  async build(dir) {
    for (const name of ["kernel.elf", "root.img", "code-empty.img", "vmstate", "memory"]) {
      await writeFile(path.join(dir, name), name);
    }
  },
};

describe("agent start with a microVM base", () => {
  let dir: string;
  let baseDir: string;
  let configFile: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "agent-base-check-"));
    baseDir = (await bakeBaseImage(path.join(dir, "bases"), job)).dir;
    const firecracker = path.join(dir, "bin", "firecracker");
    await mkdir(path.dirname(firecracker), { recursive: true });
    await writeFile(firecracker, '#!/bin/sh\necho "Firecracker v1.16.1"\n');
    await chmod(firecracker, 0o755);
    configFile = path.join(dir, "firecracker.json");
    await writeFile(configFile, JSON.stringify({ firecrackerPath: firecracker }));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (cpuinfo: string, releaseMachine?: { vcpus: number; memMiB: number }) => {
    const cpuinfoPath = path.join(dir, "cpuinfo");
    await writeFile(cpuinfoPath, cpuinfo);
    const config = loadAgentConfig({
      FAAS_DRIVER: "firecracker",
      FAAS_BASE_DIR: baseDir,
      FAAS_FIRECRACKER_CONFIG: configFile,
      FAAS_STATE_DIR: path.join(dir, "state"),
      PORT: "0",
      ADMIN_PORT: "0",
    });
    return startAgent(config, {
      driver: new FakeDriver(),
      cpuinfoPath,
      ...(releaseMachine ? { releaseMachine } : {}),
    });
  };

  it("refuses a base baked on another CPU model, in one line that says what to do", async () => {
    await assert.rejects(start("model name\t: AMD EPYC 9R14 96-Core Processor\n"), (error: Error) => {
      assert.ok(error instanceof BaseImageError, String(error));
      assert.match(
        error.message,
        /was baked on CPU ".+" but this host has "AMD EPYC 9R14 96-Core Processor": bake on the fleet's instance type/,
      );
      assert.ok(!error.message.includes("\n"));
      return true;
    });
  });

  it("refuses a release whose VM shape differs from the one the snapshot fixes", async () => {
    const { readFile } = await import("node:fs/promises");
    const here = await readFile("/proc/cpuinfo", "utf8");
    await assert.rejects(
      start(here, { vcpus: 1, memMiB: 512 }),
      /fixes 2 vCPU \/ 512 MiB but the release asks for 1 vCPU \/ 512 MiB/,
    );
  });
});
