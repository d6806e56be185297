import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import yazl from "yazl";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

describe("examples/pulumi-consumer", () => {
  usePulumiMocks();
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "snapfaas-consumer-"));
    const zip = new yazl.ZipFile();
    zip.addBuffer(Buffer.from('{"name":"hello-world"}'), "package.json");
    zip.addBuffer(Buffer.from("exports.handler = async () => ({ statusCode: 200 });\n"), "index.js");
    zip.end();
    const chunks: Buffer[] = [];
    for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
    await writeFile(join(dir, "hello.zip"), Buffer.concat(chunks));
  });

  after(async () => {
    pulumi.runtime.setAllConfig({});
    await rm(dir, { recursive: true, force: true });
  });

  it("deploys a function into the referenced platform's bucket", async () => {
    pulumi.runtime.setAllConfig({
      "snapfaas:platformStack": "acme/snapfaas/prod",
      "snapfaas:archive": join(dir, "hello.zip"),
    });
    const example = (await import("../../examples/pulumi-consumer/index.ts")) as {
      default: () => Promise<{ url: pulumi.Output<string>; codeHash: pulumi.Output<string> }>;
    };
    const outputs = await example.default();
    assert.equal(await promiseOf(outputs.url), "https://faas.example.com/hello-world");
    assert.match(await promiseOf(outputs.codeHash), /^[0-9a-f]{64}$/);
    await settled();
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:s3/bucketObjectv2:BucketObjectv2 hello-world-bundle",
      "aws:s3/bucketObjectv2:BucketObjectv2 hello-world-record",
      "pulumi:pulumi:StackReference platform",
      "snapfaas:index:FaasFunction hello-world",
    ]);
    const record = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "hello-world-record").inputs;
    assert.equal(record.bucket, "platform-artifacts");
    assert.equal(record.key, "functions/registry/hello-world.json");
    assert.equal(JSON.parse(record.content as string).entry, "index.js");
  });
});
