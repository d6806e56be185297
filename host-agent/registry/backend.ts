/**
 * Where the registry keeps deployed functions. The local folder backend is the default; an artifact-store
 * backend (S3 API) lets every host of a fleet serve every function without a manual step. The record's
 * shape is the artifact store's contract (contracts/registry-layout.ts), shared with the Pulumi side.
 */
import type { FunctionRecord } from "../../contracts/registry-layout.ts";

export type { FunctionRecord } from "../../contracts/registry-layout.ts";

/** One stored record as a listing shows it: enough to tell whether it changed since the last look. */
export interface StoredRecordRef {
  readonly name: string;
  /** Where it is stored (object key or file), for log lines. */
  readonly key: string;
  /** Changes whenever the record's content does (an S3 ETag; size and mtime for a file). */
  readonly etag: string;
}

/**
 * The store refused a read for a reason other than "not there" (S3 403 AccessDenied, a network error):
 * the record or bundle may well exist, so nothing is concluded from it and the read is tried again later.
 */
export class StoreAccessError extends Error {
  override readonly name = "StoreAccessError";
}

export interface RegistryBackend {
  /** Where the records live, for messages ("s3://bucket/prefix", a folder). */
  readonly location: string;
  /** Every stored record, unread. Throws when the store cannot be listed. */
  listRecords(): Promise<StoredRecordRef[]>;
  /**
   * One record, checked against the contract; undefined when it no longer exists. Throws
   * RecordFormatError when the stored bytes are not a valid record, StoreAccessError when unreadable.
   */
  readRecord(ref: StoredRecordRef): Promise<FunctionRecord | undefined>;
  /** Stores bundle bytes under their content hash. Idempotent: storing a hash twice is a no-op. */
  putBundle(codeHash: string, bytes: Buffer): Promise<void>;
  /** The bundle bytes for a hash, or undefined when not stored (StoreAccessError when unreadable). */
  getBundle(codeHash: string): Promise<Buffer | undefined>;
  /** Writes one record atomically: readers see the old record or the new one, never a mix. */
  putRecord(record: FunctionRecord): Promise<void>;
  /** Removes one record (bundles stay until garbage-collected). */
  deleteRecord(name: string): Promise<void>;
  /**
   * The secret store, apart from records and bundles: one function's secrets, replaced whole. Values
   * are never logged; an empty set removes the stored object.
   */
  putSecrets(name: string, secrets: Readonly<Record<string, string>>): Promise<void>;
  /** A function's secrets, {} when none are stored (StoreAccessError when unreadable). */
  getSecrets(name: string): Promise<Record<string, string>>;
}

/** Parses a stored secrets object: names to string values, else a message naming the key (never a value). */
export function parseSecrets(body: Buffer | string, key: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(body.toString());
  } catch {
    throw new StoreAccessError(`the secrets object ${key} is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StoreAccessError(`the secrets object ${key} is not a JSON object`);
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string")
      throw new StoreAccessError(`the secrets object ${key}: "${k}" is not a string`);
  }
  return value as Record<string, string>;
}
