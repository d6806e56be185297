import assert from "node:assert/strict";
import { ArtifactStore } from "../../components/artifact-store.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

describe("ArtifactStore", () => {
  usePulumiMocks();

  it("creates the bucket with versioning, encryption, public access block, lifecycle and a TLS-only policy", async () => {
    const store = new ArtifactStore("art", { noncurrentVersionDays: 14 });
    assert.equal(await promiseOf(store.bucketName), "art-bucket-mock");
    assert.equal(await promiseOf(store.bucketArn), "arn:aws:s3:::art-bucket-mock");
    await settled(store);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:s3/bucket:Bucket art-bucket",
      "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration art-lifecycle",
      "aws:s3/bucketPolicy:BucketPolicy art-tls-only",
      "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock art-public-access-block",
      "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration art-encryption",
      "aws:s3/bucketVersioning:BucketVersioning art-versioning",
      "snapfaas:index:ArtifactStore art",
    ]);

    const block = findRegistered(
      "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
      "art-public-access-block",
    ).inputs;
    assert.deepEqual(
      [block.blockPublicAcls, block.blockPublicPolicy, block.ignorePublicAcls, block.restrictPublicBuckets],
      [true, true, true, true],
    );
    assert.deepEqual(
      findRegistered("aws:s3/bucketVersioning:BucketVersioning", "art-versioning").inputs
        .versioningConfiguration,
      {
        status: "Enabled",
      },
    );
    assert.deepEqual(
      findRegistered(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "art-encryption",
      ).inputs.rules,
      [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" }, bucketKeyEnabled: true }],
    );
    const lifecycle = findRegistered(
      "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
      "art-lifecycle",
    ).inputs.rules as Array<Record<string, unknown>>;
    assert.deepEqual(lifecycle[0]?.noncurrentVersionExpiration, { noncurrentDays: 14 });
    assert.deepEqual(lifecycle[1]?.abortIncompleteMultipartUpload, { daysAfterInitiation: 7 });

    const policy = JSON.parse(
      findRegistered("aws:s3/bucketPolicy:BucketPolicy", "art-tls-only").inputs.policy as string,
    );
    assert.deepEqual(policy.Statement, [
      {
        Sid: "DenyPlainHttp",
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        Resource: ["arn:aws:s3:::art-bucket-mock", "arn:aws:s3:::art-bucket-mock/*"],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      },
    ]);
    assert.equal(findRegistered("aws:s3/bucket:Bucket", "art-bucket").inputs.forceDestroy, false);
  });
});
