/** The configuration contract: what the admin API accepts, how a change applies, what old records load as. */
import assert from "node:assert/strict";
import {
  applyConfigPatch,
  ConfigError,
  envNameProblem,
  parseConfigPatch,
  publicConfig,
  storedConfigProblem,
} from "../../contracts/function-config.ts";
import { parseRecord } from "../../contracts/registry-layout.ts";

const LIMITS = { maxMemoryMiB: 1024, maxTimeoutMs: 60_000 };

const OLD_RECORD = {
  name: "old",
  codeHash: "d".repeat(64),
  format: "tar.gz",
  bundleBytes: 1,
  unpackedBytes: 2,
  fileCount: 1,
  entry: "index.js",
  deployedAt: "2026-11-01T00:00:00.000Z",
  revision: 3,
};

describe("function configuration contract", () => {
  it("loads a record written before configuration existed, and one with it", () => {
    assert.deepEqual(parseRecord(JSON.stringify(OLD_RECORD), "k"), OLD_RECORD);
    const withConfig = { ...OLD_RECORD, config: { env: { A: "1" }, memoryMiB: 512 } };
    assert.deepEqual(parseRecord(JSON.stringify(withConfig), "k"), withConfig);
    assert.throws(
      () =>
        parseRecord(JSON.stringify({ ...OLD_RECORD, config: { env: { "9x": "1" } } }), "registry/old.json"),
      /registry object registry\/old.json: "config": env\.9x must be letters/,
    );
  });

  it("takes POSIX names and refuses the platform's prefixes and names", () => {
    assert.equal(envNameProblem("DATABASE_URL"), null);
    assert.equal(envNameProblem("_private"), null);
    assert.match(String(envNameProblem("aws_region")), /starts with AWS_/);
    assert.match(String(envNameProblem("FAAS_STATE_DIR")), /starts with FAAS_/);
    assert.match(String(envNameProblem("LAMBDA_TASK_ROOT")), /starts with LAMBDA_/);
    assert.match(String(envNameProblem("NODE_OPTIONS")), /read only when node starts/);
    assert.match(String(envNameProblem("A-B")), /POSIX/);
  });

  it("applies a patch: names set or removed, fields kept unless given, null back to the default", () => {
    const first = applyConfigPatch(
      undefined,
      {},
      parseConfigPatch({ env: { A: "1", B: "2" }, memoryMiB: 256, secrets: { S: "x" } }, LIMITS),
    );
    assert.deepEqual(first.config, {
      env: { A: "1", B: "2" },
      secretNames: ["S"],
      secretsRevision: 1,
      memoryMiB: 256,
    });
    assert.deepEqual(first.secrets, { S: "x" });
    const second = applyConfigPatch(
      first.config,
      first.secrets!,
      parseConfigPatch({ env: { B: null, C: "3" }, memoryMiB: null, timeoutMs: 2000 }, LIMITS),
    );
    assert.deepEqual(second.config, {
      env: { A: "1", C: "3" },
      secretNames: ["S"],
      secretsRevision: 1,
      timeoutMs: 2000,
    });
    assert.equal(second.secrets, undefined, "secrets untouched: the store is not written");
    const third = applyConfigPatch(
      second.config,
      { S: "x" },
      parseConfigPatch({ secrets: { S: null } }, LIMITS),
    );
    assert.deepEqual(third.config, { env: { A: "1", C: "3" }, secretsRevision: 2, timeoutMs: 2000 });
    assert.deepEqual(third.secrets, {});
  });

  it("shows names, never values", () => {
    assert.deepEqual(publicConfig({ env: { B: "secretish", A: "v" }, secretNames: ["K"], memoryMiB: 128 }), {
      env: ["A", "B"],
      secrets: ["K"],
      memoryMiB: 128,
      timeoutMs: null,
      cors: null,
      egress: false,
    });
  });

  it("takes egress as true, false or null, keeps it until changed, and stores it only when on", () => {
    assert.deepEqual(parseConfigPatch({ egress: true }, LIMITS), { egress: true });
    assert.throws(
      () => parseConfigPatch({ egress: "yes" }, LIMITS),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message === "egress must be true (outbound network) or false (none, the default)",
    );
    const on = applyConfigPatch(undefined, {}, { egress: true }).config;
    assert.deepEqual(on, { egress: true });
    assert.deepEqual(applyConfigPatch(on, {}, { memoryMiB: 256 }).config, { egress: true, memoryMiB: 256 });
    assert.deepEqual(applyConfigPatch(on, {}, { egress: false }).config, {});
    assert.deepEqual(applyConfigPatch(on, {}, { egress: null }).config, {});
    assert.equal(publicConfig(on).egress, true);
    assert.equal(storedConfigProblem({ egress: "on" }), "egress must be true or false");
    assert.equal(storedConfigProblem({ egress: true }), null);
  });

  it("names the field and the allowed range when a value is out of bounds", () => {
    assert.throws(
      () => parseConfigPatch({ memoryMiB: 64 }, LIMITS),
      (e: Error) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(e.message, "memoryMiB must be a whole number of MiB from 128 to 1024 on this host");
        return true;
      },
    );
    assert.throws(
      () => parseConfigPatch({ timeoutMs: 1.5 }, LIMITS),
      /timeoutMs must be a whole number of ms from 1000 to 60000/,
    );
    assert.throws(() => parseConfigPatch({ env: { A: 1 } }, LIMITS), /env\.A must be a string/);
    assert.throws(() => parseConfigPatch({ env: { A: "a\0b" } }, LIMITS), /NUL/);
    assert.throws(() => parseConfigPatch([], LIMITS), /config must be a JSON object/);
    assert.throws(
      () => applyConfigPatch(undefined, {}, parseConfigPatch({ secrets: { K: "x".repeat(17_000) } }, LIMITS)),
      /secrets are \d+ bytes: names and values together may take 16384/,
    );
  });

  it("takes a concurrency from 1 to 100, keeps it across patches, shows it once set, and null puts it back", () => {
    const set = applyConfigPatch(undefined, {}, parseConfigPatch({ concurrency: 8 }, LIMITS)).config;
    assert.deepEqual(set, { concurrency: 8 });
    assert.equal(publicConfig(set).concurrency, 8);
    const kept = applyConfigPatch(set, {}, parseConfigPatch({ timeoutMs: 2000 }, LIMITS)).config;
    assert.deepEqual(kept, { timeoutMs: 2000, concurrency: 8 });
    const back = applyConfigPatch(kept, {}, parseConfigPatch({ concurrency: null }, LIMITS)).config;
    assert.deepEqual(back, { timeoutMs: 2000 });
    assert.equal(
      "concurrency" in publicConfig(back),
      false,
      "a record without it serves one call per instance",
    );
    for (const bad of [0, 101, 2.5, "3"])
      assert.throws(
        () => parseConfigPatch({ concurrency: bad }, LIMITS),
        /^ConfigError: concurrency must be a whole number of calls from 1 to 100/,
      );
  });
});
