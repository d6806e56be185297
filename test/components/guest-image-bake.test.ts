import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { bakedManifestKey, renderBakeScript } from "../../components/bake-script.ts";
import { GuestImageBake, type GuestImageBakeArgs } from "../../components/guest-image-bake.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  unwrapSecret,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

const recipeHash = "a".repeat(64);
const scriptInput = {
  bucketName: "art-bucket",
  recipeHash,
  region: "us-east-1",
  sourceDir: "/home/ec2-user/snapfaas-src",
  nodeVersion: "20.19.5",
  osvRef: "v0.57.0",
};

describe("renderBakeScript", () => {
  it("skips when the manifest of this recipe hash is already uploaded, else bakes and uploads it last", () => {
    const script = renderBakeScript(scriptInput);
    assert.ok(
      script.includes(`if aws s3 ls "s3://$BUCKET/images/${recipeHash}/manifest.json" >/dev/null 2>&1; then`),
    );
    assert.ok(script.includes('npm-20 run bake -- --driver firecracker --guest osv --out "$OUT"'));
    const artifacts = script.indexOf("--exclude manifest.json");
    const manifest = script.indexOf('"$OUT/manifest.json" "s3://$BUCKET/$PREFIX/manifest.json"');
    assert.ok(artifacts > 0 && manifest > artifacts, "the manifest is uploaded after the artifacts");
    assert.equal(bakedManifestKey(recipeHash), `images/${recipeHash}/manifest.json`);
  });

  it("hands OSv and Node overrides to the bake only when set", () => {
    const withOverrides = renderBakeScript(scriptInput);
    assert.ok(
      withOverrides.includes("export SNAPFAAS_OSV_REF=v0.57.0\nexport SNAPFAAS_NODE_VERSION=20.19.5\n"),
    );
    const { osvRef: _osv, nodeVersion: _node, ...plain } = scriptInput;
    const recipeOnly = renderBakeScript(plain);
    assert.ok(!recipeOnly.includes("export SNAPFAAS_OSV_REF"));
    assert.ok(!recipeOnly.includes("export SNAPFAAS_NODE_VERSION"));
  });

  it("refuses unsafe values", () => {
    assert.throws(
      () => renderBakeScript({ ...scriptInput, bucketName: "x$(id)" }),
      /bucketName has characters/,
    );
  });

  it("is shellcheck-clean", function () {
    if (spawnSync("shellcheck", ["--version"]).status !== 0) {
      console.log("    (skipped: shellcheck is not installed)");
      this.skip();
    }
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-bake-"));
    try {
      const file = join(dir, "bake.sh");
      writeFileSync(file, renderBakeScript(scriptInput));
      execFileSync("shellcheck", ["-s", "bash", file], { stdio: "pipe" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("GuestImageBake", () => {
  usePulumiMocks();

  const args: GuestImageBakeArgs = {
    bucketName: "art-bucket",
    bucketArn: "arn:aws:s3:::art-bucket",
    region: "us-east-1",
    recipeHash,
    sources: new pulumi.asset.AssetArchive({ "package.json": new pulumi.asset.StringAsset("{}") }),
    osvRef: "v0.57.0",
    nodeVersion: "20.19.5",
    builderInstanceType: "c5.metal",
    amiId: "ami-0123456789abcdef0",
    vpcId: "vpc-1",
    subnetId: "subnet-public-a",
    sshKeyName: "builder",
    sshPrivateKey: pulumi.secret("PRIVATE KEY"),
    sshIngressCidr: "203.0.113.7/32",
  };

  it("creates the builder and the upload and bake steps, triggered by the recipe hash", async () => {
    const bake = new GuestImageBake("bake", args);
    assert.equal(await promiseOf(bake.baseImageVersion), recipeHash);
    assert.equal(await promiseOf(bake.artifactsPrefix), `images/${recipeHash}/`);
    await settled(bake);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:ec2/instance:Instance bake-builder",
      "aws:ec2/securityGroup:SecurityGroup bake-ssh-sg",
      "aws:iam/instanceProfile:InstanceProfile bake-profile",
      "aws:iam/role:Role bake-role",
      "aws:iam/rolePolicy:RolePolicy bake-policy",
      "command:remote:Command bake-bake",
      "command:remote:CopyToRemote bake-upload-sources",
      "snapfaas:index:GuestImageBake bake",
    ]);
    const command = findRegistered("command:remote:Command", "bake-bake").inputs;
    assert.deepEqual(command.triggers, [recipeHash]);
    const create = command.create as string;
    assert.ok(create.startsWith("bash -s <<'SNAPFAAS_BAKE'\n#!/bin/bash\n"));
    assert.ok(create.endsWith("SNAPFAAS_BAKE\n"));
    assert.ok(create.includes(`images/${recipeHash}/manifest.json`));
    const connection = unwrapSecret(command.connection) as Record<string, unknown>;
    assert.deepEqual(
      [connection.host, connection.user, connection.dialErrorLimit],
      ["203.0.113.10", "ec2-user", 120],
    );
    assert.deepEqual(findRegistered("command:remote:CopyToRemote", "bake-upload-sources").inputs.triggers, [
      recipeHash,
    ]);
  });

  it("locks the builder down: SSH from one CIDR, IMDSv2, encrypted disk, S3 writes only under images/", async () => {
    const bake = new GuestImageBake("bake", args);
    await promiseOf(bake.builderPublicIp);
    await settled(bake);
    const sg = findRegistered("aws:ec2/securityGroup:SecurityGroup", "bake-ssh-sg").inputs;
    assert.deepEqual(sg.ingress, [
      {
        protocol: "tcp",
        fromPort: 22,
        toPort: 22,
        cidrBlocks: ["203.0.113.7/32"],
        description: "operator SSH",
      },
    ]);
    const builder = findRegistered("aws:ec2/instance:Instance", "bake-builder").inputs;
    assert.deepEqual(builder.metadataOptions, {
      httpEndpoint: "enabled",
      httpTokens: "required",
      httpPutResponseHopLimit: 1,
    });
    assert.equal(builder.rootBlockDevice.encrypted, true);
    assert.equal(builder.instanceType, "c5.metal");
    const policy = JSON.parse(
      findRegistered("aws:iam/rolePolicy:RolePolicy", "bake-policy").inputs.policy as string,
    );
    assert.deepEqual(
      policy.Statement.map((s: { Action: unknown; Resource: unknown }) => [s.Action, s.Resource]),
      [
        [["s3:GetObject", "s3:PutObject"], "arn:aws:s3:::art-bucket/images/*"],
        ["s3:ListBucket", "arn:aws:s3:::art-bucket"],
      ],
    );
  });

  it("refuses a builder type without KVM", () => {
    assert.throws(
      () => new GuestImageBake("bad", { ...args, builderInstanceType: "t3.large" }),
      (error: unknown) =>
        error instanceof pulumi.InputPropertiesError &&
        error.errors[0]?.propertyPath === "builderInstanceType",
    );
  });
});
