/**
 * The registry over a shared S3 store (a real s3rver): records other writers add, replace and delete
 * are picked up by refresh(); records that cannot be used are skipped with one log line each, at start
 * and on a poll, and never listed; a 403 is an access error (logged, read again), not "not found".
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DeleteObjectCommand, GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { Manifest } from "../../contracts/base-manifest.ts";
import { bundleKey, type FunctionRecord, recordKey, secretsKey } from "../../contracts/registry-layout.ts";
import type { StoredRecordRef } from "../../host-agent/registry/backend.ts";
import { forceRemove } from "../../host-agent/registry/bundle.ts";
import { codeDisksForBase } from "../../host-agent/registry/code-disks.ts";
import { LocalRegistryBackend } from "../../host-agent/registry/local-backend.ts";
import { RegistryPoller } from "../../host-agent/registry/poller.ts";
import { Registry } from "../../host-agent/registry/registry.ts";
import { S3RegistryBackend } from "../../host-agent/registry/s3-backend.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { captureLog, LEVEL } from "../helpers/log-capture.ts";
import { startS3Server, type TestS3 } from "../helpers/s3-server.ts";
import { helloBundle, tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";

const LIMITS = { maxBundleBytes: 1 << 20, maxUnpackedBytes: 1 << 20, maxFiles: 100 };

function recordFor(name: string, bytes: Buffer, revision = 1): FunctionRecord {
  return {
    name,
    codeHash: createHash("sha256").update(bytes).digest("hex"),
    format: "tar.gz",
    bundleBytes: bytes.length,
    unpackedBytes: 1,
    fileCount: 1,
    entry: "index.js",
    deployedAt: "2026-12-01T08:00:00.000Z",
    revision,
  };
}

describe("registry refresh over a shared S3 store", () => {
  let s3: TestS3;
  let state: string;
  let prefixSeq = 0;
  let prefix: string;

  before(async () => {
    s3 = await startS3Server();
  });
  after(async () => {
    await s3?.close();
  });
  beforeEach(async () => {
    state = await mkdtemp(path.join(tmpdir(), "faas-reg-refresh-"));
    prefix = `r${prefixSeq++}/`;
  });
  afterEach(async () => {
    await forceRemove(state);
  });

  /** What FaasFunction does: the bundle first, then the record. */
  async function deploy(record: FunctionRecord, bytes: Buffer): Promise<void> {
    await s3.put(bundleKey(record.codeHash, prefix), bytes);
    await s3.put(recordKey(record.name, prefix), JSON.stringify(record));
  }

  function open(client: S3Client = s3.client) {
    const captured = captureLog();
    const changes: Array<[string, string | undefined]> = [];
    const registry = new Registry(
      new S3RegistryBackend({ bucket: s3.bucket, prefix, client }),
      path.join(state, "code"),
      LIMITS,
      new FakeClock(),
      { log: captured.log, onChange: (name, record) => changes.push([name, record?.codeHash]) },
    );
    return { registry, captured, changes };
  }

  it("starts with the usable records and skips each broken one with one log line naming it and why", async () => {
    const good = helloBundle();
    await deploy(recordFor("good", good), good);
    await s3.put(recordKey("not-json", prefix), "{ this is not json");
    await s3.put(
      recordKey("bad-schema", prefix),
      JSON.stringify({ ...recordFor("bad-schema", good), revision: "2" }),
    );
    const orphan = tarGz([{ name: "index.js", data: "module.exports = {};\n" }]);
    // The record of a bundle that was never uploaded (or was deleted since).
    await s3.put(recordKey("no-bundle", prefix), JSON.stringify(recordFor("no-bundle", orphan)));
    const wrong = helloBundle([{ name: "extra.txt", data: "x" }]);
    await s3.put(bundleKey(recordFor("wrong-bytes", wrong).codeHash, prefix), good);
    await s3.put(recordKey("wrong-bytes", prefix), JSON.stringify(recordFor("wrong-bytes", wrong)));

    const { registry, captured } = open();
    await registry.init();
    assert.deepEqual(
      registry.list().map((r) => r.name),
      ["good"],
    );
    const skipped = captured.find("registry record skipped");
    assert.deepEqual(
      skipped.map((l) => [l["fn"], l["record"], l["level"]]),
      [
        ["bad-schema", `${prefix}registry/bad-schema.json`, LEVEL.warn],
        ["no-bundle", `${prefix}registry/no-bundle.json`, LEVEL.warn],
        ["not-json", `${prefix}registry/not-json.json`, LEVEL.warn],
        ["wrong-bytes", `${prefix}registry/wrong-bytes.json`, LEVEL.warn],
      ],
    );
    const reasons = Object.fromEntries(skipped.map((l) => [l["fn"], String(l["reason"])]));
    assert.match(reasons["bad-schema"]!, /"revision" must be a number/);
    assert.match(reasons["no-bundle"]!, /bundle [0-9a-f]{64} is missing from the store/);
    assert.match(reasons["not-json"]!, /is not JSON/);
    assert.match(reasons["wrong-bytes"]!, /do not hash to the record's codeHash/);
    // Unchanged broken records are not logged again on every poll.
    await registry.refresh();
    assert.equal(captured.find("registry record skipped").length, 4);
    // A missing bundle may still arrive: the record is read again, and served once it is there.
    await s3.put(bundleKey(recordFor("no-bundle", orphan).codeHash, prefix), orphan);
    assert.deepEqual((await registry.refresh()).added, ["no-bundle"]);
    assert.equal(captured.find("registry record skipped").length, 4);
  });

  it("adds, replaces and removes functions other writers deploy and delete, telling the listener", async () => {
    const { registry, changes } = open();
    await registry.init();
    assert.equal(registry.size, 0);

    const v1 = helloBundle();
    await deploy(recordFor("hello", v1), v1);
    assert.deepEqual(await registry.refresh(), { added: ["hello"], replaced: [], removed: [], skipped: [] });
    assert.equal(registry.get("hello")?.codeHash, recordFor("hello", v1).codeHash);

    const v2 = helloBundle([{ name: "v2.txt", data: "2" }]);
    await deploy(recordFor("hello", v2, 2), v2);
    assert.deepEqual(await registry.refresh(), { added: [], replaced: ["hello"], removed: [], skipped: [] });
    assert.equal(registry.get("hello")?.revision, 2);
    assert.deepEqual(await readdir(registry.codePath(recordFor("hello", v2).codeHash)), [
      "index.js",
      "v2.txt",
    ]);

    assert.deepEqual(await registry.refresh(), { added: [], replaced: [], removed: [], skipped: [] });

    await s3.client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: recordKey("hello", prefix) }));
    assert.deepEqual(await registry.refresh(), { added: [], replaced: [], removed: ["hello"], skipped: [] });
    assert.equal(registry.get("hello"), undefined);
    assert.deepEqual(changes, [
      ["hello", recordFor("hello", v1).codeHash],
      ["hello", recordFor("hello", v2).codeHash],
      ["hello", undefined],
    ]);
  });

  it("reads a configured record's secrets from their own object, and waits for secrets not stored yet", async () => {
    const bytes = helloBundle();
    const configured: FunctionRecord = {
      ...recordFor("vault", bytes),
      config: { env: { MODE: "prod" }, secretNames: ["TOKEN"], secretsRevision: 1, memoryMiB: 9999 },
    };
    await deploy(configured, bytes);
    const { registry, captured } = open();
    await registry.init();
    assert.deepEqual(registry.list(), [], "no secrets stored yet: not served");
    assert.match(
      String(captured.find("registry record skipped")[0]?.reason),
      /its secrets TOKEN are not stored/,
    );
    await s3.put(secretsKey("vault", prefix), JSON.stringify({ TOKEN: "tok" }));
    await registry.refresh();
    const record = registry.get("vault");
    assert.ok(record, "served once its secrets are there");
    assert.deepEqual(registry.secretsOf("vault"), { TOKEN: "tok" });
    const registryWithHost = new Registry(
      new S3RegistryBackend({ bucket: s3.bucket, prefix, client: s3.client }),
      path.join(state, "code2"),
      LIMITS,
      new FakeClock(),
      { functionDefaults: { memoryMiB: 512, callTimeoutMs: 10_000, region: "eu-west-1" } },
    );
    await registryWithHost.init();
    const settings = registryWithHost.settingsFor(registryWithHost.get("vault")!);
    assert.deepEqual(settings.load, {
      env: { MODE: "prod", TOKEN: "tok" },
      functionVersion: "1",
      memoryMiB: 512,
      region: "eu-west-1",
    });
    assert.equal(settings.timeoutMs, 10_000, "this host's bounds apply to a record another writer made");
  });

  it("stops serving a function whose record is replaced by a broken one, on a poll, without throwing", async () => {
    const { registry, captured, changes } = open();
    const v1 = helloBundle();
    await deploy(recordFor("hello", v1), v1);
    await registry.init();
    await s3.put(recordKey("hello", prefix), "[]");
    const result = await registry.refresh();
    assert.deepEqual(result.removed, ["hello"]);
    assert.match(result.skipped[0]?.reason ?? "", /is not a JSON object/);
    assert.equal(registry.get("hello"), undefined);
    assert.deepEqual(changes.at(-1), ["hello", undefined]);
    assert.equal(captured.find("registry record skipped").length, 1);
  });

  it("treats a 403 as an access error: logged as an error, the record read again on the next poll", async () => {
    const bytes = helloBundle();
    const record = recordFor("guarded", bytes);
    await deploy(record, bytes);
    let deny = true;
    // S3 answers 403 AccessDenied for an object the role may not read (or, without ListBucket, for a
    // missing key); s3rver has no IAM, so this client refuses the bundle's GetObject the way S3 would.
    const denying = new Proxy(s3.client, {
      get(target, prop, receiver) {
        if (prop !== "send") return Reflect.get(target, prop, receiver);
        return async (command: { input?: { Key?: string } }) => {
          if (
            deny &&
            command instanceof GetObjectCommand &&
            command.input?.Key === bundleKey(record.codeHash, prefix)
          ) {
            throw Object.assign(new Error("Access Denied"), {
              name: "AccessDenied",
              $metadata: { httpStatusCode: 403 },
            });
          }
          return target.send(command as never);
        };
      },
    });
    const { registry, captured } = open(denying);
    await registry.init();
    assert.equal(registry.get("guarded"), undefined);
    const [line] = captured.find("registry record skipped");
    assert.equal(line?.["level"], LEVEL.error);
    assert.match(String(line?.["reason"]), /access denied \(403 AccessDenied\).*s3:GetObject.*s3:ListBucket/);
    deny = false;
    assert.deepEqual((await registry.refresh()).added, ["guarded"]);
  });

  it("keeps polling through a store that cannot be listed, and logs that once", async () => {
    const clock = new FakeClock();
    const captured = captureLog();
    let fail = true;
    let polls = 0;
    const poller = new RegistryPoller({
      registry: {
        refresh: async () => {
          polls++;
          if (fail) throw new Error("cannot list s3://b/: access denied");
          return { added: [], replaced: [], removed: [], skipped: [] };
        },
      },
      clock,
      log: captured.log,
      intervalMs: 1000,
    });
    poller.start();
    for (let i = 1; i <= 3; i++) {
      clock.advance(1000);
      await waitFor(`poll ${i}`, () => polls === i);
      await new Promise((r) => setImmediate(r));
    }
    fail = false;
    clock.advance(1000);
    await waitFor("poll 4", () => polls === 4);
    await waitFor("the recovery line", () => captured.find("registry poll works again").length === 1);
    await poller.stop();
    assert.equal(captured.find("registry poll failed").length, 1);
  });

  it("skips a broken record in a local registry too, instead of failing the start", async () => {
    const captured = captureLog();
    const reg = new Registry(
      new LocalRegistryBackend(state),
      path.join(state, "code"),
      LIMITS,
      new FakeClock(),
      {
        log: captured.log,
      },
    );
    await reg.init();
    await reg.commit(await reg.prepare("hello", helloBundle()));
    await writeFile(path.join(state, "registry", "torn.json"), '{"name": "torn"');
    const again = new Registry(
      new LocalRegistryBackend(state),
      path.join(state, "code"),
      LIMITS,
      new FakeClock(),
      {
        log: captured.log,
      },
    );
    await again.init();
    assert.deepEqual(
      again.list().map((r) => r.name),
      ["hello"],
    );
    assert.match(String(captured.find("registry record skipped")[0]?.["reason"]), /torn\.json is not JSON/);
  });

  it("puts adopted records on code disks for a microVM base, and skips one too large for the disk", async () => {
    const MiB = 1024 * 1024;
    const base = {
      version: "v",
      driver: "firecracker",
      manifest: { guest: "osv", artifacts: [{ name: "code-empty.img", sha256: "0".repeat(64), bytes: MiB }] },
    } as unknown as { version: string; driver: string; manifest: Manifest };
    const small = helloBundle();
    const big = helloBundle([{ name: "blob.bin", data: randomBytes(MiB + MiB / 2) }]);
    await deploy(recordFor("small", small), small);
    await deploy(recordFor("big", big), big);
    const captured = captureLog();
    const registry = new Registry(
      new S3RegistryBackend({ bucket: s3.bucket, prefix, client: s3.client }),
      path.join(state, "code"),
      { ...LIMITS, maxBundleBytes: 4 * MiB, maxUnpackedBytes: 4 * MiB },
      new FakeClock(),
      { log: captured.log, codeDisks: codeDisksForBase(base, path.join(state, "code-disks")) },
    );
    await registry.init();
    assert.deepEqual(
      registry.list().map((r) => r.name),
      ["small"],
    );
    const disk = registry.artifactPath(recordFor("small", small).codeHash);
    assert.match(disk, /code-disks\/[0-9a-f]{64}\.1m\.rofs$/);
    assert.equal((await stat(disk)).size, MiB);
    const [line] = captured.find("registry record skipped");
    assert.equal(line?.["fn"], "big");
    assert.match(String(line?.["reason"]), /cannot be put on a code disk: code too large for a code disk/);
  });

  it("keeps a function this agent deployed while a refresh's listing predates it, and drops it once deleted elsewhere", async () => {
    const local = new LocalRegistryBackend(state);
    let release: () => void = () => {};
    let gated = false;
    const backend = Object.assign(Object.create(local) as LocalRegistryBackend, {
      async listRecords(): Promise<StoredRecordRef[]> {
        const refs = await local.listRecords();
        if (gated) await new Promise<void>((r) => (release = r));
        return refs;
      },
    });
    const registry = new Registry(backend, path.join(state, "code"), LIMITS, new FakeClock());
    await registry.init();
    gated = true;
    const refreshing = registry.refresh();
    await new Promise((r) => setTimeout(r, 50));
    await registry.withNameLock("hello", async () =>
      registry.commit(await registry.prepare("hello", helloBundle())),
    );
    release();
    await refreshing;
    assert.ok(registry.get("hello"), "the listing from before the commit does not remove it");
    gated = false;
    await rm(path.join(state, "registry", "hello.json"));
    assert.deepEqual((await registry.refresh()).removed, ["hello"]);
  });
});
