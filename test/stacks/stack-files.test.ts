import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parse as parseYaml } from "yaml";
import { readStackFileConfig } from "../../components/config.ts";
import type { StackOutputs } from "../../components/stack-program.ts";
import { createFixtureRepo, type FixtureRepo } from "../support/fixture-repo.ts";
import {
  findRegistered,
  promiseOf,
  registered,
  settled,
  unwrapSecret,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

const STACKS_DIR = join(import.meta.dirname, "..", "..", "stacks");
const stackFiles = readdirSync(STACKS_DIR)
  .filter((f) => /^Pulumi\.[a-z0-9-]+\.yaml$/.test(f))
  .sort();

/** What `pulumi config set --secret` would add on an operator's machine; never stored in plain text. */
const OPERATOR_SECRETS: Record<string, string> = {
  "snapfaas:bakeSshPrivateKey":
    "-----BEGIN OPENSSH PRIVATE KEY-----\nfixture\n-----END OPENSSH PRIVATE KEY-----",
};

type ProgramMain = (options?: { repoRoot?: string }) => Promise<StackOutputs>;

/**
 * The program is loaded with import() (ESM) while mocha may load this file through require; the error
 * class must come from the same module instance the program throws from.
 */
async function programErrorClass(): Promise<typeof import("../../components/config.ts").StackConfigError> {
  return (await import("../../components/config.ts")).StackConfigError;
}

async function runProgram(config: Record<string, string>, repo: FixtureRepo): Promise<StackOutputs> {
  pulumi.runtime.setAllConfig(config, Object.keys(OPERATOR_SECRETS));
  const program = (await import("../../index.ts")) as { default: ProgramMain };
  return program.default({ repoRoot: repo.root });
}

/** The operator's own address, set as the stack file's comment says (its TEST-NET placeholder is refused). */
const OPERATOR_SSH_CIDR = "100.64.12.4/32";

function configOf(file: string): Record<string, string> {
  const { values } = readStackFileConfig(parseYaml(readFileSync(join(STACKS_DIR, file), "utf8")));
  const bake = values["snapfaas:bake"];
  if (bake === undefined) return values;
  return {
    ...values,
    ...OPERATOR_SECRETS,
    "snapfaas:bake": JSON.stringify({ ...JSON.parse(bake), sshIngressCidr: OPERATOR_SSH_CIDR }),
  };
}

describe("stack files through index.ts (mocks)", () => {
  usePulumiMocks();
  let repo: FixtureRepo;

  before(async () => {
    repo = await createFixtureRepo();
  });

  after(async () => {
    pulumi.runtime.setAllConfig({});
    await repo.remove();
  });

  it("ships the dev, local and prod stacks (each stack file below goes through the program)", () => {
    for (const required of ["Pulumi.dev.yaml", "Pulumi.local.yaml", "Pulumi.prod.yaml"]) {
      assert.ok(stackFiles.includes(required), `${required} is missing from stacks/`);
    }
  });

  for (const file of stackFiles) {
    it(`${file} builds the program without errors`, async () => {
      const outputs = await runProgram(configOf(file), repo);
      assert.match(await promiseOf(outputs.endpointUrl), /^https?:\/\//);
      await settled();
      assert.ok(registered.length > 0);
    });
  }

  it("dev: one c5.metal host, benchmark Lambda, bake from the recipe hash", async () => {
    const outputs = await runProgram(configOf("Pulumi.dev.yaml"), repo);
    assert.equal(outputs.mode, "aws");
    assert.equal(await promiseOf(outputs.endpointUrl), "http://snapfaas-gateway-lb.elb.mock.amazonaws.com");
    assert.equal(await promiseOf(outputs.bucketName!), "snapfaas-artifacts-bucket-mock");
    assert.equal(await promiseOf(outputs.groupName!), "snapfaas-fleet-group-mock");
    assert.match(await promiseOf(outputs.releaseVersion!), /^[0-9a-f]{16}$/);
    assert.match(await promiseOf(outputs.baseImageVersion!), /^[0-9a-f]{64}$/);
    assert.equal(
      await promiseOf(outputs.benchmarkUrl!),
      "https://snapfaas-benchmark-url.lambda-url.us-east-1.on.aws/",
    );
    await settled();
    const group = findRegistered("aws:autoscaling/group:Group", "snapfaas-fleet-group").inputs;
    assert.deepEqual([group.minSize, group.maxSize, group.desiredCapacity], [1, 1, 1]);
    const template = findRegistered(
      "aws:ec2/launchTemplate:LaunchTemplate",
      "snapfaas-fleet-launch-template",
    ).inputs;
    assert.equal(template.instanceType, "c5.metal");
    assert.equal(template.imageId, "ami-0123456789abcdef0");
    const bake = findRegistered("command:remote:Command", "snapfaas-bake-bake").inputs;
    assert.deepEqual(bake.triggers, [await promiseOf(outputs.baseImageVersion!)]);
    const connection = unwrapSecret(bake.connection) as { privateKey: string };
    assert.equal(connection.privateKey, OPERATOR_SECRETS["snapfaas:bakeSshPrivateKey"]);
    const hostSg = findRegistered("aws:ec2/securityGroup:SecurityGroup", "snapfaas-network-host-sg").inputs;
    assert.deepEqual(
      (hostSg.ingress as Array<{ fromPort: number; cidrBlocks?: string[] }>).map((r) => [
        r.fromPort,
        r.cidrBlocks ?? null,
      ]),
      [
        [8080, null],
        [8081, ["10.40.0.0/16"]],
      ],
    );
  });

  it("prod: two to six metal hosts over two zones, admin port closed, pool settings in the manifest", async () => {
    const outputs = await runProgram(configOf("Pulumi.prod.yaml"), repo);
    assert.equal(outputs.benchmarkUrl && (await promiseOf(outputs.benchmarkUrl)), undefined);
    await promiseOf(outputs.releaseVersion!);
    await settled();
    const group = findRegistered("aws:autoscaling/group:Group", "snapfaas-fleet-group").inputs;
    assert.deepEqual([group.minSize, group.maxSize, group.desiredCapacity], [2, 6, 2]);
    assert.equal(group.vpcZoneIdentifiers.length, 2);
    const zones = registered
      .filter((r) => r.type === "aws:ec2/subnet:Subnet" && r.name.includes("-private-"))
      .map((r) => r.inputs.availabilityZone)
      .sort();
    assert.deepEqual(zones, ["us-east-1a", "us-east-1b"]);
    const hostSg = findRegistered("aws:ec2/securityGroup:SecurityGroup", "snapfaas-network-host-sg").inputs;
    assert.deepEqual(
      (hostSg.ingress as Array<{ fromPort: number }>).map((r) => r.fromPort),
      [8080],
    );
    const manifest = JSON.parse(
      unwrapSecret(
        findRegistered("aws:ssm/parameter:Parameter", "snapfaas-release-manifest").inputs.value,
      ) as string,
    );
    assert.equal(manifest.config.pool.maxInstances, 256);
    assert.equal(manifest.config.limits.callTimeoutMs, 60000);
    assert.equal(manifest.firecrackerVersion, "1.16.1");
    const lb = findRegistered("aws:lb/loadBalancer:LoadBalancer", "snapfaas-gateway-lb").inputs;
    assert.equal(lb.idleTimeout, 65);
    assert.equal(
      registered.some((r) => r.type === "aws:lambda/function:Function"),
      false,
      "no benchmark Lambda in prod",
    );
  });

  it("local: only the install and run commands, endpoint on 127.0.0.1", async () => {
    const outputs = await runProgram(configOf("Pulumi.local.yaml"), repo);
    assert.equal(outputs.mode, "local");
    assert.equal(await promiseOf(outputs.endpointUrl), "http://127.0.0.1:8080");
    await settled();
    assert.deepEqual(registered.map((r) => `${r.type} ${r.name}`).sort(), [
      "command:local:Command snapfaas-install",
      "command:local:Command snapfaas-run",
      "snapfaas:index:LocalAgent snapfaas",
    ]);
    assert.equal(findRegistered("command:local:Command", "snapfaas-run").inputs.dir, repo.root);
  });

  it("a stack file still holding the TEST-NET SSH placeholder fails at preview, saying what to set", async () => {
    const { values } = readStackFileConfig(
      parseYaml(readFileSync(join(STACKS_DIR, "Pulumi.dev.yaml"), "utf8")),
    );
    await assert.rejects(runProgram({ ...values, ...OPERATOR_SECRETS }, repo), (error: unknown) => {
      // What `pulumi preview` prints under "Invalid arguments for FaasPlatform".
      const errors = (error as pulumi.InputPropertiesError).errors ?? [];
      assert.equal(errors[0]?.propertyPath, "bakeSshIngressCidr", String(error));
      assert.match(
        errors[0]!.reason,
        /192\.0\.2\.10\/32 is in the documentation range .*checkip\.amazonaws\.com/,
      );
      return true;
    });
  });

  it("a stack file with a wrong key fails with a message naming it", async () => {
    const bad = parseYaml(readFileSync(join(STACKS_DIR, "Pulumi.dev.yaml"), "utf8"));
    bad.config["snapfaas:fleet"].instanceTyp = bad.config["snapfaas:fleet"].instanceType;
    delete bad.config["snapfaas:fleet"].instanceType;
    const { values } = readStackFileConfig(bad);
    const StackConfigError = await programErrorClass();
    await assert.rejects(runProgram({ ...values, ...OPERATOR_SECRETS }, repo), (error: unknown) => {
      assert.ok(error instanceof StackConfigError);
      assert.deepEqual(error.problems, [
        "snapfaas:fleet.instanceType: is required (a string)",
        "snapfaas:fleet.instanceTyp: unknown key",
      ]);
      return true;
    });
  });

  it("a stack file with a wrong value fails with a message naming it and what is allowed", async () => {
    const bad = parseYaml(readFileSync(join(STACKS_DIR, "Pulumi.prod.yaml"), "utf8"));
    bad.config["snapfaas:gateway"].kind = "elb";
    bad.config["snapfaas:fleet"].instanceType = "m7i.large";
    const { values } = readStackFileConfig(bad);
    const StackConfigError = await programErrorClass();
    await assert.rejects(runProgram({ ...values, ...OPERATOR_SECRETS }, repo), (error: unknown) => {
      assert.ok(error instanceof StackConfigError);
      assert.deepEqual(error.problems, [
        "snapfaas:fleet.instanceType: m7i.large has no KVM: use a .metal type (for example c5.metal, m7i.metal-24xl) or c8i/m8i/r8i with nestedVirtualization",
        'snapfaas:gateway.kind: must be one of "alb", "nlb"',
      ]);
      return true;
    });
  });

  it("an AWS stack without aws:region fails naming aws:region", async () => {
    const { "aws:region": _region, ...withoutRegion } = configOf("Pulumi.dev.yaml");
    await assert.rejects(runProgram(withoutRegion, repo), /aws:region: is required/);
  });
});
