/**
 * The objects FaasFunction writes, from the pure helper (no Pulumi mocks): keys and body come from the
 * registry contract, and the agent's parser reads the body back to the same record.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { functionObjects } from "../../components/function-objects.ts";
import {
  bundleKey,
  nameOfRecordKey,
  parseRecord,
  RecordFormatError,
  recordKey,
} from "../../contracts/registry-layout.ts";
import { helloBundle } from "../helpers/tar-builder.ts";

describe("FaasFunction's registry objects", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-objects-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("are the contract's keys and a record body the agent parses back", async () => {
    const archive = path.join(dir, "hello.tar.gz");
    await writeFile(
      archive,
      helloBundle([{ name: "package.json", data: '{"name":"hello","main":"index.js"}' }]),
    );
    const codeHash = createHash("sha256")
      .update(await readFile(archive))
      .digest("hex");
    const objects = await functionObjects(archive, { functionName: "hello", prefix: "fx/", revision: 4 });
    assert.equal(objects.bundleKey, `fx/bundles/${codeHash}`);
    assert.equal(objects.bundleKey, bundleKey(codeHash, "fx/"));
    assert.equal(objects.recordKey, "fx/registry/hello.json");
    assert.equal(nameOfRecordKey(objects.recordKey, "fx/"), "hello");
    assert.deepEqual(parseRecord(objects.recordBody, objects.recordKey), {
      name: "hello",
      codeHash,
      format: "tar.gz",
      bundleBytes: (await stat(archive)).size,
      unpackedBytes: objects.record.unpackedBytes,
      fileCount: 2,
      entry: "index.js",
      deployedAt: (await stat(archive)).mtime.toISOString(),
      revision: 4,
    });
  });

  it("have a parser that names the key and the field, and keys that only name valid functions", () => {
    assert.throws(() => parseRecord("{", "k.json"), RecordFormatError);
    assert.throws(() => parseRecord('{"name":"x"}', "p/registry/x.json"), /p\/registry\/x\.json: "codeHash"/);
    assert.equal(nameOfRecordKey("registry/Bad_Name.json"), undefined);
    assert.equal(nameOfRecordKey("other/hello.json"), undefined);
    assert.equal(recordKey("a", ""), "registry/a.json");
  });
});
