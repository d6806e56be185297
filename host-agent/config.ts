/** The agent's configuration: environment variables, validated once at start with errors that name the variable. */
import { z } from "zod";

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
  FAAS_ADMIN_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  FAAS_DRIVER: z.enum(["process"]).default("process"),
  FAAS_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  FAAS_POOL_GENERIC: int(0, 1000, 2),
  FAAS_POOL_MAX_INSTANCES: int(1, 10000, 16),
  FAAS_POOL_MAX_STARTING: int(1, 256, 4),
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
});

export type AgentEnv = z.infer<typeof agentEnvSchema>;

export interface AgentConfig {
  readonly port: number;
  readonly host: string;
  readonly adminPort: number;
  readonly adminHost: string;
  readonly stateDir: string;
  readonly adminToken: string | undefined;
  readonly driver: "process";
  readonly logLevel: AgentEnv["FAAS_LOG_LEVEL"];
  readonly pool: {
    readonly genericTarget: number;
    readonly maxInstances: number;
    readonly maxStarting: number;
    readonly idleTtlMs: number;
    readonly callTimeoutMs: number;
  };
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
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
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
    const lines = parsed.error.issues.map(
      (i) => `${i.path.join(".")}=${JSON.stringify(known[String(i.path[0])])}: ${i.message}`,
    );
    throw new ConfigError(`invalid agent configuration:\n  ${lines.join("\n  ")}`);
  }
  const e = parsed.data;
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
    adminToken: e.FAAS_ADMIN_TOKEN,
    driver: e.FAAS_DRIVER,
    logLevel: e.FAAS_LOG_LEVEL,
    pool: {
      genericTarget: e.FAAS_POOL_GENERIC,
      maxInstances: e.FAAS_POOL_MAX_INSTANCES,
      maxStarting: e.FAAS_POOL_MAX_STARTING,
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
  };
}
