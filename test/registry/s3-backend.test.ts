import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";
import { bundleKey, type FunctionRecord, recordKey, secretsKey } from "../../contracts/registry-layout.ts";
import { S3RegistryBackend } from "../../host-agent/registry/s3-backend.ts";

const BUCKET = "snapfaas-artifacts";

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function record(name: string, codeHash: string, revision = 1): FunctionRecord {
  return {
    name,
    codeHash,
    format: "tar.gz",
    bundleBytes: 11,
    unpackedBytes: 42,
    fileCount: 2,
    entry: "index.js",
    deployedAt: "2026-11-28T07:00:00.000Z",
    revision,
  };
}

/** Every record the backend lists, read: what a registry refresh sees. */
async function loadAll(backend: S3RegistryBackend): Promise<FunctionRecord[]> {
  const records: FunctionRecord[] = [];
  for (const ref of await backend.listRecords()) {
    const record = await backend.readRecord(ref);
    if (record) records.push(record);
  }
  return records;
}

describe("S3RegistryBackend against a local S3-compatible server (s3rver)", () => {
  let server: S3rver;
  let dataDir: string;
  let client: S3Client;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "snapfaas-s3rver-"));
    server = new S3rver({
      address: "127.0.0.1",
      port: 0,
      silent: true,
      directory: dataDir,
      configureBuckets: [{ name: BUCKET }],
    });
    const address = await server.run();
    client = new S3Client({
      endpoint: `http://127.0.0.1:${address.port}`,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
      // s3rver predates the flexible-checksum headers newer SDKs send by default.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  });

  after(async () => {
    client?.destroy();
    await server?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("starts empty, stores records and loads them back sorted by key", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t1/", client });
    assert.deepEqual(await loadAll(backend), []);
    const hashA = "a".repeat(64);
    const hashB = "b".repeat(64);
    await backend.putRecord(record("zeta", hashB));
    await backend.putRecord(record("alpha", hashA));
    assert.deepEqual(await loadAll(backend), [record("alpha", hashA), record("zeta", hashB)]);
  });

  it("replaces a record whole and deletes it", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t2/", client });
    await backend.putRecord(record("hello", "1".repeat(64), 1));
    await backend.putRecord(record("hello", "2".repeat(64), 2));
    assert.deepEqual(await loadAll(backend), [record("hello", "2".repeat(64), 2)]);
    await backend.deleteRecord("hello");
    assert.deepEqual(await loadAll(backend), []);
  });

  it("keeps a record's config, and its secrets in their own object that the record never holds", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t9/", client });
    const configured: FunctionRecord = {
      ...record("vault", "c".repeat(64)),
      config: { env: { MODE: "prod" }, secretNames: ["TOKEN"], secretsRevision: 1, memoryMiB: 256 },
    };
    assert.deepEqual(await backend.getSecrets("vault"), {});
    await backend.putSecrets("vault", { TOKEN: "t-0p-s3cret" });
    await backend.putRecord(configured);
    assert.deepEqual(await loadAll(backend), [configured]);
    assert.deepEqual(await backend.getSecrets("vault"), { TOKEN: "t-0p-s3cret" });
    const stored = await client.send(
      new GetObjectCommand({ Bucket: BUCKET, Key: recordKey("vault", "t9/") }),
    );
    assert.ok(
      !(await stored.Body!.transformToString()).includes("t-0p-s3cret"),
      "the record holds no secret",
    );
    const secrets = await client.send(
      new GetObjectCommand({ Bucket: BUCKET, Key: secretsKey("vault", "t9/") }),
    );
    assert.deepEqual(JSON.parse(await secrets.Body!.transformToString()), { TOKEN: "t-0p-s3cret" });
    await backend.putSecrets("vault", {});
    assert.deepEqual(await backend.getSecrets("vault"), {}, "an empty set removes the object");
  });

  it("stores bundles by content hash, idempotently, and returns undefined for unknown hashes", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t3/", client });
    const bytes = Buffer.from("bundle body");
    const hash = sha256(bytes);
    assert.equal(await backend.getBundle(hash), undefined);
    await backend.putBundle(hash, bytes);
    await backend.putBundle(hash, bytes);
    assert.deepEqual(await backend.getBundle(hash), bytes);
    assert.equal(await backend.getBundle("f".repeat(64)), undefined);
  });

  it("refuses bundle bytes that do not hash to the given code hash", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t4/", client });
    const hash = "0".repeat(64);
    await assert.rejects(backend.putBundle(hash, Buffer.from("other")), /not to the given code hash/);
    assert.equal(await backend.getBundle(hash), undefined);
  });

  it("rejects invalid names and hashes before touching the store", async () => {
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix: "t5/", client });
    await assert.rejects(backend.putRecord(record("Bad_Name", "a".repeat(64))), /must match/);
    await assert.rejects(backend.getBundle("../etc"), /64 lowercase hex/);
    await assert.rejects(backend.deleteRecord("9lives"), /must match/);
  });

  it("names the object when a stored record is malformed or under the wrong key", async () => {
    const prefix = "t6/";
    const backend = new S3RegistryBackend({ bucket: BUCKET, prefix, client });
    await client.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: recordKey("broken", prefix),
        Body: JSON.stringify({ ...record("broken", "c".repeat(64)), revision: "one" }),
      }),
    );
    await assert.rejects(loadAll(backend), /t6\/registry\/broken\.json: "revision" must be a number/);

    const misplaced = "t7/";
    await client.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: recordKey("one", misplaced),
        Body: JSON.stringify(record("two", "c".repeat(64))),
      }),
    );
    const other = new S3RegistryBackend({ bucket: BUCKET, prefix: misplaced, client });
    await assert.rejects(loadAll(other), /t7\/registry\/one\.json holds the record of "two"/);
  });

  it("uses the documented key layout", () => {
    assert.equal(recordKey("hello", "p/"), "p/registry/hello.json");
    assert.equal(bundleKey("ab", ""), "bundles/ab");
  });
});
