/** The agent's configuration: environment variables, validated once at start with errors that name the variable. */
import { isIPv4 } from "node:net";
import { z } from "zod";
import { REGISTRY_PREFIX } from "../contracts/registry-layout.ts";
import { DEFAULT_BASES_DIR } from "../contracts/release-manifest.ts";
import { describeZodIssues } from "../contracts/zod-errors.ts";
import { DEFAULT_IMDS_URL } from "./aws/imds.ts";
import { TrustedProxies } from "./http/forward-headers.ts";
import type { PoolConfig } from "./pool/pool.ts";

const MiB = 1024 * 1024;

const int = (min: number, max: number, fallback: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);
// 0 asks the OS for a free port (tests, several agents on one machine).
const port = (fallback: number) => int(0, 65535, fallback);

export const agentEnvSchema = z.object({
  PORT: port(8080),
  HOST: z.string().min(1).default("127.0.0.1"),
  ADMIN_PORT: port(8081),
  ADMIN_HOST: z.string().min(1).default("127.0.0.1"),
  FAAS_STATE_DIR: z.string().min(1).default(".faas"),
  FAAS_BASE_DIR: z.string().min(1).optional(),
  FAAS_ADMIN_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  FAAS_DRIVER: z.enum(["process", "firecracker"]).default("process"),
  FAAS_FIRECRACKER_CONFIG: z.string().min(1).optional(),
  FAAS_REGISTRY: z.enum(["local", "s3"]).default("local"),
  FAAS_REGISTRY_BUCKET: z.string().min(3).optional(),
  // The same rule FaasFunction writes under (contracts/registry-layout.ts): a prefix the writer would
  // refuse can never hold a function, so the host refuses it at start instead of serving an empty registry.
  FAAS_REGISTRY_PREFIX: z
    .string()
    .regex(
      REGISTRY_PREFIX,
      'must be empty or lower-case segments (a-z, 0-9, -) each ending in "/", like functions/',
    )
    .default(""),
  FAAS_REGISTRY_POLL_MS: int(0, 3_600_000, 5000),
  // Comma-separated CIDRs of the proxies in front of the data plane (an AWS stack's load balancer):
  // only these are believed when they name the client in X-Forwarded-For.
  FAAS_TRUSTED_PROXIES: z
    .string()
    .default("")
    .transform((v, ctx) => {
      const cidrs = v
        .split(",")
        .map((c) => c.trim())
        .filter(Boolean);
      try {
        TrustedProxies.parse(cidrs);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
        return z.NEVER;
      }
      return cidrs;
    }),
  FAAS_HEALTH_START_FAILURES: int(1, 1000, 3),
  FAAS_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  FAAS_POOL_GENERIC: int(0, 1000, 2),
  FAAS_POOL_GENERIC_MAX: int(0, 1000, 8),
  FAAS_POOL_MAX_INSTANCES: int(1, 10000, 16),
  FAAS_POOL_MAX_STARTING: int(1, 256, 4),
  FAAS_MEMORY_BUDGET_MIB: int(64, 16_777_216, 8192),
  FAAS_POOL_FUNCTION_SHARE: z.coerce.number().gt(0).max(1).default(0.5),
  FAAS_POOL_HEADROOM: z.coerce.number().min(0).max(10).default(0.5),
  FAAS_POOL_QUEUE_TARGET_MS: int(1, 60_000, 250),
  FAAS_IDLE_TTL_MS: int(1000, 86_400_000, 300_000),
  FAAS_CALL_TIMEOUT_MS: int(100, 900_000, 30_000),
  FAAS_INSTANCE_MEMORY_MIB: int(32, 65536, 256),
  FAAS_INSTANCE_CPU_PERCENT: int(1, 6400, 100),
  FAAS_INSTANCE_PIDS: int(8, 65536, 64),
  FAAS_INSTANCE_TMP_MIB: int(1, 65536, 64),
  FAAS_INSTANCE_OPEN_FILES: int(64, 1_048_576, 1024),
  FAAS_INSTANCE_FILE_SIZE_MIB: int(1, 65536, 64),
  FAAS_MAX_BUNDLE_BYTES: int(1024, 1024 * MiB, 50 * MiB),
  FAAS_MAX_UNPACKED_BYTES: int(1024, 4096 * MiB, 250 * MiB),
  FAAS_MAX_FILES: int(1, 1_000_000, 10_000),
  FAAS_MAX_BODY_BYTES: int(1024, 1024 * MiB, 6 * MiB),
  FAAS_HEADERS_TIMEOUT_MS: int(100, 600_000, 10_000),
  FAAS_REQUEST_TIMEOUT_MS: int(100, 3_600_000, 60_000),
  FAAS_ADMIN_REQUEST_TIMEOUT_MS: int(100, 3_600_000, 300_000),
  FAAS_UID_BASE: int(1000, 4_000_000_000, 200_000),
  // Per-function egress in the process sandbox: the interface jails' traffic leaves by (default: the one
  // of the default route), the resolver their DNS goes to (default: /etc/resolv.conf's first non-loopback
  // nameserver), and the /24 their links are carved from (default: one of 10.207.0.0/16, from the state dir).
  FAAS_EGRESS_UPLINK: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,15}$/, "must be a network interface name (1-15 letters, digits, _ . -)")
    .optional(),
  FAAS_EGRESS_DNS: z
    .string()
    .refine((v) => isIPv4(v), "must be an IPv4 address")
    .optional(),
  FAAS_EGRESS_SUBNET: z
    .string()
    .regex(/^\d{1,3}\.\d{1,3}\.\d{1,3}\.0\/24$/, "must be an IPv4 /24 such as 10.207.5.0/24")
    .refine((v) => isIPv4(v.slice(0, -3)), "must be an IPv4 /24 such as 10.207.5.0/24")
    .optional(),
  FAAS_RELEASE_FILE: z.string().min(1).optional(),
  /** An AWS host's release manifest (read by main.ts before this schema: it supplies defaults). */
  FAAS_RELEASE_MANIFEST: z.string().min(1).optional(),
  /** Where base images live, one folder per version (the manifest's base is <this>/<version>). */
  FAAS_BASES_DIR: z.string().min(1).default(DEFAULT_BASES_DIR),
  FAAS_RELEASE_POLL_MS: int(100, 3_600_000, 5000),
  FAAS_ROLL_WARMUP_TIMEOUT_MS: int(1000, 3_600_000, 60_000),
  // AWS fleet: the Auto Scaling group's metric and scale-in hook (both off unless named).
  FAAS_METRIC_NAMESPACE: z
    .string()
    .regex(/^[0-9A-Za-z.\-_/#: ]{1,255}$/, "must be 1-255 of letters, digits and . - _ / # : or space")
    .refine((v) => !v.startsWith("AWS/"), "must not start with AWS/ (reserved for AWS services)")
    .optional(),
  FAAS_METRIC_INTERVAL_MS: int(1000, 3_600_000, 60_000),
  FAAS_LIFECYCLE_HOOK: z
    .string()
    .regex(/^[A-Za-z0-9\-_/]{1,255}$/, "must be 1-255 of letters, digits and - _ /")
    .optional(),
  FAAS_DRAIN_TIMEOUT_MS: int(1000, 172_800_000, 270_000),
  FAAS_IMDS_URL: z
    .string()
    .regex(/^https?:\/\/[^\s/?#]+\/?$/, "must be http(s)://host[:port] with no path")
    .default(DEFAULT_IMDS_URL),
  FAAS_ASG_NAME: z.string().min(1).max(255).optional(),
  AWS_REGION: z
    .string()
    .regex(/^[a-z]{2,}(-[a-z]+)+-\d+$/, "must be an AWS region name such as us-east-1")
    .optional(),
});

export type AgentEnv = z.infer<typeof agentEnvSchema>;

export interface AgentConfig {
  readonly port: number;
  readonly host: string;
  readonly adminPort: number;
  readonly adminHost: string;
  readonly stateDir: string;
  /** Where baked bases are kept (default <stateDir>/base); several agents may share one. */
  readonly baseDir: string | undefined;
  readonly adminToken: string | undefined;
  readonly driver: "process" | "firecracker";
  /** JSON file with the firecracker driver's config (paths, jailer, network, limits). */
  readonly firecrackerConfig: string | undefined;
  /** Where deployed functions live: the state dir, or an S3 bucket every host of a fleet reads. */
  readonly registry:
    | { readonly kind: "local" }
    | { readonly kind: "s3"; readonly bucket: string; readonly prefix: string };
  /** How often an S3 registry is re-read for functions deployed elsewhere (0: only at start). */
  readonly registryPollMs: number;
  /**
   * CIDRs of the proxies in front of the data plane whose X-Forwarded-For names the client (empty: the
   * peer is the client, whatever it claims).
   */
  readonly trustedProxies: readonly string[];
  /** /healthz fails after this many instance starts in a row have failed (until one succeeds). */
  readonly healthStartFailures: number;
  readonly logLevel: AgentEnv["FAAS_LOG_LEVEL"];
  readonly pool: PoolConfig & { readonly callTimeoutMs: number };
  readonly limits: {
    readonly memoryMiB: number;
    readonly cpuPercent: number;
    readonly pids: number;
    readonly tmpMiB: number;
    readonly openFiles: number;
    readonly fileSizeMiB: number;
  };
  readonly bundle: {
    readonly maxBundleBytes: number;
    readonly maxUnpackedBytes: number;
    readonly maxFiles: number;
  };
  readonly maxBodyBytes: number;
  /** Both planes: a client must send its whole header block within this (slow-header clients are dropped). */
  readonly headersTimeoutMs: number;
  /** Whole request (headers and body) on the data plane, and on the control plane (bundles are larger). */
  readonly requestTimeoutMs: number;
  readonly adminRequestTimeoutMs: number;
  readonly uidBase: number;
  /** Per-function egress of the process sandbox: what the host's own defaults are overridden with. */
  readonly egress: {
    readonly uplink: string | undefined;
    readonly dnsResolver: string | undefined;
    readonly subnet: string | undefined;
  };
  readonly release: {
    /** A release file the agent follows (polled), if any. */
    readonly file: string | undefined;
    readonly pollMs: number;
    /** How long a new base's pool may take to start its generic instances. */
    readonly warmupTimeoutMs: number;
  };
  /** On an AWS fleet: what the agent tells the Auto Scaling group. */
  readonly aws: {
    /** AWS_REGION, for the CloudWatch and Auto Scaling clients. */
    readonly region: string | undefined;
    /** Instance metadata service (IMDSv2) base URL. */
    readonly imdsUrl: string;
    /** The group's name when given (FAAS_ASG_NAME); else read from the instance's metadata tags. */
    readonly groupName: string | undefined;
    /** PoolUtilization publishing, when FAAS_METRIC_NAMESPACE is set. */
    readonly metrics: { readonly namespace: string; readonly intervalMs: number } | undefined;
    /** Draining on scale-in and completing the hook, when FAAS_LIFECYCLE_HOOK is set. */
    readonly drain: { readonly hookName: string; readonly timeoutMs: number } | undefined;
  };
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** FAAS_ variables the CLI reads: next to the agent's in a shell, they are not typos. */
const CLI_VARIABLES = new Set(["FAAS_URL", "FAAS_ADMIN_URL", "FAAS_VMM", "FAAS_VMM_ACCELERATOR"]);

/**
 * FAAS_ variables the agent does not know, each with the nearest name it does: a misspelt variable would
 * otherwise be ignored without a word, and its default used.
 */
export function unknownAgentVariables(env: NodeJS.ProcessEnv): string[] {
  const known = Object.keys(agentEnvSchema.shape);
  const out: string[] = [];
  for (const key of Object.keys(env).sort()) {
    if (!key.startsWith("FAAS_") || CLI_VARIABLES.has(key) || known.includes(key)) continue;
    let nearest: { name: string; distance: number } | undefined;
    for (const name of known) {
      const distance = editDistance(key, name);
      if (!nearest || distance < nearest.distance) nearest = { name, distance };
    }
    const hint = nearest && nearest.distance <= 3 ? ` (did you mean ${nearest.name}?)` : "";
    out.push(`${key} is not an agent variable and is ignored${hint}`);
  }
  return out;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length]!;
}

/** Reads the agent's config from an environment; throws ConfigError listing every bad variable. */
export function loadAgentConfig(env: NodeJS.ProcessEnv): AgentConfig {
  const known = Object.fromEntries(
    Object.keys(agentEnvSchema.shape)
      .filter((k) => env[k] !== undefined && env[k] !== "")
      .map((k) => [k, env[k]]),
  );
  const parsed = agentEnvSchema.safeParse(known);
  if (!parsed.success) {
    const lines = describeZodIssues(parsed.error.issues, {
      at: (p) => `${p.join(".")}=${JSON.stringify(known[String(p[0])])}`,
    });
    throw new ConfigError(`invalid agent configuration:\n  ${lines.join("\n  ")}`);
  }
  const e = parsed.data;
  if (e.FAAS_DRIVER === "firecracker" && !e.FAAS_BASE_DIR) {
    throw new ConfigError(
      "invalid agent configuration:\n  FAAS_BASE_DIR is required with FAAS_DRIVER=firecracker: the folder of a baked base (manifest.json)",
    );
  }
  if (e.FAAS_REGISTRY === "s3" && !e.FAAS_REGISTRY_BUCKET) {
    throw new ConfigError(
      "invalid agent configuration:\n  FAAS_REGISTRY_BUCKET is required with FAAS_REGISTRY=s3",
    );
  }
  if ((e.FAAS_METRIC_NAMESPACE || e.FAAS_LIFECYCLE_HOOK) && !e.AWS_REGION) {
    const which = e.FAAS_METRIC_NAMESPACE ? "FAAS_METRIC_NAMESPACE" : "FAAS_LIFECYCLE_HOOK";
    throw new ConfigError(
      `invalid agent configuration:\n  AWS_REGION is required with ${which}: the region of the CloudWatch and Auto Scaling APIs`,
    );
  }
  if (e.PORT !== 0 && e.PORT === e.ADMIN_PORT && e.HOST === e.ADMIN_HOST) {
    throw new ConfigError(
      `invalid agent configuration:\n  PORT and ADMIN_PORT are both ${e.PORT}: they must differ`,
    );
  }
  return {
    port: e.PORT,
    host: e.HOST,
    adminPort: e.ADMIN_PORT,
    adminHost: e.ADMIN_HOST,
    stateDir: e.FAAS_STATE_DIR,
    baseDir: e.FAAS_BASE_DIR,
    adminToken: e.FAAS_ADMIN_TOKEN,
    driver: e.FAAS_DRIVER,
    firecrackerConfig: e.FAAS_FIRECRACKER_CONFIG,
    registry:
      e.FAAS_REGISTRY === "s3"
        ? { kind: "s3", bucket: e.FAAS_REGISTRY_BUCKET!, prefix: e.FAAS_REGISTRY_PREFIX }
        : { kind: "local" },
    registryPollMs: e.FAAS_REGISTRY_POLL_MS,
    trustedProxies: e.FAAS_TRUSTED_PROXIES,
    healthStartFailures: e.FAAS_HEALTH_START_FAILURES,
    logLevel: e.FAAS_LOG_LEVEL,
    pool: {
      genericMin: e.FAAS_POOL_GENERIC,
      genericMax: Math.max(e.FAAS_POOL_GENERIC, e.FAAS_POOL_GENERIC_MAX),
      maxInstances: e.FAAS_POOL_MAX_INSTANCES,
      maxStarting: e.FAAS_POOL_MAX_STARTING,
      memoryBudgetMiB: e.FAAS_MEMORY_BUDGET_MIB,
      instanceMemoryMiB: e.FAAS_INSTANCE_MEMORY_MIB,
      functionShare: e.FAAS_POOL_FUNCTION_SHARE,
      headroom: e.FAAS_POOL_HEADROOM,
      queueTargetMs: e.FAAS_POOL_QUEUE_TARGET_MS,
      defaultServiceMs: 25,
      defaultStartMs: 250,
      idleTtlMs: e.FAAS_IDLE_TTL_MS,
      callTimeoutMs: e.FAAS_CALL_TIMEOUT_MS,
    },
    limits: {
      memoryMiB: e.FAAS_INSTANCE_MEMORY_MIB,
      cpuPercent: e.FAAS_INSTANCE_CPU_PERCENT,
      pids: e.FAAS_INSTANCE_PIDS,
      tmpMiB: e.FAAS_INSTANCE_TMP_MIB,
      openFiles: e.FAAS_INSTANCE_OPEN_FILES,
      fileSizeMiB: e.FAAS_INSTANCE_FILE_SIZE_MIB,
    },
    bundle: {
      maxBundleBytes: e.FAAS_MAX_BUNDLE_BYTES,
      maxUnpackedBytes: e.FAAS_MAX_UNPACKED_BYTES,
      maxFiles: e.FAAS_MAX_FILES,
    },
    maxBodyBytes: e.FAAS_MAX_BODY_BYTES,
    headersTimeoutMs: e.FAAS_HEADERS_TIMEOUT_MS,
    requestTimeoutMs: e.FAAS_REQUEST_TIMEOUT_MS,
    adminRequestTimeoutMs: e.FAAS_ADMIN_REQUEST_TIMEOUT_MS,
    uidBase: e.FAAS_UID_BASE,
    egress: { uplink: e.FAAS_EGRESS_UPLINK, dnsResolver: e.FAAS_EGRESS_DNS, subnet: e.FAAS_EGRESS_SUBNET },
    release: {
      file: e.FAAS_RELEASE_FILE,
      pollMs: e.FAAS_RELEASE_POLL_MS,
      warmupTimeoutMs: e.FAAS_ROLL_WARMUP_TIMEOUT_MS,
    },
    aws: {
      region: e.AWS_REGION,
      imdsUrl: e.FAAS_IMDS_URL,
      groupName: e.FAAS_ASG_NAME,
      metrics: e.FAAS_METRIC_NAMESPACE
        ? { namespace: e.FAAS_METRIC_NAMESPACE, intervalMs: e.FAAS_METRIC_INTERVAL_MS }
        : undefined,
      drain: e.FAAS_LIFECYCLE_HOOK
        ? { hookName: e.FAAS_LIFECYCLE_HOOK, timeoutMs: e.FAAS_DRAIN_TIMEOUT_MS }
        : undefined,
    },
  };
}
