import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Parser } from "tar";
import { findEntry, PackError, packFunction } from "../../host-agent/cli/pack.ts";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "examples");

function listTar(bytes: Buffer): Promise<Record<string, string>> {
  return new Promise((resolve, reject) => {
    const files: Record<string, string> = {};
    const p = new Parser({
      onReadEntry: (e) => {
        const chunks: Buffer[] = [];
        e.on("data", (c: Buffer) => chunks.push(c));
        e.on("end", () => {
          files[e.path] = Buffer.concat(chunks).toString("utf8");
        });
      },
    });
    p.on("end", () => resolve(files));
    p.on("error", reject);
    p.end(bytes);
  });
}

describe("faas deploy bundling", () => {
  it("bundles the TypeScript example into one CommonJS file and a package.json naming it", async () => {
    const files = await listTar(await packFunction(path.join(EXAMPLES, "hello-world")));
    assert.deepEqual(Object.keys(files).sort(), ["index.js", "package.json"]);
    assert.deepEqual(JSON.parse(files["package.json"]!), { main: "index.js" });
    const mod = { exports: {} as Record<string, unknown> };
    new Function("module", "exports", "require", files["index.js"]!)(mod, mod.exports, () => ({}));
    const Service = mod.exports.HelloWorldService as new () => { helloWorld(): string };
    assert.equal(new Service().helloWorld(), "Hello world!");
  });

  it("takes a folder relative to the working directory, as `faas deploy examples/hello-world` does", async () => {
    const relative = path.relative(process.cwd(), path.join(EXAMPLES, "hello-world"));
    assert.ok(!path.isAbsolute(relative));
    const files = await listTar(await packFunction(relative));
    assert.match(files["index.js"]!, /HelloWorldService/);
  });

  it("is deterministic: the same folder gives the same bytes, so the same code hash", async () => {
    const a = await packFunction(path.join(EXAMPLES, "hello-world"));
    const b = await packFunction(path.join(EXAMPLES, "hello-world"));
    assert.ok(a.equals(b));
  });

  it("finds the entry from package.json, else index files, else says what it looked for", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "faas-pack-"));
    try {
      await assert.rejects(
        packFunction(dir),
        (e: unknown) => e instanceof PackError && /no entry found/.test(e.message),
      );
      await writeFile(path.join(dir, "index.mjs"), "export const x = 1;");
      assert.equal(findEntry(dir), "index.mjs");
      await writeFile(path.join(dir, "main.js"), "exports.y = 2;");
      await writeFile(path.join(dir, "package.json"), '{"main":"main.js"}');
      assert.equal(findEntry(dir), "main.js");
      await writeFile(path.join(dir, "broken.ts"), "export const = ;");
      await writeFile(path.join(dir, "package.json"), '{"main":"broken.ts"}');
      await assert.rejects(packFunction(dir), /esbuild could not bundle/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
