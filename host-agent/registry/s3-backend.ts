/**
 * Registry backend on an S3-compatible artifact store, so every host of a fleet reads the same functions.
 * The key layout and the record's JSON are the store's contract (contracts/registry-layout.ts), which the
 * Pulumi FaasFunction writes too. A single PutObject replaces an object whole, which gives putRecord its
 * all-or-nothing visibility; ListObjectsV2's ETags tell a poll which records changed.
 */
import { createHash } from "node:crypto";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import {
  bundleKey,
  FUNCTION_NAME,
  nameOfRecordKey,
  parseRecord,
  RecordFormatError,
  recordBody,
  recordKey,
  recordsPrefix,
  SHA256_HEX,
  secretsKey,
} from "../../contracts/registry-layout.ts";
import {
  type FunctionRecord,
  parseSecrets,
  type RegistryBackend,
  StoreAccessError,
  type StoredRecordRef,
} from "./backend.ts";

export interface S3RegistryBackendOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket, e.g. "prod/"; empty by default. */
  readonly prefix?: string;
  /** A ready client; when absent one is made from `clientConfig` (region, endpoint, credentials). */
  readonly client?: S3Client;
  readonly clientConfig?: S3ClientConfig;
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

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  async listRecords(): Promise<StoredRecordRef[]> {
    const refs: StoredRecordRef[] = [];
    let continuationToken: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: recordsPrefix(this.prefix),
            ContinuationToken: continuationToken,
          }),
        );
      } catch (error) {
        throw this.accessError(`cannot list ${this.location}${recordsPrefix("")}`, error, "s3:ListBucket");
      }
      for (const item of page.Contents ?? []) {
        if (!item.Key?.endsWith(".json")) continue;
        const name = nameOfRecordKey(item.Key, this.prefix);
        // A key that names no valid function is still reported (skipped with a reason), not ignored.
        refs.push({
          name: name ?? item.Key.slice(recordsPrefix(this.prefix).length, -".json".length),
          key: item.Key,
          etag: item.ETag ?? `${item.Size}-${item.LastModified?.getTime()}`,
        });
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken);
    return refs.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async readRecord(ref: StoredRecordRef): Promise<FunctionRecord | undefined> {
    if (!FUNCTION_NAME.test(ref.name)) {
      throw new RecordFormatError(
        `registry object ${ref.key}: "${ref.name}" is not a function name (${FUNCTION_NAME.source})`,
      );
    }
    const body = await this.getObject(ref.key);
    // A record deleted between list and get is simply gone.
    if (body === undefined) return undefined;
    const record = parseRecord(body, ref.key);
    if (recordKey(record.name, this.prefix) !== ref.key) {
      throw new RecordFormatError(`registry object ${ref.key} holds the record of "${record.name}"`);
    }
    return record;
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
        Body: recordBody(record),
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

  async putSecrets(name: string, secrets: Readonly<Record<string, string>>): Promise<void> {
    assertName(name);
    const Key = secretsKey(name, this.prefix);
    if (Object.keys(secrets).length === 0) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }));
      return;
    }
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key,
        Body: JSON.stringify(secrets),
        ContentType: "application/json",
      }),
    );
  }

  async getSecrets(name: string): Promise<Record<string, string>> {
    assertName(name);
    const key = secretsKey(name, this.prefix);
    const body = await this.getObject(key);
    return body ? parseSecrets(body, key) : {};
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
      throw this.accessError(`cannot read s3://${this.bucket}/${key}`, error, "s3:GetObject");
    }
  }

  /**
   * Any failure other than "not found". A 403 on a key says nothing about whether it exists: without
   * s3:ListBucket on the prefix S3 answers a missing key with 403 AccessDenied, not 404.
   */
  private accessError(what: string, error: unknown, permission: string): StoreAccessError {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    const code = (error as { name?: string }).name ?? "Error";
    const hint =
      status === 403
        ? `: access denied (403 ${code}); the host's role needs ${permission} here, and s3:ListBucket on ${this.prefix || "the bucket"}* so that a missing key reads as 404`
        : `: ${code}${status ? ` (HTTP ${status})` : ""}: ${(error as Error).message}`;
    return new StoreAccessError(`${what}${hint}`, { cause: error });
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
