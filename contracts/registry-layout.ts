/**
 * The function registry as it sits in an artifact store (S3): which keys hold what, and the record's
 * JSON. One module because two sides must agree on it byte for byte: the Pulumi `FaasFunction` writes
 * these objects, the host agent's S3 registry backend lists and reads them. Pure: no SDK, no I/O.
 *
 * Layout under a prefix (default "functions/" on a fleet, "" for a bare bucket):
 *   <prefix>registry/<name>.json   one record per function (replaced whole by a single PutObject)
 *   <prefix>bundles/<sha256>       the bundle bytes (tar.gz or zip), by content hash
 */

import { type FunctionConfig, storedConfigProblem } from "./function-config.ts";

/** Function names: what callers put in the URL, and the record's key. */
export const FUNCTION_NAME = /^[a-z][a-z0-9-]{0,62}$/;
/** Names that match FUNCTION_NAME but that the data plane keeps for its own routes. */
export const RESERVED_FUNCTION_NAMES: ReadonlySet<string> = new Set(["healthz", "metrics", "v1"]);
/** A prefix is empty or slash-separated lower-case segments ending in "/". */
export const REGISTRY_PREFIX = /^([a-z0-9-]+\/)*$/;
/** The prefix FaasFunction writes under and fleet hosts read by default. */
export const DEFAULT_REGISTRY_PREFIX = "functions/";
export const SHA256_HEX = /^[0-9a-f]{64}$/;

/** What describes a bundle, as FaasFunction reads it from the archive and the record keeps it. */
export interface BundleDescription {
  /** sha256 (hex) of the bundle bytes as uploaded: the code hash. */
  readonly codeHash: string;
  readonly format: "tar.gz" | "zip";
  readonly bundleBytes: number;
  readonly unpackedBytes: number;
  readonly fileCount: number;
  /** Entry module, relative to the code root (from package.json `main`, else index.js / index.mjs). */
  readonly entry: string;
}

/** One deployed function, as persisted. */
export interface FunctionRecord extends BundleDescription {
  /** ^[a-z][a-z0-9-]{0,62}$ */
  readonly name: string;
  /** ISO 8601. */
  readonly deployedAt: string;
  /** Monotonic per name: 1 for the first deploy; every deploy and configuration change adds one. */
  readonly revision: number;
  /** Environment, secrets' names, memory, timeout, CORS; absent: the host's defaults. */
  readonly config?: FunctionConfig;
}

/** The folder (key prefix) that holds every record. */
export function recordsPrefix(prefix = ""): string {
  return `${prefix}registry/`;
}

/** The object key of a function's record. */
export function recordKey(name: string, prefix = ""): string {
  return `${recordsPrefix(prefix)}${name}.json`;
}

/** The object key of a bundle, by its content hash. */
export function bundleKey(codeHash: string, prefix = ""): string {
  return `${prefix}bundles/${codeHash}`;
}

/** The function name a record key stands for, or undefined when the key is not a record's. */
export function nameOfRecordKey(key: string, prefix = ""): string | undefined {
  const folder = recordsPrefix(prefix);
  if (!key.startsWith(folder) || !key.endsWith(".json")) return undefined;
  const name = key.slice(folder.length, -".json".length);
  return FUNCTION_NAME.test(name) ? name : undefined;
}

/** The record's object body: what FaasFunction uploads and the agent parses. */
export function recordBody(record: FunctionRecord): string {
  return JSON.stringify(record);
}

/** The two objects one deploy writes: the bundle (first) and the record (second, the commit point). */
export interface RegistryObjects {
  readonly bundleKey: string;
  readonly recordKey: string;
  readonly record: FunctionRecord;
  readonly recordBody: string;
}

export function registryObjects(input: {
  readonly functionName: string;
  readonly prefix: string;
  readonly bundle: BundleDescription;
  readonly deployedAt: string;
  readonly revision: number;
  readonly config?: FunctionConfig;
}): RegistryObjects {
  const { bundle } = input;
  const record: FunctionRecord = {
    name: input.functionName,
    codeHash: bundle.codeHash,
    format: bundle.format,
    bundleBytes: bundle.bundleBytes,
    unpackedBytes: bundle.unpackedBytes,
    fileCount: bundle.fileCount,
    entry: bundle.entry,
    deployedAt: input.deployedAt,
    revision: input.revision,
    ...(input.config ? { config: input.config } : {}),
  };
  return {
    bundleKey: bundleKey(bundle.codeHash, input.prefix),
    recordKey: recordKey(input.functionName, input.prefix),
    record,
    recordBody: recordBody(record),
  };
}

/** A stored record that cannot be used: its key and what is wrong. */
export class RecordFormatError extends Error {
  override readonly name = "RecordFormatError";
}

const RECORD_FIELDS: ReadonlyArray<[keyof FunctionRecord, "string" | "number"]> = [
  ["name", "string"],
  ["codeHash", "string"],
  ["format", "string"],
  ["bundleBytes", "number"],
  ["unpackedBytes", "number"],
  ["fileCount", "number"],
  ["entry", "string"],
  ["deployedAt", "string"],
  ["revision", "number"],
];

/** Parses and checks one stored record; a malformed object names its key and the bad field. */
export function parseRecord(body: Buffer | string, key: string): FunctionRecord {
  let value: unknown;
  try {
    value = JSON.parse(body.toString());
  } catch {
    throw new RecordFormatError(`registry object ${key} is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new RecordFormatError(`registry object ${key} is not a JSON object`);
  }
  const fields = value as Record<string, unknown>;
  for (const [field, type] of RECORD_FIELDS) {
    if (typeof fields[field] !== type)
      throw new RecordFormatError(`registry object ${key}: "${field}" must be a ${type}`);
  }
  if (fields.format !== "tar.gz" && fields.format !== "zip") {
    throw new RecordFormatError(`registry object ${key}: "format" must be "tar.gz" or "zip"`);
  }
  if (!FUNCTION_NAME.test(fields.name as string)) {
    throw new RecordFormatError(`registry object ${key}: "name" must match ${FUNCTION_NAME.source}`);
  }
  if (!SHA256_HEX.test(fields.codeHash as string)) {
    throw new RecordFormatError(`registry object ${key}: "codeHash" must be 64 lowercase hex digits`);
  }
  if (fields.config !== undefined) {
    const problem = storedConfigProblem(fields.config);
    if (problem) throw new RecordFormatError(`registry object ${key}: "config": ${problem}`);
  }
  return {
    name: fields.name as string,
    codeHash: fields.codeHash as string,
    format: fields.format,
    bundleBytes: fields.bundleBytes as number,
    unpackedBytes: fields.unpackedBytes as number,
    fileCount: fields.fileCount as number,
    entry: fields.entry as string,
    deployedAt: fields.deployedAt as string,
    revision: fields.revision as number,
    ...(fields.config !== undefined ? { config: fields.config as FunctionConfig } : {}),
  };
}

/** The object key of a function's secrets (its own object: never in the record, never in a bundle). */
export function secretsKey(name: string, prefix = ""): string {
  return `${prefix}secrets/${name}.json`;
}
