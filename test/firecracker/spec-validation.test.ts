import assert from "node:assert/strict";
import { FirecrackerApiClient, type HttpMethod } from "../../host-agent/sandbox/firecracker/api-client.ts";
import { toRateLimiter } from "../../host-agent/sandbox/firecracker/limits.ts";
import * as bodies from "../../host-agent/sandbox/firecracker/request-bodies.ts";
import { loadSpec } from "./spec-schemas.ts";

const limiter = toRateLimiter({
  bandwidth: { size: 10_000_000, refillTimeMs: 100, oneTimeBurst: 50_000_000 },
  ops: { size: 1_000, refillTimeMs: 100 },
});

/** Every request the driver can send: method, concrete path, body, and the spec definition it must satisfy. */
const requests: { method: HttpMethod; path: string; body: unknown; definition: string }[] = [
  {
    method: "PUT",
    path: "/boot-source",
    body: bodies.bootSourceBody("/base/kernel.elf", "--nopci /node app.js"),
    definition: "BootSource",
  },
  {
    method: "PUT",
    path: "/machine-config",
    body: bodies.machineConfigBody(2, 512, true),
    definition: "MachineConfiguration",
  },
  { method: "PUT", path: "/drives/root", body: bodies.rootDriveBody(), definition: "Drive" },
  { method: "PUT", path: "/drives/root", body: bodies.rootDriveBody(limiter), definition: "Drive" },
  { method: "PUT", path: "/drives/code", body: bodies.codeDriveBody(limiter), definition: "Drive" },
  {
    method: "PUT",
    path: "/network-interfaces/eth0",
    body: bodies.networkInterfaceBody("eth0", "tap0", "06:00:ac:10:00:02", limiter, limiter),
    definition: "NetworkInterface",
  },
  {
    method: "PUT",
    path: "/network-interfaces/eth0",
    body: bodies.networkInterfaceBody("eth0", "tap0", undefined),
    definition: "NetworkInterface",
  },
  { method: "PUT", path: "/entropy", body: bodies.entropyBody(), definition: "EntropyDevice" },
  { method: "PUT", path: "/entropy", body: bodies.entropyBody(limiter), definition: "EntropyDevice" },
  { method: "PUT", path: "/actions", body: bodies.instanceStartBody(), definition: "InstanceActionInfo" },
  { method: "PUT", path: "/actions", body: bodies.ctrlAltDelBody(), definition: "InstanceActionInfo" },
  { method: "PATCH", path: "/vm", body: bodies.vmStateBody("Paused"), definition: "Vm" },
  { method: "PATCH", path: "/vm", body: bodies.vmStateBody("Resumed"), definition: "Vm" },
  {
    method: "PUT",
    path: "/snapshot/create",
    body: bodies.snapshotCreateBody("Full"),
    definition: "SnapshotCreateParams",
  },
  {
    method: "PUT",
    path: "/snapshot/create",
    body: bodies.snapshotCreateBody("Diff"),
    definition: "SnapshotCreateParams",
  },
  {
    method: "PUT",
    path: "/snapshot/load",
    body: bodies.snapshotLoadBody("eth0", "tap0"),
    definition: "SnapshotLoadParams",
  },
  {
    method: "PATCH",
    path: "/drives/code",
    body: bodies.drivePatchBody("code", "/code/abc123.img", limiter),
    definition: "PartialDrive",
  },
  {
    method: "PATCH",
    path: "/drives/root",
    body: bodies.drivePatchBody("root", undefined, limiter),
    definition: "PartialDrive",
  },
  {
    method: "PATCH",
    path: "/network-interfaces/eth0",
    body: bodies.networkPatchBody("eth0", limiter, limiter),
    definition: "PartialNetworkInterface",
  },
];

describe("firecracker request bodies against the official API spec", () => {
  const spec = loadSpec();

  it("reads the spec from ../shared/specs", () => {
    assert.match(spec.version, /^1\.\d+\.\d+/);
    assert.ok(spec.definitions.includes("SnapshotLoadParams"));
  });

  for (const r of requests) {
    it(`${r.method} ${r.path} body is a valid ${r.definition} (${JSON.stringify(r.body).slice(0, 60)}...)`, () => {
      assert.equal(spec.validateDefinition(r.definition, r.body), null);
      // The endpoint exists and takes exactly that definition.
      assert.equal(spec.validateRequest(r.method, r.path, r.body), null);
    });
  }

  it("the load body uses the File memory backend, is not resumed and overrides the NIC's tap", () => {
    const body = bodies.snapshotLoadBody("eth0", "tap0");
    assert.deepEqual(body.mem_backend.backend_type, "File");
    assert.equal(body.resume_vm, false);
    assert.deepEqual(body.network_overrides, [{ iface_id: "eth0", host_dev_name: "tap0" }]);
    // A clone's kvmclock is advanced to now, not left at the snapshot's time.
    assert.equal(body.clock_realtime, true);
    assert.equal(spec.validateDefinition("SnapshotLoadParams", body), null);
    assert.match(
      spec.validateDefinition("SnapshotLoadParams", { ...body, clock_realtime: "yes" }) ?? "",
      /clock_realtime/,
    );
    assert.equal(
      "mem_file_path" in body,
      false,
      "mem_file_path is deprecated and forbidden with mem_backend",
    );
  });

  it("the validator rejects what Firecracker would reject (so the checks above can fail)", () => {
    assert.match(spec.validateDefinition("Drive", { drive_id: "x" }) ?? "", /is_root_device/);
    assert.match(
      spec.validateDefinition("MachineConfiguration", { vcpu_count: 0, mem_size_mib: 128 }) ?? "",
      />= 1/,
    );
    assert.match(spec.validateDefinition("TokenBucket", { size: -1, refill_time: 1 }) ?? "", />= 0/);
    assert.match(spec.validateDefinition("Vm", { state: "Running" }) ?? "", /allowed values/);
    assert.match(
      spec.validateDefinition("PartialDrive", { drive_id: "x", pathOnHost: "/a" }) ?? "",
      /additional properties/,
    );
    assert.match(spec.validateRequest("PUT", "/snapshot/resume", {}) ?? "", /no PUT/);
  });

  it("the API client sends exactly these bodies (observed on the wire order of a restore)", async () => {
    const seen: { method: string; path: string; body: unknown }[] = [];
    const client = new FirecrackerApiClient({
      socketPath: "/nonexistent/fc.sock",
      timeoutMs: 100,
      onRequest: (method, path, body) => seen.push({ method, path, body }),
    });
    await assert.rejects(client.loadSnapshot(bodies.snapshotLoadBody("eth0", "tap0")), {
      name: "FirecrackerConnectionError",
    });
    await client.close();
    assert.equal(seen.length, 1);
    assert.equal(spec.validateRequest(seen[0]!.method, seen[0]!.path, seen[0]!.body), null);
  });
});
