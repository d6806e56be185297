/**
 * The stack config of the snapfaas program: one zod schema is the source of truth for every `snapfaas:*`
 * key, and errors name the full key path and what is allowed. Parsing is pure (a flat key -> string map,
 * as Pulumi stores it), so tests feed it stack files or in-memory maps without Pulumi.
 */
import { z } from "zod";
import { FIRECRACKER_PIN } from "../contracts/firecracker-release.ts";
import { AMI_ID } from "../contracts/host-ami.ts";
import { BASE_VERSION_LABEL, type ReleaseSettings } from "../contracts/release-manifest.ts";
import { describeZodIssues } from "../contracts/zod-errors.ts";
import { checkKvmInstanceType } from "./instance-types.ts";

export const CONFIG_NAMESPACE = "snapfaas";

const positiveInt = z.int().min(1);
const nonNegativeInt = z.int().min(0);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits (a SHA-256)");
const availabilityZone = z
  .string()
  .regex(/^[a-z]{2}(-[a-z]+)+-\d[a-z]$/, "must be an availability zone name like us-east-1a");
const cidr = z
  .string()
  .regex(/^(\d{1,3}\.){3}\d{1,3}\/(\d|[12]\d|3[0-2])$/, "must be an IPv4 CIDR like 10.40.0.0/16");

const fleetSchema = z
  .strictObject({
    instanceType: z.string().min(1),
    /** c8i/m8i/r8i only: expose KVM through nested virtualization instead of running on bare metal. */
    nestedVirtualization: z.boolean().default(false),
    minHosts: nonNegativeInt,
    maxHosts: positiveInt.max(100),
    desiredHosts: nonNegativeInt,
    rootVolumeGiB: z.int().min(30).max(16384).default(100),
    /** Target of the PoolUtilization target-tracking policy, percent of pool slots busy. */
    targetPoolUtilizationPercent: z.number().gt(0).max(100).default(70),
    /** How long a host scheduled for scale-in may drain before it is terminated anyway. */
    drainTimeoutSeconds: z.int().min(30).max(7200).default(300),
  })
  .superRefine((fleet, ctx) => {
    const check = checkKvmInstanceType(fleet.instanceType, fleet.nestedVirtualization);
    if (!check.ok) ctx.addIssue({ code: "custom", path: ["instanceType"], message: check.reason });
    if (fleet.minHosts > fleet.maxHosts) {
      ctx.addIssue({
        code: "custom",
        path: ["minHosts"],
        message: `must be <= maxHosts (${fleet.maxHosts})`,
      });
    }
    if (fleet.desiredHosts < fleet.minHosts || fleet.desiredHosts > fleet.maxHosts) {
      ctx.addIssue({
        code: "custom",
        path: ["desiredHosts"],
        message: `must be between minHosts (${fleet.minHosts}) and maxHosts (${fleet.maxHosts})`,
      });
    }
  });

const networkSchema = z
  .strictObject({
    vpcCidr: cidr.default("10.40.0.0/16"),
    /** At least two, so the load balancer and the group span zones. */
    availabilityZones: z.array(availabilityZone).min(2),
    existingVpcId: z
      .string()
      .regex(/^vpc-[0-9a-f]+$/, "must be a VPC id like vpc-0abc")
      .optional(),
    existingPublicSubnetIds: z
      .array(z.string().regex(/^subnet-[0-9a-f]+$/))
      .min(2)
      .optional(),
    existingPrivateSubnetIds: z
      .array(z.string().regex(/^subnet-[0-9a-f]+$/))
      .min(2)
      .optional(),
    /** "vpc": admin port 8081 reachable from inside the VPC; "none": not reachable over the network at all. */
    adminAccess: z.enum(["vpc", "none"]).default("none"),
    /**
     * Whether hosts offer functions a way out (each function still opts in with `faas deploy --egress`):
     * NAT out of the host's default route, DNS to the VPC resolver. Off: no function can have egress.
     */
    functionEgress: z.boolean().default(false),
  })
  .superRefine((network, ctx) => {
    if (new Set(network.availabilityZones).size !== network.availabilityZones.length) {
      ctx.addIssue({ code: "custom", path: ["availabilityZones"], message: "must not repeat a zone" });
    }
    const existing = [network.existingPublicSubnetIds, network.existingPrivateSubnetIds];
    if (network.existingVpcId && existing.some((ids) => ids === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["existingVpcId"],
        message: "needs existingPublicSubnetIds and existingPrivateSubnetIds (two or more each)",
      });
    }
    if (!network.existingVpcId && existing.some((ids) => ids !== undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["existingVpcId"],
        message: "is required when subnet ids are given",
      });
    }
  });

const versionsSchema = z.strictObject({
  /** Firecracker release tag without the "v"; v1.16.1 or later (vsock fixes after restore). */
  firecracker: z.string().regex(/^\d+\.\d+\.\d+$/, "must be a release number like 1.16.1"),
  /**
   * SHA-256 of firecracker-v<version>-x86_64.tgz. When absent the host checks the tarball against the
   * release's published .sha256.txt instead (same origin, weaker): pin it for production.
   */
  firecrackerTarballSha256: sha256Hex.optional(),
  /** Version label of the host agent; the release manifest carries it beside the bundle hash. */
  agent: z.string().regex(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, "must be a semantic version like 0.1.0"),
  /**
   * The hosts' AMI, pinned: a floating "latest" would roll the fleet and change the host kernel under
   * a snapshot at any `pulumi up`. Part of the base version, so a new AMI means a new bake.
   */
  hostAmi: z
    .string()
    .regex(AMI_ID, "must be an AMI id like ami-0123456789abcdef0 (ami- and 8 to 17 hex digits)"),
  /** Base image version to run when the stack does not bake one (bake.enabled false). */
  // A host keeps the base in a folder named after it, so the agent's rule applies.
  baseImage: z
    .string()
    .regex(
      BASE_VERSION_LABEL,
      "must be a version label: letters, digits, . _ -, starting with a letter or digit",
    )
    .optional(),
});

// The upper bounds are the host agent's own (host-agent/config.ts): a value it would refuse at boot is
// refused here, at `pulumi preview`.
const poolSchema = z.strictObject({
  /** Restored, unspecialized VMs kept ready per host. */
  minIdle: nonNegativeInt.max(1000).default(4),
  maxInstances: positiveInt.max(10_000).default(64),
  idleTtlSeconds: positiveInt.max(86_400).default(300),
  maxConcurrentRestores: positiveInt.max(256).default(8),
  /** Memory the pool may use on one host, MiB; the agent never restores past it. */
  memoryBudgetMiB: z.int().min(256).max(16_777_216).default(65536),
});

const vmSchema = z.strictObject({
  vcpus: z.int().min(1).max(32).default(1),
  memoryMiB: z.int().min(128).max(32768).default(256),
  /** cgroup cpu.max quota as percent of one core (100 = one full core). */
  cpuMaxPercent: z.int().min(1).max(3200).default(100),
  ioReadBytesPerSecond: positiveInt.default(50 * 1024 * 1024),
  ioWriteBytesPerSecond: positiveInt.default(20 * 1024 * 1024),
  /** Firecracker rate limiters on the code disk and the network interface. */
  diskBandwidthBytesPerSecond: positiveInt.default(50 * 1024 * 1024),
  diskOpsPerSecond: positiveInt.default(5000),
  netBandwidthBytesPerSecond: positiveInt.default(12_500_000),
});

const limitsSchema = z.strictObject({
  callTimeoutMs: z.int().min(100).max(900_000).default(30_000),
  payloadLimitBytes: z
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(6 * 1024 * 1024),
});

const gatewaySchema = z.strictObject({
  kind: z.enum(["alb", "nlb"]).default("alb"),
  /** ACM certificate: the listener becomes HTTPS on 443; without it, HTTP on 80. */
  certificateArn: z
    .string()
    .regex(/^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[0-9a-f-]+$/, "must be an ACM certificate ARN")
    .optional(),
  ingressCidrs: z.array(cidr).min(1).default(["0.0.0.0/0"]),
});

const bakeSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /**
   * The guest the base boots. "linux" is the one to run; "osv" is experimental: Node on OSv, OSv on
   * Firecracker's ACPI and the popf check are unproven on a KVM host (guest-images/osv/README.md).
   */
  guest: z.enum(["linux", "osv"]).default("linux"),
  /**
   * Must be fleet.instanceType when given (the default): a snapshot restores only on the CPU model it
   * was taken on, and the agent refuses a base baked on another.
   */
  builderInstanceType: z.string().min(1).optional(),
  /** EC2 key pair the builder is launched with; its private key is the secret snapfaas:bakeSshPrivateKey. */
  sshKeyName: z.string().min(1),
  /** Where `pulumi up` runs from: the only source allowed to reach the builder's SSH port. */
  sshIngressCidr: cidr,
});

const localSchema = z.strictObject({
  /** Repository folder holding the agent, relative to where `pulumi up` runs. */
  repoDir: z.string().min(1).default("."),
  port: z.int().min(1024).max(65535).default(8080),
});

/** Top-level `snapfaas:` keys; anything else in the namespace is an error that names the key. */
const stackSchema = z
  .strictObject({
    mode: z.enum(["aws", "local"]).default("aws"),
    fleet: fleetSchema.optional(),
    network: networkSchema.optional(),
    versions: versionsSchema.optional(),
    pool: poolSchema.prefault({}),
    vm: vmSchema.prefault({}),
    limits: limitsSchema.prefault({}),
    gateway: gatewaySchema.prefault({}),
    bake: bakeSchema.optional(),
    /** Deploys an AWS Lambda hello-world beside the platform for `npm run bench:rtt`. */
    benchmark: z.boolean().default(false),
    local: localSchema.prefault({}),
    /** Secret, set with `pulumi config set --secret snapfaas:bakeSshPrivateKey < key.pem`. */
    bakeSshPrivateKey: z.string().min(1).optional(),
  })
  .superRefine((config, ctx) => {
    if (config.mode !== "aws") return;
    for (const key of ["fleet", "network", "versions"] as const) {
      if (config[key] === undefined)
        ctx.addIssue({ code: "custom", path: [key], message: 'is required when mode is "aws"' });
    }
    const bakeEnabled = config.bake?.enabled ?? false;
    if (bakeEnabled && config.bakeSshPrivateKey === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["bakeSshPrivateKey"],
        message:
          "is required when bake.enabled is true (pulumi config set --secret snapfaas:bakeSshPrivateKey < key.pem)",
      });
    }
    if (bakeEnabled && config.versions && config.versions.firecracker !== FIRECRACKER_PIN.version) {
      ctx.addIssue({
        code: "custom",
        path: ["versions", "firecracker"],
        message: `must be ${FIRECRACKER_PIN.version}, the Firecracker the bake pins (contracts/firecracker-release.ts): a snapshot restores only on the version that wrote it`,
      });
    }
    // The snapshot fixes the VM shape, and Firecracker boots only 1 or an even number of vCPUs.
    if (bakeEnabled && config.vm.vcpus !== 1 && config.vm.vcpus % 2 !== 0) {
      ctx.addIssue({
        code: "custom",
        path: ["vm", "vcpus"],
        message: `must be 1 or an even number when the stack bakes (Firecracker boots no other count), got ${config.vm.vcpus}`,
      });
    }
    const builderType = config.bake?.builderInstanceType;
    if (
      bakeEnabled &&
      config.fleet &&
      builderType !== undefined &&
      builderType !== config.fleet.instanceType
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["bake", "builderInstanceType"],
        message: `must be fleet.instanceType (${config.fleet.instanceType}) or left out: a snapshot restores only on the CPU model it was baked on`,
      });
    }
    if (!bakeEnabled && config.versions !== undefined && config.versions.baseImage === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["versions", "baseImage"],
        message: "is required when no bake section is enabled",
      });
    }
    if (
      config.fleet &&
      config.network &&
      config.fleet.maxHosts > 1 &&
      config.network.availabilityZones.length < 2
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["network", "availabilityZones"],
        message: "must list two zones",
      });
    }
  });

export type StackConfig = z.infer<typeof stackSchema>;
export type AwsStackConfig = StackConfig & {
  mode: "aws";
  fleet: NonNullable<StackConfig["fleet"]>;
  network: NonNullable<StackConfig["network"]>;
  versions: NonNullable<StackConfig["versions"]>;
};

export class StackConfigError extends Error {
  override readonly name = "StackConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid stack config:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Pulumi stores structured values as JSON text and plain ones as strings; this undoes that. */
export function decodeConfigValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function keyPath(path: ReadonlyArray<PropertyKey>): string {
  const [top, ...rest] = path;
  let text = `${CONFIG_NAMESPACE}:${String(top ?? "")}`;
  for (const part of rest) text += typeof part === "number" ? `[${part}]` : `.${String(part)}`;
  return text;
}

/**
 * Validates the flat config map of a stack (keys like "snapfaas:fleet", values as Pulumi stores them).
 * Keys of other namespaces (aws:region, ...) are ignored. Throws StackConfigError listing every problem.
 */
export function parseStackConfig(flat: Readonly<Record<string, string>>): StackConfig {
  const prefix = `${CONFIG_NAMESPACE}:`;
  const values: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(flat)) {
    if (!key.startsWith(prefix)) continue;
    // Pulumi's legacy form "snapfaas:config:key" names the same key.
    const name = key.slice(prefix.length).replace(/^config:/, "");
    values[name] = decodeConfigValue(raw);
  }
  const result = stackSchema.safeParse(values);
  if (!result.success) {
    throw new StackConfigError(
      describeZodIssues(result.error.issues, { at: keyPath, root: `${CONFIG_NAMESPACE}:` }),
    );
  }
  return result.data;
}

export function isAwsStack(config: StackConfig): config is AwsStackConfig {
  return config.mode === "aws" && !!config.fleet && !!config.network && !!config.versions;
}

/**
 * The pool and limit settings the agents receive in the release manifest: the stack's own `pool`, `vm`
 * and `limits`, which must be what the manifest's schema carries (a field one side lacks fails here).
 */
export interface PoolSettings extends ReleaseSettings {
  readonly pool: StackConfig["pool"];
  readonly vm: StackConfig["vm"];
  readonly limits: StackConfig["limits"];
}

export interface StackFileConfig {
  /** Key -> value as the Pulumi engine hands it to the program (structured values JSON-encoded). */
  readonly values: Record<string, string>;
  /** Keys stored encrypted (`secure:`); their plaintext exists only where the stack's secrets provider runs. */
  readonly secureKeys: string[];
}

/** Reads the `config:` block of a Pulumi.<stack>.yaml text the way the engine passes it to a program. */
export function readStackFileConfig(parsedYaml: unknown): StackFileConfig {
  const values: Record<string, string> = {};
  const secureKeys: string[] = [];
  if (typeof parsedYaml !== "object" || parsedYaml === null) return { values, secureKeys };
  const block = (parsedYaml as { config?: unknown }).config;
  if (typeof block !== "object" || block === null) return { values, secureKeys };
  for (const [key, value] of Object.entries(block as Record<string, unknown>)) {
    if (typeof value === "object" && value !== null && "secure" in value) {
      secureKeys.push(key);
    } else if (typeof value === "string") {
      values[key] = value;
    } else {
      values[key] = JSON.stringify(value);
    }
  }
  return { values, secureKeys };
}
