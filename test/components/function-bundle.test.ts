import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create as createTar } from "tar";
import yazl from "yazl";
import { bundleFormatOf, describeFunctionBundle } from "../../components/function-bundle.ts";

async function writeZip(path: string, files: Record<string, string>): Promise<void> {
  const zip = new yazl.ZipFile();
  for (const [name, text] of Object.entries(files)) zip.addBuffer(Buffer.from(text), name);
  zip.end();
  const chunks: Buffer[] = [];
  for await (const chunk of zip.outputStream) chunks.push(chunk as Buffer);
  await writeFile(path, Buffer.concat(chunks));
}

describe("describeFunctionBundle", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "snapfaas-fnbundle-"));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("describes a tar.gz of a folder, using package.json main as the entry", async () => {
    const src = join(dir, "src");
    await mkdir(join(src, "lib"), { recursive: true });
    const manifest = '{"name":"hello","main":"lib/app.js"}';
    const app = "export const x = 1;\n";
    await writeFile(join(src, "package.json"), manifest);
    await writeFile(join(src, "lib", "app.js"), app);
    const archive = join(dir, "hello.tar.gz");
    await createTar({ gzip: true, file: archive, cwd: src, portable: true }, ["package.json", "lib"]);
    const info = await describeFunctionBundle(archive);
    const bytes = await readFile(archive);
    assert.equal(info.codeHash, createHash("sha256").update(bytes).digest("hex"));
    assert.equal(info.format, "tar.gz");
    assert.equal(info.bundleBytes, bytes.length);
    assert.equal(info.fileCount, 2);
    assert.equal(info.unpackedBytes, manifest.length + app.length);
    assert.equal(info.entry, "lib/app.js");
  });

  it("describes a zip with a single top folder (npm pack style) and falls back to index.js", async () => {
    const archive = join(dir, "fn.zip");
    await writeZip(archive, {
      "package/package.json": '{"name":"fn"}',
      "package/index.js": "module.exports = {};",
    });
    const info = await describeFunctionBundle(archive);
    assert.equal(info.format, "zip");
    assert.equal(info.fileCount, 2);
    assert.equal(info.unpackedBytes, 13 + 20);
    assert.equal(info.entry, "index.js");
  });

  it("refuses archives without package.json or with a missing main", async () => {
    const noManifest = join(dir, "a.zip");
    await writeZip(noManifest, { "index.js": "1" });
    await assert.rejects(describeFunctionBundle(noManifest), /no package\.json/);
    const badMain = join(dir, "b.zip");
    await writeZip(badMain, { "package.json": '{"main":"gone.js"}', "index.js": "1" });
    await assert.rejects(describeFunctionBundle(badMain), /main "gone\.js" is not in the code archive/);
  });

  it("knows formats by extension only", () => {
    assert.equal(bundleFormatOf("x.tgz"), "tar.gz");
    assert.throws(() => bundleFormatOf("x.rar"), /must end in \.tar\.gz, \.tgz or \.zip/);
  });
});
