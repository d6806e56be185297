/**
 * An AWS host's release manifest as the agent reads it at start (FAAS_RELEASE_MANIFEST): its settings
 * become the agent's defaults, the environment wins over them, and a manifest the agent cannot use stops
 * the start with exit code 2 and a message naming the file and the field.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { main } from "../../host-agent/cli/cli.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import {
  agentEnvFromManifest,
  readHostManifest,
  withManifestDefaults,
} from "../../host-agent/release/host-manifest.ts";
import { loadAgentSettings } from "../../host-agent/settings.ts";

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "host-agent", "main.ts");

const MANIFEST = {
  schemaVersion: 1,
  releaseVersion: "0123456789abcdef",
  agentVersion: "0.1.0",
  baseImageVersion: "b7e1",
  firecrackerVersion: "1.16.1",
  agent: { key: "releases/host-agent/x.mjs", sha256: "a".repeat(64) },
  guestRuntime: { key: "releases/guest-runtime/y.mjs", sha256: "b".repeat(64) },
  baseImagePrefix: "images/b7e1/",
  config: {
    pool: {
      minIdle: 3,
      maxInstances: 40,
      idleTtlSeconds: 120,
      maxConcurrentRestores: 6,
      memoryBudgetMiB: 4096,
    },
    vm: {
      vcpus: 2,
      memoryMiB: 384,
      cpuMaxPercent: 150,
      ioReadBytesPerSecond: 1,
      ioWriteBytesPerSecond: 1,
      diskBandwidthBytesPerSecond: 1000,
      diskOpsPerSecond: 10,
      netBandwidthBytesPerSecond: 2000,
    },
    limits: { callTimeoutMs: 12_000, payloadLimitBytes: 2048 },
  },
};

describe("the host's release manifest (FAAS_RELEASE_MANIFEST)", () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-manifest-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("becomes the agent's settings, under what the environment sets", async () => {
    const file = path.join(dir, "release.json");
    await writeFile(file, JSON.stringify(MANIFEST));
    const manifest = await readHostManifest(file);
    assert.equal(agentEnvFromManifest(manifest, "/bases").FAAS_BASE_DIR, "/bases/b7e1");
    const config = loadAgentConfig(
      withManifestDefaults({ FAAS_POOL_MAX_INSTANCES: "12", FAAS_POOL_GENERIC: "" }, manifest, "/bases"),
    );
    assert.equal(config.baseDir, "/bases/b7e1");
    assert.equal(config.pool.maxInstances, 12, "the environment wins");
    assert.equal(config.pool.genericMin, 3, "an empty variable does not hide the manifest's value");
    assert.equal(config.pool.idleTtlMs, 120_000);
    assert.equal(config.pool.callTimeoutMs, 12_000);
    assert.equal(config.limits.cpuPercent, 150);
    assert.equal(config.maxBodyBytes, 2048);
  });

  it("is read the same way by the daemon and faas start (loadAgentSettings)", async () => {
    const file = path.join(dir, "release.json");
    await writeFile(file, JSON.stringify(MANIFEST));
    const settings = await loadAgentSettings({
      FAAS_RELEASE_MANIFEST: file,
      FAAS_BASES_DIR: "/srv/bases",
      FAAS_POOL_GENRIC: "9",
    });
    assert.equal(settings.config.baseDir, "/srv/bases/b7e1");
    assert.equal(settings.config.pool.maxStarting, 6);
    assert.deepEqual(settings.overrides.firecrackerLimits?.networkRx, {
      bandwidth: { size: 2000, refillTimeMs: 1000 },
    });
    assert.deepEqual(
      settings.overrides.releaseMachine,
      { vcpus: MANIFEST.config.vm.vcpus, memMiB: MANIFEST.config.vm.memoryMiB },
      "the agent refuses a microVM base that fixes another shape",
    );
    assert.deepEqual(settings.warnings, [
      "FAAS_POOL_GENRIC is not an agent variable and is ignored (did you mean FAAS_POOL_GENERIC?)",
    ]);
    const plain = await loadAgentSettings({});
    assert.deepEqual(plain.overrides, {});
    assert.equal(plain.config.baseDir, undefined);
  });

  it("stops faas start too (exit 2) when the manifest cannot be used", async () => {
    const garbled = path.join(dir, "garbled-for-start.json");
    await writeFile(garbled, "{not json");
    const keys = ["FAAS_RELEASE_MANIFEST", "FAAS_STATE_DIR", "PORT", "ADMIN_PORT"] as const;
    const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
    const errors: string[] = [];
    const error = console.error;
    Object.assign(process.env, {
      FAAS_RELEASE_MANIFEST: garbled,
      FAAS_STATE_DIR: path.join(dir, "start-state"),
      PORT: "0",
      ADMIN_PORT: "0",
    });
    console.error = (...args: unknown[]) => {
      errors.push(args.join(" "));
    };
    try {
      assert.equal(await main(["start"]), 2);
    } finally {
      console.error = error;
      for (const k of keys) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
    assert.match(errors.join("\n"), /the release manifest .*garbled-for-start\.json is not JSON/);
  });

  const startWith = (manifestFile: string) =>
    execa(process.execPath, ["--import", "tsx", MAIN], {
      env: {
        FAAS_RELEASE_MANIFEST: manifestFile,
        FAAS_STATE_DIR: path.join(dir, "state"),
        PORT: "0",
        ADMIN_PORT: "0",
      },
      extendEnv: false,
      reject: false,
      timeout: 60_000,
    });

  it("stops the start with exit 2 when the file is missing, not JSON, or lacks a field", async () => {
    const missing = await startWith(path.join(dir, "nope.json"));
    assert.equal(missing.exitCode, 2, missing.stderr);
    assert.match(missing.stderr, /cannot read the release manifest .*nope\.json/);

    const garbled = path.join(dir, "garbled.json");
    await writeFile(garbled, "{not json");
    const notJson = await startWith(garbled);
    assert.equal(notJson.exitCode, 2, notJson.stderr);
    assert.match(notJson.stderr, /the release manifest .*garbled\.json is not JSON/);

    const partial = path.join(dir, "partial.json");
    const { pool: _, ...noPool } = MANIFEST.config;
    await writeFile(partial, JSON.stringify({ ...MANIFEST, config: noPool }));
    const noPoolRun = await startWith(partial);
    assert.equal(noPoolRun.exitCode, 2, noPoolRun.stderr);
    assert.match(noPoolRun.stderr, /invalid release manifest .*partial\.json:\n {2}config\.pool: /);
  });
});
