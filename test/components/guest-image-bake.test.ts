// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the strings are shell text, where ${...} is bash
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import {
  BAKE_CACHE_DIR,
  BAKE_SOURCES_REMOTE_PATH,
  BUILDER_NODE,
  bakedManifestKey,
  renderBakeCommand,
  renderBakeScript,
} from "../../components/bake-script.ts";
import { GuestImageBake, type GuestImageBakeArgs } from "../../components/guest-image-bake.ts";
import {
  copyToRemoteSourceProblem,
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  unwrapSecret,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

const baseVersion = "a".repeat(64);
const scriptInput = {
  bucketName: "art-bucket",
  region: "us-east-1",
  baseVersion,
  guest: "linux" as const,
  vcpus: 2,
  memoryMiB: 512,
  hostAmi: "ami-0abc1234def567890",
};

describe("renderBakeScript", () => {
  it("skips when this version's manifest is uploaded, else bakes it and uploads the manifest last", () => {
    const script = renderBakeScript(scriptInput);
    assert.ok(script.includes('if s3 ls "s3://$BUCKET/${PREFIX}manifest.json" >/dev/null 2>&1; then'));
    assert.ok(script.includes(`PREFIX=images/${baseVersion}/\n`));
    assert.ok(script.includes('--driver firecracker --guest "$GUEST" --out "$OUT" --work "$WORK"'));
    assert.ok(script.includes('--vcpus "$VCPUS" --memory-mib "$MEMORY_MIB" --host-ami "$HOST_AMI"'));
    assert.ok(script.includes("VCPUS=2\nMEMORY_MIB=512\nHOST_AMI=ami-0abc1234def567890\n"));
    const artifacts = script.indexOf('--exclude manifest.json "$made/" "s3://$BUCKET/$PREFIX"');
    const manifest = script.indexOf('"$made/manifest.json" "s3://$BUCKET/${PREFIX}manifest.json"');
    assert.ok(artifacts > 0 && manifest > artifacts, "the manifest is uploaded after the artifacts");
    assert.equal(bakedManifestKey(baseVersion), `images/${baseVersion}/manifest.json`);
  });

  it("runs on Ubuntu with apt-get and an LTS node, never Node 20 or dnf", () => {
    const script = renderBakeScript(scriptInput);
    assert.ok(script.includes("apt-get install -y -q --no-install-recommends "));
    assert.doesNotMatch(script, /dnf|nodejs20|npm-20|node-20|ec2-user/);
    assert.match(BUILDER_NODE.version, /^(22|24)\./);
    assert.ok(script.includes(`/v${BUILDER_NODE.version}"`) && script.includes("sha256sum --check --strict"));
    assert.doesNotMatch(script, /\bsudo\b/, "the script runs as root as a whole; no sudo inside");
  });

  it("leaves the guest's build dependencies to its recipe (the OSv plan's osv-builder-packages step)", () => {
    const osv = renderBakeScript({ ...scriptInput, guest: "osv" });
    assert.ok(!osv.includes("libboost-dev"));
    assert.ok(!renderBakeScript(scriptInput).includes("libboost-dev"));
  });

  it("logs to a file on the builder, keeps its cache for retries and stops the builder when done", () => {
    const script = renderBakeScript(scriptInput);
    assert.ok(script.includes('exec 3>&1 >>"$LOG" 2>&1'));
    assert.ok(script.includes(`CACHE="\${SNAPFAAS_BAKE_CACHE:-${BAKE_CACHE_DIR}}"`));
    assert.ok(!script.includes('rm -rf "$OUT"') && !script.includes('rm -rf "$WORK"'));
    assert.ok(script.trimEnd().endsWith("stop_builder"));
    assert.ok(script.includes("shutdown -h +1"));
  });

  it("refuses unsafe values", () => {
    assert.throws(
      () => renderBakeScript({ ...scriptInput, bucketName: "x$(id)" }),
      /bucketName has characters/,
    );
    assert.throws(() => renderBakeScript({ ...scriptInput, baseVersion: "v1" }), /baseVersion must be 64/);
  });

  it("is shellcheck-clean, and so is the command that wraps it", function () {
    if (spawnSync("shellcheck", ["--version"]).status !== 0) {
      console.log("    (skipped: shellcheck is not installed)");
      this.skip();
    }
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-bake-"));
    try {
      const script = renderBakeScript(scriptInput);
      for (const [name, text] of [
        ["bake.sh", script],
        ["command.sh", `#!/bin/bash\n${renderBakeCommand(script)}`],
      ] as const) {
        const file = join(dir, name);
        writeFileSync(file, text);
        execFileSync("shellcheck", ["-s", "bash", file], { stdio: "pipe" });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("GuestImageBake", () => {
  usePulumiMocks();
  const scratch = mkdtempSync(join(tmpdir(), "snapfaas-bake-sources-"));
  const tarball = join(scratch, "bake-sources.tgz");
  writeFileSync(tarball, "a tarball");
  after(() => rmSync(scratch, { recursive: true, force: true }));

  const args: GuestImageBakeArgs = {
    bucketName: "art-bucket",
    bucketArn: "arn:aws:s3:::art-bucket",
    region: "us-east-1",
    baseImageVersion: baseVersion,
    sourcesTarball: tarball,
    guest: "linux",
    vcpus: 2,
    memoryMiB: 512,
    hostAmi: "ami-0abc1234def567890",
    builderInstanceType: "c5.metal",
    amiId: "ami-0123456789abcdef0",
    vpcId: "vpc-1",
    subnetId: "subnet-public-a",
    sshKeyName: "builder",
    sshPrivateKey: pulumi.secret("PRIVATE KEY"),
    sshIngressCidr: "203.0.113.7/32",
  };

  it("creates the builder and the upload and bake steps, triggered by the base version", async () => {
    const bake = new GuestImageBake("bake", args);
    assert.equal(await promiseOf(bake.baseImageVersion), baseVersion);
    assert.equal(await promiseOf(bake.artifactsPrefix), `images/${baseVersion}/`);
    await settled(bake);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:ec2/eip:Eip bake-builder-ip",
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
    assert.deepEqual(command.triggers, [baseVersion]);
    assert.equal(
      command.create,
      renderBakeCommand(renderBakeScript(scriptInput)),
      "the script rendered from the component's own inputs",
    );
    const connection = unwrapSecret(command.connection) as Record<string, unknown>;
    assert.deepEqual(
      [connection.host, connection.user, connection.dialErrorLimit],
      ["203.0.113.20", "ubuntu", 120],
    );
    const copy = findRegistered("command:remote:CopyToRemote", "bake-upload-sources").inputs;
    assert.deepEqual(copy.triggers, [baseVersion]);
    assert.ok(copy.source instanceof pulumi.asset.FileAsset, "a path-based source, as the provider requires");
    assert.equal(await copy.source.path, tarball);
    assert.equal(copy.remotePath, BAKE_SOURCES_REMOTE_PATH);
    const builder = findRegistered("aws:ec2/instance:Instance", "bake-builder").inputs;
    assert.equal(builder.userDataReplaceOnChange, true, "a new base version gets a fresh builder");
    assert.ok((builder.userData as string).includes(baseVersion));
    assert.equal(builder.instanceInitiatedShutdownBehavior, "stop");
    // The bake stops the builder; the connection keeps a fixed address across stops and replacements.
    const eip = findRegistered("aws:ec2/eip:Eip", "bake-builder-ip").inputs;
    assert.equal(eip.instance, "bake-builder-id");
    assert.equal(await promiseOf(bake.builderPublicIp), "203.0.113.20");
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

  it("refuses a missing sources tarball, naming the property", () => {
    assert.throws(
      () => new GuestImageBake("bad", { ...args, sourcesTarball: join(scratch, "none.tgz") }),
      (error: unknown) =>
        error instanceof pulumi.InputPropertiesError && error.errors[0]?.propertyPath === "sourcesTarball",
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

describe("the CopyToRemote contract the mocks keep (pulumi-command v1.2.1 Check)", () => {
  it("refuses an AssetArchive or a remote asset (no path), as the provider does, and accepts path-based sources", () => {
    const archive = new pulumi.asset.AssetArchive({ "package.json": new pulumi.asset.StringAsset("{}") });
    assert.equal(copyToRemoteSourceProblem(archive), "archive must be a path to a file or directory");
    assert.match(
      copyToRemoteSourceProblem(new pulumi.asset.RemoteAsset("https://example.com/x")) ?? "",
      /must be a path/,
    );
    assert.equal(copyToRemoteSourceProblem(new pulumi.asset.FileAsset("/etc/hostname")), undefined);
    assert.equal(copyToRemoteSourceProblem(new pulumi.asset.FileArchive("/etc/")), undefined);
  });
});
