/**
 * The S3 objects FaasFunction writes for one function, computed from its code archive and its
 * configuration: the bundle's key (by content hash), the record's key and JSON body, and with secrets
 * their own object, all from the registry contract the hosts' S3 backend reads
 * (contracts/registry-layout.ts) and the configuration rules the admin API applies
 * (contracts/function-config.ts). No Pulumi here, so it is tested directly, and the agent-side
 * rehearsal writes exactly what a `pulumi up` would.
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { canonicalJson } from "../contracts/canonical-json.ts";
import {
  applyConfigPatch,
  type ConfigLimits,
  type FunctionConfigPatch,
  parseConfigPatch,
} from "../contracts/function-config.ts";
import {
  type BundleDescription,
  type RegistryObjects,
  registryObjects,
  secretsKey,
} from "../contracts/registry-layout.ts";
import { describeFunctionBundle } from "./function-bundle.ts";

/** A function's settings as FaasFunction takes them: what `faas deploy` flags set, secrets apart. */
export type FunctionSettings = Omit<FunctionConfigPatch, "secrets">;

/**
 * The widest a function may ask for without knowing its hosts (AWS Lambda's own ceilings): the hosts
 * still hold every function to their instance memory and call timeout when they load it.
 */
export const COMPONENT_CONFIG_LIMITS: ConfigLimits = { maxMemoryMiB: 10_240, maxTimeoutMs: 900_000 };

export interface FunctionObjectsInput {
  readonly functionName: string;
  readonly prefix: string;
  readonly revision: number;
  readonly config?: FunctionSettings;
  /** Secret values by name: their own object, never in the record (which keeps only the names). */
  readonly secrets?: Readonly<Record<string, string>>;
}

export interface FunctionObjects extends RegistryObjects {
  /** With secrets: their object's key and JSON body. */
  readonly secrets?: { readonly key: string; readonly body: string };
}

/**
 * Checks settings and secrets with the admin API's rules (ConfigError naming the field) and returns
 * the configuration the record stores and the secrets to store.
 */
export function functionConfigOf(
  config: FunctionSettings | undefined,
  secrets: Readonly<Record<string, string>> | undefined,
): ReturnType<typeof applyConfigPatch> {
  const patch = parseConfigPatch(
    { ...(config ?? {}), ...(secrets && Object.keys(secrets).length > 0 ? { secrets } : {}) },
    COMPONENT_CONFIG_LIMITS,
  );
  const applied = applyConfigPatch(undefined, {}, patch);
  if (!applied.secrets) return applied;
  // Hosts replace instances loaded with other secrets when this number changes: it is drawn from the
  // values, so a rotation changes it and an unchanged `pulumi up` does not. The record is stored as a
  // Pulumi secret, like the values.
  const digest = createHash("sha256").update(canonicalJson(applied.secrets)).digest("hex");
  const secretsRevision = 1 + Number.parseInt(digest.slice(0, 12), 16);
  return { config: { ...applied.config, secretsRevision }, secrets: applied.secrets };
}

/** What a code archive says of itself: read (hashed and unpacked to look at) once per update. */
export interface DescribedArchive {
  readonly bundle: BundleDescription;
  /** The archive's modification time: stable across `pulumi up` runs for the same build. */
  readonly deployedAt: string;
}

export async function describeArchive(archivePath: string): Promise<DescribedArchive> {
  const bundle = await describeFunctionBundle(archivePath);
  return { bundle, deployedAt: (await stat(archivePath)).mtime.toISOString() };
}

export async function functionObjects(
  archivePath: string,
  input: FunctionObjectsInput,
): Promise<FunctionObjects> {
  return objectsOf(await describeArchive(archivePath), input);
}

/** The objects for an archive already described, with the function's settings and secrets. */
export function objectsOf(archive: DescribedArchive, input: FunctionObjectsInput): FunctionObjects {
  const { config, secrets } = functionConfigOf(input.config, input.secrets);
  const objects = registryObjects({
    functionName: input.functionName,
    prefix: input.prefix,
    revision: input.revision,
    bundle: archive.bundle,
    deployedAt: archive.deployedAt,
    ...(Object.keys(config).length > 0 ? { config } : {}),
  });
  return secrets
    ? {
        ...objects,
        secrets: { key: secretsKey(input.functionName, input.prefix), body: JSON.stringify(secrets) },
      }
    : objects;
}
