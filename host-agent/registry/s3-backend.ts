/**
 * Registry backend on an S3-compatible artifact store, so every host of a fleet reads the same functions.
 * Layout under an optional prefix: records at `registry/<name>.json`, bundle bytes at `bundles/<sha256>`.
 * A single PutObject replaces an object whole, which gives putRecord its all-or-nothing visibility.
 */
import { createHash } from "node:crypto";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import type { FunctionRecord, RegistryBackend } from "./backend.ts";

const FUNCTION_NAME = /^[a-z][a-z0-9-]{0,62}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export interface S3RegistryBackendOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket, e.g. "prod/"; empty by default. */
  readonly prefix?: string;
  /** A ready client; when absent one is made from `clientConfig` (region, endpoint, credentials). */
  readonly client?: S3Client;
  readonly clientConfig?: S3ClientConfig;
}

/** The object key of a function's record. Exported so the Pulumi FaasFunction writes the same layout. */
export function recordKey(name: string, prefix = ""): string {
  return `${prefix}registry/${name}.json`;
}

/** The object key of a bundle, by its content hash. */
export function bundleKey(codeHash: string, prefix = ""): string {
  return `${prefix}bundles/${codeHash}`;
}

export class S3RegistryBackend implements RegistryBackend {
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;

  constructor(options: S3RegistryBackendOptions) {
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? "";
    this.client = options.client ?? new S3Client(options.clientConfig ?? {});
  }

  async loadRecords(): Promise<FunctionRecord[]> {
    const listPrefix = `${this.prefix}registry/`;
    const keys: string[] = [];
    let continuationToken: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: listPrefix,
          ContinuationToken: continuationToken,
        }),
      );
      for (const item of page.Contents ?? []) {
        if (item.Key?.endsWith(".json")) keys.push(item.Key);
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);

    const records: FunctionRecord[] = [];
    for (const key of keys.sort()) {
      const body = await this.getObject(key);
      // A record deleted between list and get is simply gone.
      if (body === undefined) continue;
      const record = parseRecord(body, key);
      if (recordKey(record.name, this.prefix) !== key) {
        throw new Error(`registry object ${key} holds the record of "${record.name}"`);
      }
      records.push(record);
    }
    return records;
  }

  async putBundle(codeHash: string, bytes: Buffer): Promise<void> {
    assertHash(codeHash);
    const actual = createHash("sha256").update(bytes).digest("hex");
    if (actual !== codeHash) {
      throw new Error(`bundle bytes hash to ${actual}, not to the given code hash ${codeHash}`);
    }
    const key = bundleKey(codeHash, this.prefix);
    if (await this.exists(key)) return;
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: bytes,
        ContentType: "application/octet-stream",
      }),
    );
  }

  async getBundle(codeHash: string): Promise<Buffer | undefined> {
    assertHash(codeHash);
    return this.getObject(bundleKey(codeHash, this.prefix));
  }

  async putRecord(record: FunctionRecord): Promise<void> {
    assertName(record.name);
    assertHash(record.codeHash);
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: recordKey(record.name, this.prefix),
        Body: JSON.stringify(record),
        ContentType: "application/json",
      }),
    );
  }

  async deleteRecord(name: string): Promise<void> {
    assertName(name);
    await this.client.send(
      new DeleteObjectCommand({ Bucket: this.bucket, Key: recordKey(name, this.prefix) }),
    );
  }

  private async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  private async getObject(key: string): Promise<Buffer | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      if (!response.Body) return Buffer.alloc(0);
      return Buffer.from(await response.Body.transformToByteArray());
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
}

function isNotFound(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const named = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return named.name === "NoSuchKey" || named.name === "NotFound" || named.$metadata?.httpStatusCode === 404;
}

function assertName(name: string): void {
  if (!FUNCTION_NAME.test(name))
    throw new Error(`function name "${name}" must match ${FUNCTION_NAME.source}`);
}

function assertHash(codeHash: string): void {
  if (!SHA256_HEX.test(codeHash)) throw new Error(`code hash "${codeHash}" is not 64 lowercase hex digits`);
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
export function parseRecord(body: Buffer, key: string): FunctionRecord {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new Error(`registry object ${key} is not JSON`);
  }
  if (typeof value !== "object" || value === null) throw new Error(`registry object ${key} is not an object`);
  const fields = value as Record<string, unknown>;
  for (const [field, type] of RECORD_FIELDS) {
    if (typeof fields[field] !== type)
      throw new Error(`registry object ${key}: "${field}" must be a ${type}`);
  }
  if (fields.format !== "tar.gz" && fields.format !== "zip") {
    throw new Error(`registry object ${key}: "format" must be "tar.gz" or "zip"`);
  }
  assertName(fields.name as string);
  assertHash(fields.codeHash as string);
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
  };
}
