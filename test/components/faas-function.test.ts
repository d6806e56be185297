import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import yazl from "yazl";
import { FaasFunction } from "../../components/faas-function.ts";
import { parseRecord } from "../../contracts/registry-layout.ts";
import {
  findRegistered,
  isSecretInput,
  promiseOf,
  registeredTypesAndNames,
  settled,
  unwrapSecret,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

describe("FaasFunction", () => {
  usePulumiMocks();
  let dir: string;
  let archive: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "snapfaas-fn-"));
    archive = join(dir, "hello.zip");
    const zip = new yazl.ZipFile();
    zip.addBuffer(Buffer.from('{"name":"hello","main":"app.js"}'), "package.json");
    zip.addBuffer(Buffer.from("export class HelloWorldService {}\n"), "app.js");
    zip.end();
    const chunks: Buffer[] = [];
    for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
    await writeFile(archive, Buffer.concat(chunks));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("uploads the archive by content hash and writes the record the S3 registry backend reads", async () => {
    const fn = new FaasFunction("hello", {
      bucketName: "art-bucket",
      functionName: "hello",
      archivePath: archive,
      revision: 3,
    });
    const codeHash = createHash("sha256")
      .update(await readFile(archive))
      .digest("hex");
    assert.equal(await promiseOf(fn.codeHash), codeHash);
    assert.equal(await promiseOf(fn.recordKey), "functions/registry/hello.json");
    assert.equal(await promiseOf(fn.bundleKey), `functions/bundles/${codeHash}`);
    await settled(fn);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:s3/bucketObjectv2:BucketObjectv2 hello-bundle",
      "aws:s3/bucketObjectv2:BucketObjectv2 hello-record",
      "snapfaas:index:FaasFunction hello",
    ]);
    const bundle = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "hello-bundle").inputs;
    assert.equal(bundle.bucket, "art-bucket");
    assert.equal(await (bundle.source as pulumi.asset.FileAsset).path, archive);

    const recordInputs = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "hello-record").inputs;
    assert.equal(recordInputs.contentType, "application/json");
    const record = parseRecord(Buffer.from(recordInputs.content as string), "functions/registry/hello.json");
    assert.deepEqual(record, {
      name: "hello",
      codeHash,
      format: "zip",
      bundleBytes: (await stat(archive)).size,
      unpackedBytes: 32 + 34,
      fileCount: 2,
      entry: "app.js",
      deployedAt: (await stat(archive)).mtime.toISOString(),
      revision: 3,
    });
  });

  it("writes settings into the record and secrets into their own object (a Pulumi secret), never into the record", async () => {
    const fn = new FaasFunction("api", {
      bucketName: "art-bucket",
      functionName: "api",
      archivePath: archive,
      config: { env: { STAGE: "prod" }, memoryMiB: 512, egress: true },
      secrets: { DB_PASSWORD: pulumi.secret("hunter2-very-secret") },
    });
    await settled(fn);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:s3/bucketObjectv2:BucketObjectv2 api-bundle",
      "aws:s3/bucketObjectv2:BucketObjectv2 api-record",
      "aws:s3/bucketObjectv2:BucketObjectv2 api-secrets",
      "snapfaas:index:FaasFunction api",
    ]);
    const secrets = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "api-secrets").inputs;
    assert.equal(secrets.bucket, "art-bucket");
    assert.equal(secrets.key, "functions/secrets/api.json");
    assert.ok(isSecretInput(secrets.content), "the values are a secret in the state");
    assert.deepEqual(JSON.parse(unwrapSecret(secrets.content) as string), {
      DB_PASSWORD: "hunter2-very-secret",
    });
    const recordInputs = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "api-record").inputs;
    const recordBody = unwrapSecret(recordInputs.content) as string;
    assert.ok(!recordBody.includes("hunter2"), "no secret value in the record");
    const { secretsRevision, ...config } = parseRecord(Buffer.from(recordBody), "functions/registry/api.json")
      .config!;
    assert.deepEqual(config, {
      env: { STAGE: "prod" },
      secretNames: ["DB_PASSWORD"],
      memoryMiB: 512,
      egress: true,
    });
    assert.ok(secretsRevision! > 0);
  });

  it("names the setting at fault, with what is allowed, before anything is registered", () => {
    const attempt = (extra: object) => () =>
      new FaasFunction("bad", { bucketName: "b", functionName: "api", archivePath: archive, ...extra });
    const names = (extra: object) => {
      try {
        attempt(extra)();
      } catch (error) {
        assert.ok(error instanceof pulumi.InputPropertiesError);
        return error.errors.map((e) => `${e.propertyPath}: ${e.reason}`);
      }
      return [];
    };
    const [memory] = names({ config: { memoryMiB: 64 } });
    assert.match(memory!, /^config\.memoryMiB: must be/);
    const [env] = names({ config: { env: { "1X": "v" } } });
    assert.match(env!, /^config\.env\.1X: must be letters/);
    const [secret] = names({ secrets: { AWS_LAMBDA_RUNTIME_API: pulumi.secret("v") } });
    assert.match(secret!, /^secrets\.AWS_LAMBDA_RUNTIME_API: /);
    assert.deepEqual(names({ config: { timeoutMs: 5000 } }), []);
  });

  it("names functionName when it is not a valid function name", () => {
    assert.throws(
      () => new FaasFunction("bad", { bucketName: "b", functionName: "Hello_World", archivePath: archive }),
      (error: unknown) =>
        error instanceof pulumi.InputPropertiesError &&
        error.errors.length === 1 &&
        error.errors[0]?.propertyPath === "functionName",
    );
  });

  it("refuses a name the hosts keep for their own routes, naming functionName", () => {
    for (const reserved of ["healthz", "metrics", "v1"]) {
      assert.throws(
        () => new FaasFunction("bad", { bucketName: "b", functionName: reserved, archivePath: archive }),
        (error: unknown) =>
          error instanceof pulumi.InputPropertiesError &&
          error.errors[0]?.propertyPath === "functionName" &&
          /reserved/.test(error.errors[0]?.reason ?? ""),
      );
    }
  });
});
