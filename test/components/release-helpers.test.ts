import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundleNodeEntry, bundleObjectKey } from "../../components/bundle.ts";
import { buildReleaseManifest } from "../../components/release-manifest.ts";
import { canonicalJson } from "../../contracts/canonical-json.ts";

describe("release helpers", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "snapfaas-release-"));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe("bundleNodeEntry", () => {
    it("bundles an entry and its local imports into one ESM file named by its SHA-256", async () => {
      await writeFile(
        join(dir, "greeting.ts"),
        'export const greeting = (name: string): string => "hi " + name;\n',
      );
      await writeFile(
        join(dir, "main.ts"),
        'import { greeting } from "./greeting.ts";\nconsole.log(greeting("host"));\n',
      );
      const bundle = await bundleNodeEntry(join(dir, "main.ts"));
      assert.ok(bundle.text.includes('"hi " + name'), "the imported module is inlined");
      assert.ok(!bundle.text.includes("./greeting"), "no relative import is left");
      assert.ok(bundle.text.includes('from "node:module"'), "require shim for bundled CommonJS");
      assert.equal(bundle.sha256, createHash("sha256").update(bundle.text).digest("hex"));
      assert.equal(bundle.bytes, Buffer.byteLength(bundle.text));

      const outFile = join(dir, "out.mjs");
      await writeFile(outFile, bundle.text);
      const { execFileSync } = await import("node:child_process");
      assert.equal(execFileSync(process.execPath, [outFile], { encoding: "utf8" }), "hi host\n");
    });

    it("gives the same hash for the same sources", async () => {
      await writeFile(join(dir, "main.ts"), "export const x = 1;\n");
      const [a, b] = await Promise.all([
        bundleNodeEntry(join(dir, "main.ts")),
        bundleNodeEntry(join(dir, "main.ts")),
      ]);
      assert.equal(a.sha256, b.sha256);
    });

    it("fails with the missing entry in the message", async () => {
      await assert.rejects(bundleNodeEntry(join(dir, "absent.ts")), /absent\.ts/);
    });

    it("keys bundles by kind and hash", () => {
      assert.equal(bundleObjectKey("host-agent", "ab"), "releases/host-agent/ab.mjs");
      assert.equal(bundleObjectKey("guest-runtime", "cd"), "releases/guest-runtime/cd.mjs");
    });
  });

  describe("buildReleaseManifest", () => {
    const input = {
      agentVersion: "0.1.0",
      baseImageVersion: "b".repeat(64),
      firecrackerVersion: "1.16.1",
      agent: { key: "releases/host-agent/1.mjs", sha256: "1".repeat(64) },
      guestRuntime: { key: "releases/guest-runtime/2.mjs", sha256: "2".repeat(64) },
      config: {
        pool: {
          minIdle: 1,
          maxInstances: 2,
          idleTtlSeconds: 3,
          maxConcurrentRestores: 4,
          memoryBudgetMiB: 512,
        },
        vm: {
          vcpus: 1,
          memoryMiB: 256,
          cpuMaxPercent: 100,
          ioReadBytesPerSecond: 1,
          ioWriteBytesPerSecond: 1,
          diskBandwidthBytesPerSecond: 1,
          diskOpsPerSecond: 1,
          netBandwidthBytesPerSecond: 1,
        },
        limits: { callTimeoutMs: 1000, payloadLimitBytes: 2048 },
      },
    };

    it("adds the schema version, image prefix and a release version derived from the content", () => {
      const manifest = buildReleaseManifest(input);
      assert.equal(manifest.schemaVersion, 1);
      assert.equal(manifest.baseImagePrefix, `images/${"b".repeat(64)}/`);
      assert.match(manifest.releaseVersion, /^[0-9a-f]{16}$/);
      assert.equal(buildReleaseManifest({ ...input }).releaseVersion, manifest.releaseVersion);
      assert.notEqual(
        buildReleaseManifest({ ...input, agentVersion: "0.1.1" }).releaseVersion,
        manifest.releaseVersion,
      );
    });

    it("serializes canonically", () => {
      assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] }), '{"a":[{"d":2}],"b":1}');
    });
  });
});
