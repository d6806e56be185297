import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
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

async function tree(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "faas-pack-"));
  for (const [name, data] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), data);
  }
  return dir;
}

const pkg = (name: string, deps: Record<string, string> = {}) =>
  JSON.stringify({ name, version: "1.0.0", main: "index.js", dependencies: deps });

describe("faas deploy bundling", () => {
  const made: string[] = [];
  const mk = async (files: Record<string, string>) => {
    const d = await tree(files);
    made.push(d);
    return d;
  };
  after(async () => {
    for (const d of made) await rm(d, { recursive: true, force: true });
  });

  it("compiles the TypeScript example to an ES module next to its package.json, main pointing at it", async () => {
    const files = await listTar(await packFunction(path.join(EXAMPLES, "hello-world")));
    assert.deepEqual(Object.keys(files).sort(), ["index.js", "package.json"]);
    assert.deepEqual(JSON.parse(files["package.json"]!), {
      name: "hello-world",
      private: true,
      type: "module",
      main: "index.js",
    });
    const dir = await mk({ "index.mjs": files["index.js"]! });
    const mod = (await import(pathToFileURL(path.join(dir, "index.mjs")).href)) as {
      HelloWorldService: new () => { helloWorld(): string };
    };
    assert.equal(new mod.HelloWorldService().helloWorld(), "Hello world!");
  });

  it("takes a folder relative to the working directory, as `faas deploy examples/hello-world` does", async () => {
    const relative = path.relative(process.cwd(), path.join(EXAMPLES, "hello-world"));
    assert.ok(!path.isAbsolute(relative));
    const files = await listTar(await packFunction(relative));
    assert.match(files["index.js"]!, /HelloWorldService/);
  });

  it("is deterministic: the same folder gives the same bytes, so the same code hash", async () => {
    const a = await packFunction(path.join(EXAMPLES, "express-serverless-http"));
    const b = await packFunction(path.join(EXAMPLES, "express-serverless-http"));
    assert.ok(a.equals(b));
  });

  it("finds the entry from package.json, else index files, else says what it looked for", async () => {
    const dir = await mk({});
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
    await assert.rejects(packFunction(dir), /esbuild could not compile .*broken\.ts:1/);
  });

  it("ships the folder's files, minus the defaults, .faasignore and what package.json files leaves out", async () => {
    const dir = await mk({
      "index.js": "exports.handler = async () => 1;",
      "public/a.css": "a",
      // A browser script's bare import is not a dependency of the function: it does not stop the pack.
      "public/app.js": "import React from 'react';",
      "views/page.html": "<p>",
      ".git/HEAD": "ref",
      "types.d.ts": "export {};",
      "test/index.test.js": "t",
      "notes.md": "n",
      ".faasignore": "test/\n*.md\n",
    });
    const files = Object.keys(await listTar(await packFunction(dir))).sort();
    assert.deepEqual(files, ["index.js", "package.json", "public/a.css", "public/app.js", "views/page.html"]);
    await writeFile(path.join(dir, "package.json"), JSON.stringify({ main: "index.js", files: ["views"] }));
    const only = Object.keys(await listTar(await packFunction(dir))).sort();
    assert.deepEqual(only, ["index.js", "package.json", "views/page.html"]);
  });

  it("ships the production dependency closure (nested, hoisted above the folder), never dev-only packages", async () => {
    const root = await mk({
      // Hoisted by a workspace: found above the function's folder, as Node finds it.
      "node_modules/hoisted/package.json": pkg("hoisted"),
      "node_modules/hoisted/index.js": "module.exports = 'hoisted';",
      "fn/package.json": JSON.stringify({
        main: "index.js",
        dependencies: { a: "1", hoisted: "1" },
        devDependencies: { devonly: "1" },
      }),
      "fn/index.js": "require('a'); require('hoisted');",
      "fn/node_modules/a/package.json": pkg("a", { b: "1" }),
      "fn/node_modules/a/index.js": "require('b');",
      "fn/node_modules/a/node_modules/b/package.json": pkg("b"),
      "fn/node_modules/a/node_modules/b/index.js": "",
      "fn/node_modules/devonly/package.json": pkg("devonly"),
      "fn/node_modules/devonly/index.js": "",
      "fn/node_modules/.bin/x": "",
    });
    const files = Object.keys(await listTar(await packFunction(path.join(root, "fn")))).sort();
    assert.deepEqual(files, [
      "index.js",
      "node_modules/a/index.js",
      "node_modules/a/node_modules/b/index.js",
      "node_modules/a/node_modules/b/package.json",
      "node_modules/a/package.json",
      "node_modules/hoisted/index.js",
      "node_modules/hoisted/package.json",
      "package.json",
    ]);
  });

  it("says which npm install to run for a dependency that is missing or only in devDependencies", async () => {
    const declared = await mk({
      "package.json": JSON.stringify({ main: "index.js", dependencies: { gone: "1" } }),
      "index.js": "",
    });
    await assert.rejects(
      packFunction(declared),
      /gone \(in "dependencies"\) is not installed: run `npm install` in /,
    );
    const undeclared = await mk({
      "index.ts": "import x from 'nowhere-pkg';\nexport const handler = () => x;\n",
    });
    await assert.rejects(
      packFunction(undeclared),
      /nowhere-pkg is needed \(index\.ts\) but not installed: run `npm install nowhere-pkg`/,
    );
    const dev = await mk({
      "package.json": JSON.stringify({ main: "index.ts", devDependencies: { devdep: "1" } }),
      "index.ts": "import d from 'devdep';\nexport const handler = () => d;\n",
    });
    await assert.rejects(
      packFunction(dev),
      /devdep is imported by index\.ts but is only in "devDependencies".*--save-prod devdep/,
    );
  });

  it("compiles TypeScript file by file, rewriting the folder's own imports to the compiled names", async () => {
    const dir = await mk({
      "package.json": JSON.stringify({ type: "module", main: "src/main.ts" }),
      "src/main.ts":
        "import { two } from './lib/two';\nimport { three } from './lib/three.ts';\nexport const handler = () => two() + three;\n",
      "src/lib/two.ts": "export function two(): number { return 2; }\n",
      "src/lib/three.ts": "export const three: number = 3;\n",
    });
    const files = await listTar(await packFunction(dir));
    assert.deepEqual(Object.keys(files).sort(), [
      "package.json",
      "src/lib/three.js",
      "src/lib/two.js",
      "src/main.js",
    ]);
    assert.match(files["src/main.js"]!, /from "\.\/lib\/two\.js"/);
    assert.match(files["src/main.js"]!, /from "\.\/lib\/three\.js"/);
    assert.equal(JSON.parse(files["package.json"]!).main, "src/main.js");
    const out = await mk(files);
    const mod = (await import(pathToFileURL(path.join(out, "src/main.js")).href)) as {
      handler: () => number;
    };
    assert.equal(mod.handler(), 5);
  });

  it("--handler writes a Lambda handler name into the bundle's package.json, and refuses a malformed one", async () => {
    const dir = await mk({ "src/lambda.ts": "export const main = async () => 1;\n" });
    const files = await listTar(await packFunction(dir, { handler: "src/lambda.main" }));
    assert.deepEqual(JSON.parse(files["package.json"]!), { faas: { handler: "src/lambda.main" } });
    assert.ok("src/lambda.js" in files);
    await assert.rejects(
      packFunction(dir, { handler: "src/lambda" }),
      /--handler: .*not a Lambda handler name/,
    );
  });
});
