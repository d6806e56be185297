/** A local S3-compatible server (s3rver) with one bucket, and an SDK client pointed at it. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import S3rver from "s3rver";

export interface TestS3 {
  readonly bucket: string;
  /** The server's URL, for clients other than the SDK one (the aws CLI's --endpoint-url). */
  readonly endpoint: string;
  readonly client: S3Client;
  put(key: string, body: string | Buffer): Promise<void>;
  close(): Promise<void>;
}

export async function startS3Server(bucket = "snapfaas-artifacts"): Promise<TestS3> {
  const dataDir = await mkdtemp(join(tmpdir(), "snapfaas-s3rver-"));
  const server = new S3rver({
    address: "127.0.0.1",
    port: 0,
    silent: true,
    directory: dataDir,
    configureBuckets: [{ name: bucket }],
  });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  const client = new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    // s3rver predates the flexible-checksum headers newer SDKs send by default.
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return {
    bucket,
    endpoint,
    client,
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    async close() {
      client.destroy();
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
