import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { computeBaseVersion, cpuModelOf, parseManifest } from "../../contracts/base-manifest.ts";
import { readCpuInfo } from "../../guest-images/bake/cpu-model.ts";
import { type BakeJob, bakeBaseImage } from "../../guest-images/bake/pipeline.ts";
import { BaseImageError, verifyBaseImage } from "../../guest-images/bake/verify.ts";
import { sha256Text } from "../../guest-images/hash.ts";

/** A firecracker-shaped bake that writes small files instead of booting anything. */
function fakeFirecrackerJob(
  calls: { count: number },
  inputs = { osv: sha256Text("osv"), node: sha256Text("node") },
) {
  const job: BakeJob = {
    driver: "firecracker",
    guest: "osv",
    inputs,
    kernelArgs: "--nopci /node /runtime/runtime.cjs",
    firecrackerVersion: "1.16.1",
    machine: { vcpus: 2, memMiB: 512 },
    async build(dir) {
      calls.count += 1;
      await writeFile(path.join(dir, "vmstate"), "vmstate bytes");
      await writeFile(path.join(dir, "memory"), "memory bytes");
      await writeFile(path.join(dir, "root.img"), "root");
      await writeFile(path.join(dir, "code-empty.img"), "");
      await mkdir(path.join(dir, "nested"));
      await writeFile(path.join(dir, "nested", "kernel.elf"), "kernel");
    },
  };
  return job;
}

describe("bake pipeline and base image verifier", () => {
  let out: string;
  beforeEach(async () => {
    out = await mkdtemp(path.join(tmpdir(), "bake-test-"));
  });
  afterEach(async () => {
    await rm(out, { recursive: true, force: true });
  });

  it("writes OUT/<version>/ with a manifest whose version is the hash of the inputs", async () => {
    const calls = { count: 0 };
    const job = fakeFirecrackerJob(calls);
    const result = await bakeBaseImage(out, job, { now: () => new Date("2026-11-28T07:00:00Z") });
    assert.equal(result.reused, false);
    assert.equal(result.dir, path.join(out, computeBaseVersion(job.inputs)));
    const manifest = JSON.parse(await readFile(path.join(result.dir, "manifest.json"), "utf8"));
    assert.equal(manifest.version, computeBaseVersion(job.inputs));
    assert.deepEqual(
      manifest.artifacts.map((a: { name: string; bytes: number }) => [a.name, a.bytes]),
      [
        ["code-empty.img", 0],
        ["memory", 12],
        ["nested/kernel.elf", 6],
        ["root.img", 4],
        ["vmstate", 13],
      ],
    );
    assert.equal(manifest.firecrackerVersion, "1.16.1");
    assert.equal(manifest.createdAt, "2026-11-28T07:00:00.000Z");
    const verified = await verifyBaseImage(result.dir, { hostFirecrackerVersion: "Firecracker v1.16.1" });
    assert.deepEqual(
      { version: verified.version, driver: verified.driver, dir: verified.dir },
      { version: manifest.version, driver: "firecracker", dir: result.dir },
    );
  });

  it("rebuilds nothing for the same inputs, and builds again for new inputs", async () => {
    const calls = { count: 0 };
    const first = await bakeBaseImage(out, fakeFirecrackerJob(calls));
    const second = await bakeBaseImage(out, fakeFirecrackerJob(calls));
    assert.equal(calls.count, 1);
    assert.equal(second.reused, true);
    assert.equal(second.dir, first.dir);
    const third = await bakeBaseImage(
      out,
      fakeFirecrackerJob(calls, { osv: sha256Text("osv2"), node: sha256Text("node") }),
    );
    assert.equal(calls.count, 2);
    assert.notEqual(third.dir, first.dir);
  });

  it("bakes again when the earlier image no longer verifies", async () => {
    const calls = { count: 0 };
    const first = await bakeBaseImage(out, fakeFirecrackerJob(calls));
    await writeFile(path.join(first.dir, "memory"), "MEMORY BYTES");
    const again = await bakeBaseImage(out, fakeFirecrackerJob(calls));
    assert.equal(calls.count, 2);
    assert.equal(again.reused, false);
    await verifyBaseImage(again.dir, { hostFirecrackerVersion: "1.16.1" });
  });

  it("keeps the image of a concurrent bake of the same inputs that finished first", async () => {
    const calls = { count: 0 };
    const job = fakeFirecrackerJob(calls);
    let other: Promise<unknown> | undefined;
    const racing: BakeJob = {
      ...job,
      async build(dir) {
        // While this bake builds, another one of the same inputs completes.
        other = bakeBaseImage(out, fakeFirecrackerJob(calls));
        await other;
        await job.build(dir);
      },
    };
    const result = await bakeBaseImage(out, racing);
    assert.equal(result.reused, true);
    assert.equal(calls.count, 2);
    const { readdir } = await import("node:fs/promises");
    assert.deepEqual(await readdir(out), [path.basename(result.dir)], "no partial directory left");
    await verifyBaseImage(result.dir, { hostFirecrackerVersion: "1.16.1" });
  });

  it("leaves nothing behind when the build fails", async () => {
    const job = fakeFirecrackerJob({ count: 0 });
    const failing: BakeJob = {
      ...job,
      async build(dir) {
        await writeFile(path.join(dir, "half"), "x");
        throw new Error("builder exploded");
      },
    };
    await assert.rejects(bakeBaseImage(out, failing), /builder exploded/);
    const { readdir } = await import("node:fs/promises");
    assert.deepEqual(await readdir(out), []);
  });

  describe("refusals", () => {
    let dir: string;
    beforeEach(async () => {
      dir = (await bakeBaseImage(out, fakeFirecrackerJob({ count: 0 }))).dir;
    });

    /** hostFirecrackerVersion null: the host gives none. */
    const refuses = async (pattern: RegExp, hostFirecrackerVersion: string | null = "1.16.1") =>
      assert.rejects(
        verifyBaseImage(dir, hostFirecrackerVersion === null ? {} : { hostFirecrackerVersion }),
        (error: Error) => {
          assert.ok(error instanceof BaseImageError, String(error));
          assert.match(error.message, pattern);
          return true;
        },
      );

    it("an artifact whose bytes changed, naming the artifact and both hashes", async () => {
      await writeFile(path.join(dir, "vmstate"), "vmstate BYTES");
      await refuses(/artifact vmstate has sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}/);
    });

    it("an artifact whose size changed", async () => {
      await writeFile(path.join(dir, "nested", "kernel.elf"), "kernel!");
      await refuses(/artifact nested\/kernel\.elf has 7 bytes, manifest says 6/);
    });

    it("a missing artifact", async () => {
      await rm(path.join(dir, "memory"));
      await refuses(/artifact memory is missing/);
    });

    it("a manifest that does not list an artifact the driver needs", async () => {
      const file = path.join(dir, "manifest.json");
      const manifest = JSON.parse(await readFile(file, "utf8"));
      manifest.artifacts = manifest.artifacts.filter((a: { name: string }) => a.name !== "vmstate");
      await writeFile(file, JSON.stringify(manifest));
      await refuses(/the manifest lists no vmstate, which a firecracker base needs/);
    });

    it("a Firecracker version other than the host's, naming both", async () => {
      await refuses(
        /baked with Firecracker 1\.16\.1 but this host runs Firecracker 1\.15\.0/,
        "Firecracker v1.15.0",
      );
    });

    it("a firecracker image when the host version is not given", async () => {
      await refuses(/needs Firecracker 1\.16\.1, but no host Firecracker version was given/, null);
    });

    it("a manifest whose version is not the hash of its inputs", async () => {
      const file = path.join(dir, "manifest.json");
      const manifest = JSON.parse(await readFile(file, "utf8"));
      manifest.inputs.node = sha256Text("another node");
      await writeFile(file, JSON.stringify(manifest));
      await refuses(/is not the hash of its inputs/);
    });

    it("a base baked on another CPU model than this host's (read from a cpuinfo file)", async () => {
      const cpuinfo = path.join(out, "cpuinfo");
      await writeFile(
        cpuinfo,
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t: fpu\n",
      );
      const hostCpuModel = cpuModelOf(await readCpuInfo(cpuinfo));
      assert.equal(hostCpuModel, "Intel(R) Xeon(R) Platinum 8488C");
      const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8"));
      await assert.rejects(
        verifyBaseImage(dir, { hostFirecrackerVersion: "1.16.1", hostCpuModel }),
        (error: Error) => {
          assert.ok(error instanceof BaseImageError);
          assert.equal(
            error.message,
            `base image ${manifest.version} was baked on CPU "${manifest.cpuModel}" but this host has "Intel(R) Xeon(R) Platinum 8488C": bake on the fleet's instance type (bake.builderInstanceType = fleet.instanceType)`,
          );
          assert.ok(!error.message.includes("\n"), "one line");
          return true;
        },
      );
      // The model the bake recorded is this machine's: the same host accepts it.
      const here = cpuModelOf(await readCpuInfo());
      await verifyBaseImage(dir, { hostFirecrackerVersion: "1.16.1", hostCpuModel: here });
    });

    it("a base whose snapshot fixes another VM shape than the release asks for", async () => {
      await assert.rejects(
        verifyBaseImage(dir, {
          hostFirecrackerVersion: "1.16.1",
          expectedMachine: { vcpus: 2, memMiB: 1024 },
        }),
        /fixes 2 vCPU \/ 512 MiB but the release asks for 2 vCPU \/ 1024 MiB: bake again with the release's vm settings/,
      );
      await verifyBaseImage(dir, {
        hostFirecrackerVersion: "1.16.1",
        expectedMachine: { vcpus: 2, memMiB: 512 },
      });
    });

    it("a base snapshotted by the other VMM: QEMU's on a Firecracker host and the reverse, in one line", async () => {
      const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8"));
      // No vmm in the manifest: Firecracker wrote it (every base before the QEMU backend).
      assert.equal(manifest.vmm, undefined);
      await verifyBaseImage(dir, { hostFirecrackerVersion: "1.16.1", hostVmm: "firecracker" });
      await assert.rejects(
        verifyBaseImage(dir, { hostFirecrackerVersion: "1.16.1", hostVmm: "qemu" }),
        (error: Error) => {
          assert.ok(error instanceof BaseImageError);
          assert.equal(
            error.message,
            `base image ${manifest.version} was snapshotted by Firecracker (vmm "firecracker") but this host restores with QEMU (vmm "qemu"): a snapshot only restores on the VMM that wrote it; set vmm: "firecracker" in the driver config or bake the base on QEMU`,
          );
          return true;
        },
      );
      const qemu = await bakeBaseImage(path.join(out, "qemu"), {
        ...fakeFirecrackerJob({ count: 0 }),
        vmm: "qemu",
      });
      assert.equal(qemu.manifest.vmm, "qemu");
      await verifyBaseImage(qemu.dir, { hostFirecrackerVersion: "1.16.1", hostVmm: "qemu" });
      await assert.rejects(
        verifyBaseImage(qemu.dir, { hostFirecrackerVersion: "1.16.1", hostVmm: "firecracker" }),
        /snapshotted by QEMU \(vmm "qemu"\) but this host restores with Firecracker \(vmm "firecracker"\): .*set vmm: "qemu" in the driver config or bake the base on Firecracker$/,
      );
      // A process base has no VMM to record.
      assert.throws(
        () =>
          parseManifest(
            { ...manifest, driver: "process", guest: "process", firecrackerVersion: undefined, vmm: "qemu" },
            "m.json",
          ),
        /vmm: only allowed when driver is firecracker/,
      );
    });

    it("another base version than the one expected", async () => {
      await assert.rejects(
        verifyBaseImage(dir, { hostFirecrackerVersion: "1.16.1", expectedVersion: "f".repeat(64) }),
        /expected f{64}/,
      );
    });

    it("a directory without a manifest, or with one that is not valid", async () => {
      await assert.rejects(verifyBaseImage(out), /no manifest\.json/);
      await writeFile(path.join(dir, "manifest.json"), "{not json");
      await refuses(/is not JSON/);
      await writeFile(path.join(dir, "manifest.json"), JSON.stringify({ version: "x" }));
      await refuses(/invalid base image manifest .*\n\s+version: a sha256/);
    });
  });
});
