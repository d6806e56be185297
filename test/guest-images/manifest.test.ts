import assert from "node:assert/strict";
import {
  computeBaseVersion,
  type Manifest,
  ManifestError,
  normaliseFirecrackerVersion,
  parseManifest,
} from "../../contracts/base-manifest.ts";

const HASH_A = "a".repeat(64);
const HASH_B = "b".repeat(64);

function firecrackerManifest(overrides: Partial<Manifest> = {}): Manifest {
  const inputs = overrides.inputs ?? { osv: HASH_A, node: HASH_B };
  return {
    version: computeBaseVersion(inputs),
    driver: "firecracker",
    guest: "osv",
    inputs,
    artifacts: [{ name: "vmstate.snap", sha256: HASH_A, bytes: 10 }],
    firecrackerVersion: "1.16.1",
    cpuModel: "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
    kernelArgs: "--nopci /node /runtime/runtime.cjs",
    createdAt: "2026-11-28T07:00:00.000Z",
    ...overrides,
  };
}

describe("base image manifest", () => {
  it("computes the base version from the inputs alone, whatever their order", () => {
    const one = computeBaseVersion({ osv: HASH_A, node: HASH_B });
    const two = computeBaseVersion({ node: HASH_B, osv: HASH_A });
    assert.equal(one, two);
    assert.match(one, /^[0-9a-f]{64}$/);
    assert.notEqual(computeBaseVersion({ osv: HASH_B, node: HASH_A }), one);
    assert.notEqual(computeBaseVersion({ osv: HASH_A, node: HASH_B, extra: HASH_A }), one);
  });

  it("accepts a complete firecracker manifest and a process manifest", () => {
    assert.equal(parseManifest(firecrackerManifest(), "m.json").guest, "osv");
    const processManifest = firecrackerManifest({ driver: "process", guest: "process", kernelArgs: "" });
    delete processManifest.firecrackerVersion;
    assert.equal(parseManifest(processManifest, "m.json").driver, "process");
  });

  it("names the key path and what is allowed for each problem", () => {
    const bad = {
      ...firecrackerManifest(),
      driver: "docker",
      artifacts: [{ name: "../escape", sha256: "xyz", bytes: -1 }],
    };
    assert.throws(
      () => parseManifest(bad, "/images/v1/manifest.json"),
      (error: Error) => {
        assert.ok(error instanceof ManifestError);
        assert.match(error.message, /invalid base image manifest \/images\/v1\/manifest\.json/);
        assert.match(error.message, /driver: /);
        assert.match(error.message, /artifacts\.0\.name: a relative path inside the image directory/);
        assert.match(error.message, /artifacts\.0\.sha256: a sha256 in lowercase hex/);
        assert.match(error.message, /artifacts\.0\.bytes: /);
        return true;
      },
    );
  });

  it("requires a Firecracker version for firecracker images and refuses one for process images", () => {
    const noVersion = firecrackerManifest();
    delete noVersion.firecrackerVersion;
    assert.throws(
      () => parseManifest(noVersion, "m"),
      /firecrackerVersion: required when driver is firecracker/,
    );
    const processWithVersion = firecrackerManifest({ driver: "process", guest: "process" });
    assert.throws(() => parseManifest(processWithVersion, "m"), /firecrackerVersion: only allowed/);
    assert.throws(
      () => parseManifest(firecrackerManifest({ guest: "process" }), "m"),
      /guest: must be "osv" or "linux"/,
    );
  });

  it("refuses duplicate artifact names and unknown keys", () => {
    const dup = firecrackerManifest({
      artifacts: [
        { name: "a", sha256: HASH_A, bytes: 1 },
        { name: "a", sha256: HASH_B, bytes: 2 },
      ],
    });
    assert.throws(() => parseManifest(dup, "m"), /artifacts\.1\.name: duplicate artifact a/);
    assert.throws(
      () => parseManifest({ ...firecrackerManifest(), colour: "blue" }, "m"),
      /colour|Unrecognized key/,
    );
  });

  it("reads the version out of `firecracker --version` output", () => {
    assert.equal(
      normaliseFirecrackerVersion("Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0"),
      "1.16.1",
    );
    assert.equal(normaliseFirecrackerVersion("v1.15.0"), "1.15.0");
    assert.throws(() => normaliseFirecrackerVersion("garbage"), /cannot read a Firecracker version/);
  });
});
