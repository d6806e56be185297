/**
 * Where the registry keeps deployed functions. The local folder backend is the default; an artifact-store
 * backend (S3 API) lets every host of a fleet serve every function without a manual step.
 */

/** One deployed function, as persisted. */
export interface FunctionRecord {
  /** ^[a-z][a-z0-9-]{0,62}$ */
  readonly name: string;
  /** sha256 (hex) of the bundle bytes as uploaded: the code hash. */
  readonly codeHash: string;
  /** "tar.gz" or "zip". */
  readonly format: "tar.gz" | "zip";
  readonly bundleBytes: number;
  readonly unpackedBytes: number;
  readonly fileCount: number;
  /** Entry module, relative to the code root (from package.json `main`, else index.js / index.mjs). */
  readonly entry: string;
  /** ISO 8601. */
  readonly deployedAt: string;
  /** Monotonic per name: 1 for the first deploy. */
  readonly revision: number;
}

export interface RegistryBackend {
  /** Every stored record (the registry's whole state at start). */
  loadRecords(): Promise<FunctionRecord[]>;
  /** Stores bundle bytes under their content hash. Idempotent: storing a hash twice is a no-op. */
  putBundle(codeHash: string, bytes: Buffer): Promise<void>;
  /** The bundle bytes for a hash, or undefined when not stored. */
  getBundle(codeHash: string): Promise<Buffer | undefined>;
  /** Writes one record atomically: readers see the old record or the new one, never a mix. */
  putRecord(record: FunctionRecord): Promise<void>;
  /** Removes one record (bundles stay until garbage-collected). */
  deleteRecord(name: string): Promise<void>;
}
