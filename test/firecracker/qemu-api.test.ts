/**
 * The adapter's API mapping without QEMU: every body the driver sends passes the adapter's own schemas
 * (and the spec), misspelt keys are refused by name, and the call-order rules and the argv a boot
 * produces come from the pre-boot calls. QEMU itself is replaced by a launcher that records the argv.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { toRateLimiter } from "../../host-agent/sandbox/firecracker/limits.ts";
import {
  matchAdapterRoute,
  validateAdapterBody,
} from "../../host-agent/sandbox/firecracker/qemu-api-schemas.ts";
import { QemuVmm } from "../../host-agent/sandbox/firecracker/qemu-vmm.ts";
import * as bodies from "../../host-agent/sandbox/firecracker/request-bodies.ts";
import { makeTempDir, removeDir } from "./helpers.ts";
import { loadSpec, specPath } from "./spec-schemas.ts";

const limiter = toRateLimiter({
  bandwidth: { size: 1_000, refillTimeMs: 10 },
  ops: { size: 10, refillTimeMs: 10 },
});

/** Every request the driver and the bake make, as (method, path, body). */
const driverRequests: [string, string, unknown][] = [
  ["PUT", "/boot-source", bodies.bootSourceBody("/base/kernel.elf", "console=ttyS0")],
  ["PUT", "/machine-config", bodies.machineConfigBody(1, 256)],
  ["PUT", "/drives/root", bodies.rootDriveBody(limiter)],
  ["PUT", "/drives/code", bodies.codeDriveBody(limiter)],
  [
    "PUT",
    "/network-interfaces/eth0",
    bodies.networkInterfaceBody("eth0", "tap0", "06:00:ac:10:00:02", limiter, limiter),
  ],
  ["PUT", "/entropy", bodies.entropyBody()],
  ["PUT", "/actions", bodies.instanceStartBody()],
  ["PUT", "/actions", bodies.ctrlAltDelBody()],
  ["PATCH", "/vm", bodies.vmStateBody("Paused")],
  ["PUT", "/snapshot/create", bodies.snapshotCreateBody("Full")],
  ["PUT", "/snapshot/load", bodies.snapshotLoadBody("eth0", "tap0")],
  ["PATCH", "/drives/code", bodies.drivePatchBody("code", "/code/abc.img", limiter)],
  ["PATCH", "/network-interfaces/eth0", bodies.networkPatchBody("eth0", limiter, limiter)],
];

describe("QEMU adapter: API bodies and routes", () => {
  it("accepts every body the driver sends, with its own schemas and (when ../shared has it) the spec", () => {
    const spec = existsSync(specPath) ? loadSpec() : undefined;
    for (const [method, path, body] of driverRequests) {
      const match = matchAdapterRoute(method, path);
      assert.ok(match, `${method} ${path} is served`);
      assert.equal(validateAdapterBody(match.route, body), null, `${method} ${path}`);
      if (spec)
        assert.equal(spec.validateRequest(method, path, body), null, `${method} ${path} against the spec`);
    }
  });

  it("refuses unknown keys, wrong types and unserved routes by name", () => {
    assert.match(
      validateAdapterBody("PATCH /drives/{drive_id}", { drive_id: "code", bogus: 1 }) ?? "",
      /bogus/,
    );
    assert.match(
      validateAdapterBody("PUT /machine-config", { vcpu_count: "1", mem_size_mib: 1 }) ?? "",
      /vcpu_count/,
    );
    assert.match(validateAdapterBody("PATCH /vm", { state: "Stopped" }) ?? "", /state/);
    assert.match(validateAdapterBody("GET /", { a: 1 }) ?? "", /takes no body/);
    assert.equal(matchAdapterRoute("PUT", "/vsock"), undefined);
    assert.equal(matchAdapterRoute("DELETE", "/drives/root"), undefined);
    assert.deepEqual(matchAdapterRoute("PUT", "/drives/root"), {
      route: "PUT /drives/{drive_id}",
      id: "root",
    });
  });
});

describe("QEMU adapter: call order and the boot it derives", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await makeTempDir("qemu-api");
    await mkdir(join(dir, "base"), { recursive: true });
    for (const f of ["kernel.elf", "root.img", "code-empty.img"]) await writeFile(join(dir, "base", f), "x");
  });
  afterEach(() => removeDir(dir));

  function adapter(launched: string[][]) {
    return new QemuVmm({
      id: "vm-1",
      accelerator: "tcg",
      tscKhz: 1_234_567,
      hostPath: (p) => join(dir, p),
      qmpSocketPath: join(dir, "qmp.sock"),
      bootMemoryPath: join(dir, "mem"),
      runAs: { uid: 900_001, gid: 900_001 },
      qmpConnectTimeoutMs: 200,
      // Stands in for QEMU: records the argv, then "exits" at once, so the start fails after launch.
      launch: async (argv) => {
        launched.push(argv);
        return {
          pid: undefined,
          exited: Promise.resolve("stand-in QEMU exited"),
          kill: async () => undefined,
        };
      },
    });
  }

  const call = (vmm: QemuVmm, method: string, path: string, body: unknown) => {
    const match = matchAdapterRoute(method, path)!;
    return vmm.handle(match.route, match.id, body as Record<string, unknown>);
  };

  it("turns the pre-boot calls into one QEMU command line at InstanceStart", async () => {
    const launched: string[][] = [];
    const vmm = adapter(launched);
    for (const [method, path, body] of driverRequests.slice(0, 6)) {
      assert.deepEqual(await call(vmm, method, path, body), { status: 204 }, `${method} ${path}`);
    }
    const answer = await call(vmm, "PUT", "/actions", bodies.instanceStartBody());
    assert.equal(answer.status, 400);
    assert.match(answer.status === 400 ? answer.fault : "", /QEMU exited during start: stand-in QEMU exited/);
    const argv = launched[0]!;
    const joined = argv.join(" ");
    assert.match(
      joined,
      new RegExp(
        `-kernel ${join(dir, "base/kernel.elf")} -append console=ttyS0 tsc_early_khz=1234567 tsc=reliable reboot=t`,
      ),
    );
    assert.match(joined, /-m 256M/);
    assert.match(joined, /drive-root.*drive-code/);
    assert.match(joined, /ifname=tap0/);
    assert.match(joined, /mac=06:00:ac:10:00:02/);
    assert.match(joined, /virtio-rng-device/);
    assert.match(joined, new RegExp(`mem-path=${join(dir, "mem")},share=on`));
    assert.deepEqual(vmm.rateLimiters.get("drive:code"), limiter);
    assert.deepEqual(vmm.rateLimiters.get("net:eth0:tx"), limiter);
  });

  it("refuses what Firecracker refuses: calls before boot, load after configuration, mismatched ids, missing files", async () => {
    const vmm = adapter([]);
    assert.match(
      JSON.stringify(await call(vmm, "PATCH", "/vm", bodies.vmStateBody("Paused"))),
      /before starting the microVM/,
    );
    assert.match(
      JSON.stringify(await call(vmm, "PUT", "/actions", bodies.instanceStartBody())),
      /without kernel configuration/,
    );
    assert.match(
      JSON.stringify(await call(vmm, "PUT", "/drives/code", bodies.rootDriveBody())),
      /id from the path does not match/,
    );
    await call(vmm, "PUT", "/boot-source", bodies.bootSourceBody("/base/missing.elf", ""));
    assert.match(
      JSON.stringify(await call(vmm, "PUT", "/actions", bodies.instanceStartBody())),
      /Cannot open kernel image/,
    );
    assert.match(
      JSON.stringify(await call(vmm, "PUT", "/snapshot/load", bodies.snapshotLoadBody("eth0", "tap0"))),
      /not allowed after configuring boot-specific resources/,
    );
  });

  it("fails a load of a missing vmstate and marks the answer as ending the VMM", async () => {
    const answer = await call(adapter([]), "PUT", "/snapshot/load", bodies.snapshotLoadBody("eth0", "tap0"));
    assert.equal(answer.status, 400);
    assert.ok(answer.status === 400 && answer.exitAfter);
    assert.match(answer.status === 400 ? answer.fault : "", /Load snapshot error/);
  });
});
