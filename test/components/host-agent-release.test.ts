import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { HostAgentRelease } from "../../components/host-agent-release.ts";
import { poolSettings } from "../support/fixtures.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  unwrapSecret,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

async function assetText(source: unknown): Promise<string> {
  return (await (source as pulumi.asset.StringAsset).text) as string;
}

describe("HostAgentRelease", () => {
  usePulumiMocks();
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "snapfaas-release-component-"));
    await mkdir(join(dir, "agent"));
    await writeFile(join(dir, "agent", "main.ts"), 'console.log("agent");\n');
    await writeFile(join(dir, "runtime.ts"), 'console.log("runtime");\n');
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("uploads both bundles under their content hash and publishes the manifest to SSM", async () => {
    const release = new HostAgentRelease("rel", {
      bucketName: "art-bucket",
      agentEntry: join(dir, "agent", "main.ts"),
      guestRuntimeEntry: join(dir, "runtime.ts"),
      agentVersion: "0.1.0",
      baseImageVersion: "f".repeat(64),
      firecrackerVersion: "1.16.1",
      poolSettings,
      parameterName: "/snapfaas/test/release",
    });
    const manifest = await promiseOf(release.manifest);
    await settled(release);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:s3/bucketObjectv2:BucketObjectv2 rel-agent-bundle",
      "aws:s3/bucketObjectv2:BucketObjectv2 rel-guest-runtime-bundle",
      "aws:ssm/parameter:Parameter rel-manifest",
      "snapfaas:index:HostAgentRelease rel",
    ]);

    const agentObject = findRegistered("aws:s3/bucketObjectv2:BucketObjectv2", "rel-agent-bundle").inputs;
    const agentText = await assetText(agentObject.source);
    assert.ok(agentText.includes('console.log("agent")'));
    const agentHash = createHash("sha256").update(agentText).digest("hex");
    assert.equal(agentObject.key, `releases/host-agent/${agentHash}.mjs`);
    assert.equal(agentObject.bucket, "art-bucket");

    const runtimeObject = findRegistered(
      "aws:s3/bucketObjectv2:BucketObjectv2",
      "rel-guest-runtime-bundle",
    ).inputs;
    const runtimeHash = createHash("sha256")
      .update(await assetText(runtimeObject.source))
      .digest("hex");
    assert.equal(runtimeObject.key, `releases/guest-runtime/${runtimeHash}.mjs`);

    assert.deepEqual(manifest.agent, { key: agentObject.key, sha256: agentHash });
    assert.deepEqual(manifest.guestRuntime, { key: runtimeObject.key, sha256: runtimeHash });
    assert.equal(manifest.agentVersion, "0.1.0");
    assert.equal(manifest.baseImageVersion, "f".repeat(64));
    assert.deepEqual(manifest.config, poolSettings);

    const parameter = findRegistered("aws:ssm/parameter:Parameter", "rel-manifest").inputs;
    assert.equal(parameter.name, "/snapfaas/test/release");
    assert.equal(parameter.type, "String");
    // The SDK marks a Parameter's value secret, so it arrives wrapped.
    assert.deepEqual(JSON.parse(unwrapSecret(parameter.value) as string), manifest);
    assert.equal(await promiseOf(release.releaseVersion), manifest.releaseVersion);
  });
});
