/**
 * A function's configuration besides its code: environment variables, the names of its secrets, memory,
 * timeout, CORS, whether it may open connections out (egress) and how many calls one instance serves at
 * once. One module because three sides must agree on it: the registry record stores it
 * (registry-layout.ts), the agent's admin API checks and changes it, and the guest runtime reads the part
 * the load call carries. Pure: no I/O.
 *
 * Limits follow AWS Lambda where it has one (4 KB of environment, names as POSIX shells take them,
 * 128 MiB of memory at least); the upper bounds of memory and timeout are the host's.
 */

/** POSIX portable environment names: letters, digits and "_", not starting with a digit. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Prefixes the platform sets itself (AWS_LAMBDA_*, AWS_REGION, FAAS_*, LAMBDA_TASK_ROOT): refused. */
export const RESERVED_ENV_PREFIXES: readonly string[] = ["AWS_", "FAAS_", "LAMBDA_"];
/**
 * Names refused whatever their prefix: set by the platform (_HANDLER, _X_AMZN_TRACE_ID), or read by node
 * only when it starts (NODE_OPTIONS): an instance is started before it knows its function.
 */
export const RESERVED_ENV_NAMES: ReadonlySet<string> = new Set([
  "_HANDLER",
  "_X_AMZN_TRACE_ID",
  "NODE_OPTIONS",
]);
/** Bytes (UTF-8) of every name and value of the environment together; AWS Lambda's limit. */
export const MAX_ENV_BYTES = 4096;
/** Bytes (UTF-8) of every secret's name and value together. */
export const MAX_SECRETS_BYTES = 16 * 1024;
/** The least memory a function may ask for (node and the runtime need about half of it). */
export const MIN_MEMORY_MIB = 128;
/** The shortest call timeout a function may ask for. */
export const MIN_TIMEOUT_MS = 1000;
/**
 * Most calls one instance may serve at once (`concurrency`). Calls of one instance share its memory and
 * its one event loop, so past a few dozen a function gains nothing but a larger blast radius.
 */
export const MAX_CONCURRENCY = 100;
/** Most entries of cors.allowOrigins. */
export const MAX_CORS_ORIGINS = 32;
/** "*" or a browser origin: scheme, host and port, no path. */
export const CORS_ORIGIN = /^(\*|https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?)$/;

/** Which browser origins may call the function; answered by the runtime (preflight and every answer). */
export interface CorsConfig {
  /** "*" for any origin, else exact origins such as "https://app.example.com". */
  readonly allowOrigins: readonly string[];
}

/** The configuration as the registry record stores it. Every field is optional: old records have none. */
export interface FunctionConfig {
  /** Environment variables by name. Not secret: the API lists their names only, the record keeps values. */
  readonly env?: Readonly<Record<string, string>>;
  /** Names of the function's secrets; their values live in the secret store, never in the record. */
  readonly secretNames?: readonly string[];
  /** Counts changes of the secrets' values: instances loaded with older values are replaced. */
  readonly secretsRevision?: number;
  /** Memory of each instance, MiB (default: the host's instance memory). */
  readonly memoryMiB?: number;
  /** The call deadline, ms (default: the host's call timeout). */
  readonly timeoutMs?: number;
  readonly cors?: CorsConfig;
  /**
   * True: the function's instances get a network of their own with a way out to the host's uplink (NAT,
   * DNS), never to the host itself or other instances. Absent or false: no network at all (the default).
   */
  readonly egress?: boolean;
  /**
   * Calls one instance serves at once (default 1: each call has its instance to itself). Above 1, calls
   * of the function share the instance's memory, globals and event loop, as in Cloud Run.
   */
  readonly concurrency?: number;
}

/**
 * A change to the configuration, as the admin API takes it (PATCH /v1/functions/<name>/config, and the
 * x-faas-config header of a deploy). A field left out stays as it was; null removes it (back to the
 * default). In env and secrets, a name set to null is removed and the others are kept.
 */
export interface FunctionConfigPatch {
  readonly env?: Readonly<Record<string, string | null>>;
  readonly secrets?: Readonly<Record<string, string | null>>;
  readonly memoryMiB?: number | null;
  readonly timeoutMs?: number | null;
  readonly cors?: CorsConfig | null;
  readonly egress?: boolean | null;
  readonly concurrency?: number | null;
}

/** The host's bounds for what a function may ask. */
export interface ConfigLimits {
  /** The instance memory the host reserves: a function may ask for this much at most. */
  readonly maxMemoryMiB: number;
  readonly maxTimeoutMs: number;
}

/** A configuration that cannot be used: the field at fault and what is allowed. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field} ${problem}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Why a variable name cannot be used (null: it can). */
export function envNameProblem(name: string): string | null {
  if (!ENV_NAME.test(name)) {
    return "must be letters, digits and _, not starting with a digit (a POSIX environment name)";
  }
  const prefix = RESERVED_ENV_PREFIXES.find((p) => name.toUpperCase().startsWith(p));
  if (prefix) return `starts with ${prefix}, which the platform keeps for its own variables`;
  if (RESERVED_ENV_NAMES.has(name)) return "is set by the platform or read only when node starts";
  return null;
}

function checkVariables(field: "env" | "secrets", value: unknown): Readonly<Record<string, string | null>> {
  if (!isObject(value)) throw new ConfigError(field, "must be an object of NAME: value");
  for (const [name, v] of Object.entries(value)) {
    const problem = envNameProblem(name);
    if (problem) throw new ConfigError(`${field}.${name.slice(0, 80)}`, problem);
    if (v !== null && typeof v !== "string") {
      throw new ConfigError(`${field}.${name}`, "must be a string (or null to remove it)");
    }
    if (typeof v === "string" && v.includes("\0")) {
      throw new ConfigError(`${field}.${name}`, "must not contain a NUL character");
    }
  }
  return value as Record<string, string | null>;
}

function checkInteger(field: string, value: unknown, min: number, max: number, unit: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be a whole number of ${unit} from ${min} to ${max} on this host`);
  }
  return value;
}

export function checkCors(value: unknown, field = "cors"): CorsConfig {
  if (!isObject(value) || !Array.isArray(value.allowOrigins)) {
    throw new ConfigError(field, 'must be { "allowOrigins": ["*" or "https://host[:port]", ...] }');
  }
  const origins = value.allowOrigins as unknown[];
  if (origins.length > MAX_CORS_ORIGINS) {
    throw new ConfigError(`${field}.allowOrigins`, `has at most ${MAX_CORS_ORIGINS} entries`);
  }
  for (const o of origins) {
    if (typeof o !== "string" || !CORS_ORIGIN.test(o)) {
      throw new ConfigError(
        `${field}.allowOrigins`,
        `entries must be "*" or an origin such as https://app.example.com (no path), not ${JSON.stringify(o).slice(0, 80)}`,
      );
    }
  }
  return { allowOrigins: origins as string[] };
}

/** Checks a patch from the admin API against the host's limits; ConfigError names the field at fault. */
export function parseConfigPatch(input: unknown, limits: ConfigLimits): FunctionConfigPatch {
  if (!isObject(input)) throw new ConfigError("config", "must be a JSON object");
  const known = new Set(["env", "secrets", "memoryMiB", "timeoutMs", "cors", "egress", "concurrency"]);
  for (const key of Object.keys(input)) {
    if (!known.has(key)) {
      throw new ConfigError(key.slice(0, 80), `is not a setting (use ${[...known].join(", ")})`);
    }
  }
  const patch: {
    -readonly [K in keyof FunctionConfigPatch]: FunctionConfigPatch[K];
  } = {};
  if (input.env !== undefined) patch.env = checkVariables("env", input.env);
  if (input.secrets !== undefined) patch.secrets = checkVariables("secrets", input.secrets);
  if (input.memoryMiB !== undefined) {
    patch.memoryMiB =
      input.memoryMiB === null
        ? null
        : checkInteger(
            "memoryMiB",
            input.memoryMiB,
            Math.min(MIN_MEMORY_MIB, limits.maxMemoryMiB),
            limits.maxMemoryMiB,
            "MiB",
          );
  }
  if (input.timeoutMs !== undefined) {
    patch.timeoutMs =
      input.timeoutMs === null
        ? null
        : checkInteger("timeoutMs", input.timeoutMs, MIN_TIMEOUT_MS, limits.maxTimeoutMs, "ms");
  }
  if (input.cors !== undefined) patch.cors = input.cors === null ? null : checkCors(input.cors);
  if (input.egress !== undefined) {
    if (input.egress !== null && typeof input.egress !== "boolean") {
      throw new ConfigError("egress", "must be true (outbound network) or false (none, the default)");
    }
    patch.egress = input.egress;
  }
  if (input.concurrency !== undefined) {
    patch.concurrency =
      input.concurrency === null
        ? null
        : checkInteger("concurrency", input.concurrency, 1, MAX_CONCURRENCY, "calls");
  }
  return patch;
}

const utf8 = new TextEncoder();
function bytesOf(vars: Readonly<Record<string, string>>): number {
  let n = 0;
  for (const [k, v] of Object.entries(vars)) n += utf8.encode(k).length + utf8.encode(v).length;
  return n;
}

function merged(
  previous: Readonly<Record<string, string>>,
  change: Readonly<Record<string, string | null>> | undefined,
): Record<string, string> {
  const out: Record<string, string> = { ...previous };
  for (const [k, v] of Object.entries(change ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/**
 * The configuration and secrets after a patch. `secrets` is undefined when the patch leaves them alone
 * (the store is not written); the totals are checked on the result.
 */
export function applyConfigPatch(
  previous: FunctionConfig | undefined,
  previousSecrets: Readonly<Record<string, string>>,
  patch: FunctionConfigPatch,
): { config: FunctionConfig; secrets: Record<string, string> | undefined } {
  const env = merged(previous?.env ?? {}, patch.env);
  const secrets = patch.secrets ? merged(previousSecrets, patch.secrets) : undefined;
  if (bytesOf(env) > MAX_ENV_BYTES) {
    throw new ConfigError(
      "env",
      `is ${bytesOf(env)} bytes: names and values together may take ${MAX_ENV_BYTES}`,
    );
  }
  if (secrets && bytesOf(secrets) > MAX_SECRETS_BYTES) {
    throw new ConfigError(
      "secrets",
      `are ${bytesOf(secrets)} bytes: names and values together may take ${MAX_SECRETS_BYTES}`,
    );
  }
  const secretNames = secrets ? Object.keys(secrets).sort() : [...(previous?.secretNames ?? [])];
  const both = secretNames.find((n) => n in env);
  if (both) throw new ConfigError(`secrets.${both}`, "is also an environment variable: use one name once");
  const pick = <T>(value: T | null | undefined, before: T | undefined): T | undefined =>
    value === null ? undefined : (value ?? before);
  const config: { -readonly [K in keyof FunctionConfig]: FunctionConfig[K] } = {};
  if (Object.keys(env).length > 0) config.env = env;
  if (secretNames.length > 0) config.secretNames = secretNames;
  const secretsRevision = (previous?.secretsRevision ?? 0) + (secrets ? 1 : 0);
  if (secretsRevision > 0) config.secretsRevision = secretsRevision;
  const memoryMiB = pick(patch.memoryMiB, previous?.memoryMiB);
  if (memoryMiB !== undefined) config.memoryMiB = memoryMiB;
  const timeoutMs = pick(patch.timeoutMs, previous?.timeoutMs);
  if (timeoutMs !== undefined) config.timeoutMs = timeoutMs;
  const cors = pick(patch.cors, previous?.cors);
  if (cors !== undefined) config.cors = cors;
  // Stored only when on: false and absent mean the same, and old records stay byte for byte as they were.
  if (pick(patch.egress, previous?.egress) === true) config.egress = true;
  const concurrency = pick(patch.concurrency, previous?.concurrency);
  if (concurrency !== undefined) config.concurrency = concurrency;
  return { config, secrets };
}

/** The configuration as the API shows it: names of variables and secrets, never their values. */
export function publicConfig(config: FunctionConfig | undefined): Record<string, unknown> {
  return {
    env: Object.keys(config?.env ?? {}).sort(),
    secrets: [...(config?.secretNames ?? [])],
    memoryMiB: config?.memoryMiB ?? null,
    timeoutMs: config?.timeoutMs ?? null,
    cors: config?.cors ?? null,
    egress: config?.egress === true,
    // Shown when set: a record without it serves one call per instance.
    ...(config?.concurrency !== undefined ? { concurrency: config.concurrency } : {}),
  };
}

/**
 * Checks a stored configuration (a record another writer may have made): the problem as one sentence, or
 * null. Limits of this host are not applied here: a host clamps what exceeds them when it runs the code.
 */
export function storedConfigProblem(value: unknown): string | null {
  if (!isObject(value)) return "must be a JSON object";
  try {
    if (value.env !== undefined) {
      const env = checkVariables("env", value.env);
      if (Object.values(env).some((v) => v === null)) return "env values must be strings";
    }
    if (value.secretNames !== undefined) {
      if (
        !Array.isArray(value.secretNames) ||
        value.secretNames.some((n) => typeof n !== "string" || envNameProblem(n))
      ) {
        return "secretNames must be environment names";
      }
    }
    for (const field of ["secretsRevision", "memoryMiB", "timeoutMs", "concurrency"] as const) {
      const v = value[field];
      if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < 0)) {
        return `${field} must be a whole number`;
      }
    }
    if (value.cors !== undefined) checkCors(value.cors);
    if (value.egress !== undefined && typeof value.egress !== "boolean")
      return "egress must be true or false";
  } catch (err) {
    return (err as Error).message;
  }
  return null;
}
