/**
 * The objects FaasFunction writes, from the pure helper (no Pulumi mocks): keys and body come from the
 * registry contract, and the agent's parser reads the body back to the same record.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { functionConfigOf, functionObjects } from "../../components/function-objects.ts";
import { ConfigError } from "../../contracts/function-config.ts";
import {
  bundleKey,
  nameOfRecordKey,
  parseRecord,
  RecordFormatError,
  recordKey,
} from "../../contracts/registry-layout.ts";
import { helloBundle } from "../helpers/tar-builder.ts";

describe("FaasFunction's registry objects", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-objects-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("are the contract's keys and a record body the agent parses back", async () => {
    const archive = path.join(dir, "hello.tar.gz");
    await writeFile(
      archive,
      helloBundle([{ name: "package.json", data: '{"name":"hello","main":"index.js"}' }]),
    );
    const codeHash = createHash("sha256")
      .update(await readFile(archive))
      .digest("hex");
    const objects = await functionObjects(archive, { functionName: "hello", prefix: "fx/", revision: 4 });
    assert.equal(objects.bundleKey, `fx/bundles/${codeHash}`);
    assert.equal(objects.bundleKey, bundleKey(codeHash, "fx/"));
    assert.equal(objects.recordKey, "fx/registry/hello.json");
    assert.equal(nameOfRecordKey(objects.recordKey, "fx/"), "hello");
    assert.deepEqual(parseRecord(objects.recordBody, objects.recordKey), {
      name: "hello",
      codeHash,
      format: "tar.gz",
      bundleBytes: (await stat(archive)).size,
      unpackedBytes: objects.record.unpackedBytes,
      fileCount: 2,
      entry: "index.js",
      deployedAt: (await stat(archive)).mtime.toISOString(),
      revision: 4,
    });
  });

  it("carry the function's settings in the record and its secrets in their own object, never in the record", async () => {
    const archive = path.join(dir, "configured.tar.gz");
    await writeFile(
      archive,
      helloBundle([{ name: "package.json", data: '{"name":"api","main":"index.js"}' }]),
    );
    const objects = await functionObjects(archive, {
      functionName: "api",
      prefix: "functions/",
      revision: 2,
      config: { env: { STAGE: "prod" }, memoryMiB: 512, timeoutMs: 5000, egress: true, concurrency: 4 },
      secrets: { DB_PASSWORD: "hunter2-very-secret" },
    });
    const record = parseRecord(objects.recordBody, objects.recordKey);
    const { secretsRevision, ...config } = record.config!;
    assert.deepEqual(config, {
      env: { STAGE: "prod" },
      secretNames: ["DB_PASSWORD"],
      memoryMiB: 512,
      timeoutMs: 5000,
      egress: true,
      concurrency: 4,
    });
    assert.ok(Number.isSafeInteger(secretsRevision) && secretsRevision! > 0);
    assert.ok(!objects.recordBody.includes("hunter2"), "no secret value in the record");
    assert.deepEqual(objects.secrets, {
      key: "functions/secrets/api.json",
      body: JSON.stringify({ DB_PASSWORD: "hunter2-very-secret" }),
    });
    // The revision follows the values: the same values keep it, a rotation changes it.
    const again = functionConfigOf(undefined, { DB_PASSWORD: "hunter2-very-secret" }).config;
    const rotated = functionConfigOf(undefined, { DB_PASSWORD: "another" }).config;
    assert.equal(again.secretsRevision, secretsRevision);
    assert.notEqual(rotated.secretsRevision, secretsRevision);
    // Without settings or secrets the record is as before: no config, no secrets object.
    const plain = await functionObjects(archive, { functionName: "api", prefix: "", revision: 1 });
    assert.equal(plain.record.config, undefined);
    assert.equal(plain.secrets, undefined);
  });

  it("check settings with the admin API's rules, naming the field", () => {
    const refused = (config: object, secrets?: Record<string, string>) => {
      try {
        functionConfigOf(config, secrets);
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.message;
      }
      return "accepted";
    };
    assert.match(refused({ memoryMiB: 64 }), /^memoryMiB /);
    assert.match(refused({ timeoutMs: 10 }), /^timeoutMs /);
    assert.match(refused({ env: { "1BAD": "x" } }), /^env\.1BAD /);
    assert.match(refused({}, { AWS_LAMBDA_X: "x" }), /^secrets\.AWS_LAMBDA_X /);
    assert.match(refused({ concurrency: 1000 }), /^concurrency /);
    assert.equal(refused({ memoryMiB: 1024, cors: { allowOrigins: ["*"] } }), "accepted");
  });

  it("have a parser that names the key and the field, and keys that only name valid functions", () => {
    assert.throws(() => parseRecord("{", "k.json"), RecordFormatError);
    assert.throws(() => parseRecord('{"name":"x"}', "p/registry/x.json"), /p\/registry\/x\.json: "codeHash"/);
    assert.equal(nameOfRecordKey("registry/Bad_Name.json"), undefined);
    assert.equal(nameOfRecordKey("other/hello.json"), undefined);
    assert.equal(recordKey("a", ""), "registry/a.json");
  });
});
