/**
 * Pulumi unit-test mocks, shared by the component and stack suites. setMocks is process-global, so it is
 * registered once (the first `usePulumiMocks()` before-hook) and only suites that call usePulumiMocks
 * install it: other suites in the same mocha run never see Pulumi.
 */
import * as pulumi from "@pulumi/pulumi";

export const MOCK_PROJECT = "snapfaas";
export const MOCK_STACK = "test";
export const MOCK_ACCOUNT = "123456789012";
export const MOCK_AMI = "ami-0123456789abcdef0";
export const EXISTING_VPC_CIDR = "172.31.0.0/16";

/** What a platform stack referenced by another program exports, in tests. */
export const PLATFORM_STACK_OUTPUTS = {
  bucketName: "platform-artifacts",
  endpointUrl: "https://faas.example.com",
};

/**
 * One record and one installation per process, even when mocha loads this module twice (once through
 * require, once through import: a test file whose imports cannot be required is imported instead). The
 * Pulumi runtime is a single CommonJS instance, so two copies of this module would each install mocks
 * and the later one would take every registration away from the earlier one's record.
 */
interface MockState {
  readonly registered: pulumi.runtime.MockResourceArgs[];
  readonly invoked: Array<{ token: string; inputs: Record<string, unknown> }>;
  readonly offeredZones: Record<string, string[]>;
  installed: Promise<void> | undefined;
}
const holder = globalThis as { __snapfaasPulumiMocks?: MockState };
holder.__snapfaasPulumiMocks ??= { registered: [], invoked: [], offeredZones: {}, installed: undefined };
const shared: MockState = holder.__snapfaasPulumiMocks;
export const registered: pulumi.runtime.MockResourceArgs[] = shared.registered;
/** Invokes the program made (token and inputs), cleared with `registered`. */
export const invoked: Array<{ token: string; inputs: Record<string, unknown> }> = shared.invoked;
/** Zones each instance type is offered in, for getInstanceTypeOfferings; tests may change it. */
export const OFFERED_ZONES: Record<string, string[]> = shared.offeredZones;
const DEFAULT_OFFERED_ZONES = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"];

function computedState(args: pulumi.runtime.MockResourceArgs): Record<string, unknown> {
  const { type, name, inputs } = args;
  const arn = `arn:aws:mock:us-east-1:${MOCK_ACCOUNT}:${type}/${name}`;
  switch (type) {
    case "aws:s3/bucket:Bucket": {
      const bucket = inputs.bucket ?? `${name}-mock`;
      return { bucket, arn: `arn:aws:s3:::${bucket}`, id: bucket };
    }
    case "aws:ssm/parameter:Parameter":
      return { arn: `arn:aws:ssm:us-east-1:${MOCK_ACCOUNT}:parameter${inputs.name}`, version: 1 };
    case "aws:autoscaling/group:Group":
      return { name: inputs.name ?? `${name}-mock`, arn };
    case "aws:lb/loadBalancer:LoadBalancer":
      return { arn, arnSuffix: `app/${name}/0`, dnsName: `${name}.elb.mock.amazonaws.com` };
    case "aws:lb/targetGroup:TargetGroup":
      return { arn, arnSuffix: `targetgroup/${name}/0` };
    case "aws:ec2/launchTemplate:LaunchTemplate":
      return { arn, latestVersion: 1 };
    case "aws:ec2/eip:Eip":
      return { publicIp: "203.0.113.20", allocationId: `eipalloc-${name}` };
    case "aws:ec2/instance:Instance":
      return { arn, publicIp: "203.0.113.10", privateIp: "10.40.0.10" };
    case "aws:lambda/functionUrl:FunctionUrl":
      return { functionUrl: `https://${name}.lambda-url.us-east-1.on.aws/` };
    case "aws:iam/role:Role":
      return { arn: `arn:aws:iam::${MOCK_ACCOUNT}:role/${name}`, name: inputs.name ?? name };
    case "pulumi:pulumi:StackReference":
      return { outputs: PLATFORM_STACK_OUTPUTS };
    default:
      return { arn };
  }
}

/**
 * What pulumi-command v1.2.1 refuses in CopyToRemote's Check (provider/pkg/provider/remote/
 * copyController.go): only path-based sources. Mocks skip providers' checks, so this one is kept here.
 */
export function copyToRemoteSourceProblem(source: unknown): string | undefined {
  if (source instanceof pulumi.asset.FileAsset || source instanceof pulumi.asset.StringAsset)
    return undefined;
  if (source instanceof pulumi.asset.FileArchive) return undefined;
  if (source instanceof pulumi.asset.Archive) return "archive must be a path to a file or directory";
  return "asset must be a path to a file or a string";
}

/** Installs the mocks before the calling suite and clears the record before each test. */
export function usePulumiMocks(): void {
  before(async () => {
    shared.installed ??= pulumi.runtime.setMocks(
      {
        newResource(args) {
          if (args.type === "command:remote:CopyToRemote") {
            const problem = copyToRemoteSourceProblem(args.inputs.source);
            if (problem) throw new Error(`command:remote:CopyToRemote ${args.name}: source: ${problem}`);
          }
          registered.push(args);
          const state = { ...args.inputs, ...computedState(args) };
          return { id: args.custom ? `${args.name}-id` : undefined, state };
        },
        call(args) {
          invoked.push({ token: args.token, inputs: args.inputs });
          if (args.token === "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings") {
            const type = (args.inputs.filters as Array<{ values: string[] }>)[0]!.values[0]!;
            const locations = OFFERED_ZONES[type] ?? DEFAULT_OFFERED_ZONES;
            return {
              id: "us-east-1",
              locations,
              instanceTypes: locations.map(() => type),
              locationTypes: locations.map(() => "availability-zone"),
            };
          }
          if (args.token === "aws:ssm/getParameter:getParameter") {
            return { name: args.inputs.name, value: MOCK_AMI, type: "String" };
          }
          if (args.token === "aws:ec2/getVpc:getVpc") {
            return { id: args.inputs.id, cidrBlock: EXISTING_VPC_CIDR };
          }
          throw new Error(`unmocked invoke ${args.token}`);
        },
      },
      MOCK_PROJECT,
      MOCK_STACK,
      false,
    );
    await shared.installed;
  });
  beforeEach(async () => {
    // Registrations a previous test left in flight must not land in this test's record.
    await waitForRegistrations();
    registered.length = 0;
    invoked.length = 0;
  });
}

/** Output.promise() is internal; this resolves once the value is known. */
export function promiseOf<T>(output: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => output.apply(resolve));
}

/** "type name" lines of everything registered so far, sorted, for exact child-list assertions. */
export function registeredTypesAndNames(): string[] {
  return registered.map((r) => `${r.type} ${r.name}`).sort();
}

export function findRegistered(type: string, name: string): pulumi.runtime.MockResourceArgs {
  const found = registered.find((r) => r.type === type && r.name === name);
  if (!found)
    throw new Error(`no ${type} named ${name} was registered; got:\n${registeredTypesAndNames().join("\n")}`);
  return found;
}

/** Whether the mock monitor got `value` as a secret (wrapped with Pulumi's secret signature). */
export function isSecretInput(value: unknown): boolean {
  return typeof value === "object" && value !== null && "4dabf18193072939515e22adb298388d" in value;
}

/** Secret inputs arrive wrapped by the mock monitor; this returns the plain value. */
export function unwrapSecret(value: unknown): unknown {
  return isSecretInput(value) ? (value as unknown as { value: unknown }).value : value;
}

/**
 * Waits until every outstanding registration reached the mocks. waitForRPCs is exported by the SDK's
 * runtime at run time but left out of its typings; it is what the SDK itself awaits before exiting.
 */
export async function settled(...resources: pulumi.Resource[]): Promise<void> {
  await Promise.all(resources.map((r) => promiseOf(r.urn)));
  await waitForRegistrations();
}

function waitForRegistrations(): Promise<void> {
  const runtime = pulumi.runtime as unknown as { waitForRPCs(): Promise<void> };
  return runtime.waitForRPCs();
}
