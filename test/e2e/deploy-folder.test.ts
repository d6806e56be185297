/**
 * What `faas deploy` takes from a folder, through a running agent: ES modules with top-level await and
 * import.meta.url, Lambda handler names, native addons (real ones, compiled here with gcc against the
 * base's Node headers) loaded or refused at deploy with why, a forgotten `npm install` named at deploy,
 * and the bundle size limit.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { PackError, packFunction } from "../../host-agent/cli/pack.ts";
import { startTestAgent, type TestAgent, testBase } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const NAPI_ZLIB_ADDON = `#include <node_api.h>
#include <zlib.h>
static napi_value Version(napi_env env, napi_callback_info info) {
  napi_value s;
  napi_create_string_utf8(env, zlibVersion(), NAPI_AUTO_LENGTH, &s);
  return s;
}
NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "zlibVersion", NAPI_AUTO_LENGTH, Version, NULL, &fn);
  napi_set_named_property(env, exports, "zlibVersion", fn);
  return exports;
}
`;

/** What a context-aware addon built by node-gyp for Node 20 (NODE_MODULE_VERSION 115) exports. */
const NODE20_ADDON = `__attribute__((visibility("default"))) void node_register_module_v115(void *e, void *m, void *c) {}
`;

const LIBELF_ADDON = `#include <node_api.h>
extern unsigned elf_version(unsigned);
NAPI_MODULE_INIT() { elf_version(1); return exports; }
`;

async function folder(files: Record<string, string | Buffer>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "faas-deploy-"));
  for (const [name, data] of Object.entries(files)) {
    await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await writeFile(path.join(dir, name), data);
  }
  return dir;
}

describe("faas deploy of whole folders into a running agent", function () {
  this.timeout(120_000);
  let agent: TestAgent;
  const dirs: string[] = [];
  const mk = async (files: Record<string, string | Buffer>) => {
    const d = await folder(files);
    dirs.push(d);
    return d;
  };

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({
      FAAS_CALL_TIMEOUT_MS: "10000",
      FAAS_MAX_BUNDLE_BYTES: String(256 * 1024),
    });
  });

  after(async () => {
    await agent?.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("runs an ES module with top-level await, reading a file next to it through import.meta.url", async () => {
    const dir = await mk({
      "package.json": JSON.stringify({ type: "module", main: "src/main.ts" }),
      "src/main.ts": `import { readFile } from "node:fs/promises";
import { shout } from "./lib/shout";
const template = await readFile(new URL("../templates/hi.txt", import.meta.url), "utf8");
export const handler = async () => ({ statusCode: 200, body: shout(template.trim()) + " " + import.meta.url });
`,
      "src/lib/shout.ts": "export const shout = (s: string): string => s.toUpperCase();\n",
      "templates/hi.txt": "hello template\n",
    });
    const { code, printed } = await runCli(agent, ["deploy", dir, "--name", "esm-tla"]);
    assert.equal(code, 0, printed.join("\n"));
    const res = await agent.call("esm-tla", undefined, { method: "GET" });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.text, "HELLO TEMPLATE file:///code/src/main.js");
  });

  it("takes a Lambda handler name, with a nested export, from package.json faas.handler", async () => {
    const dir = await mk({
      "package.json": JSON.stringify({ faas: { handler: "api/v1.2/app.routes.get" } }),
      "api/v1.2/app.js":
        "exports.routes = { get: async (event) => ({ statusCode: 200, body: 'got ' + event.rawPath }) };\n",
    });
    const { code, printed } = await runCli(agent, ["deploy", dir, "--name", "lambda-name"]);
    assert.equal(code, 0, printed.join("\n"));
    const res = await agent.call("lambda-name", undefined, { method: "GET", path: "/lambda-name/x" });
    assert.equal(res.text, "got /x");
    const wrong = await mk({
      "package.json": JSON.stringify({ faas: { handler: "app.nope" } }),
      "app.js": "exports.handler = async () => 1;\n",
    });
    const refused = await agent.admin("PUT", "/v1/functions/lambda-wrong", await packFunction(wrong));
    assert.equal(refused.status, 422);
    assert.match(
      String((refused.json.error as { message: string }).message),
      /app\.js has no function export nope .*it exports: handler/,
    );
  });

  it("names a dependency nobody installed: at pack time, and in the load error of a bundle made by hand", async () => {
    const dir = await mk({
      "package.json": JSON.stringify({ main: "index.js", dependencies: { "left-pad-nowhere": "^1.0.0" } }),
      "index.js": "const pad = require('left-pad-nowhere'); exports.handler = async () => pad;\n",
    });
    await assert.rejects(packFunction(dir), (e: unknown) => {
      assert.ok(e instanceof PackError);
      assert.match(
        e.message,
        /left-pad-nowhere \(in "dependencies"\) is not installed: run `npm install` in /,
      );
      return true;
    });
    const byHand = tarGz([
      { name: "index.js", data: "require('left-pad-nowhere'); exports.handler = async () => 1;\n" },
    ]);
    const refused = await agent.admin("PUT", "/v1/functions/no-deps", byHand);
    assert.equal(refused.status, 422);
    assert.match(
      String((refused.json.error as { message: string }).message),
      /index\.js needs the package left-pad-nowhere .*run `npm install left-pad-nowhere` in the function's folder/,
    );
  });

  it("refuses a bundle over the size limit with the sizes, before anything is stored", async () => {
    const { randomBytes } = await import("node:crypto");
    const dir = await mk({
      "index.js": "exports.handler = async () => 1;\n",
      "blob.bin": randomBytes(400 * 1024),
    });
    const { code, errors } = await runCli(agent, ["deploy", dir, "--name", "too-big"]);
    assert.equal(code, 1);
    assert.match(
      errors.join("\n"),
      /failed \(413\): .*262144 bytes.*; heaviest parts: blob\.bin 0\.4 MiB, .*\(leave out what the function does not need with a \.faasignore\)/,
    );
    const refused = await agent.admin("PUT", "/v1/functions/too-big", await packFunction(dir));
    assert.equal(refused.status, 413);
    assert.match(String((refused.json.error as { message: string }).message), /262144/);
    assert.equal((await agent.admin("GET", "/v1/functions/too-big")).status, 404);
  });

  describe("native addons", () => {
    let include: string;
    before(async function () {
      if (!agent) this.skip();
      const gcc = await execa("gcc", ["--version"], { reject: false });
      if (gcc.exitCode !== 0) {
        console.log("      skipped: gcc is not installed (apt-get install -y gcc)");
        this.skip();
      }
      const { pinnedNodeOfMajor } = await import("../../guest-images/node/pinned-node.ts");
      const node = await pinnedNodeOfMajor(24, { npm: "false" });
      include = path.join(path.dirname(path.dirname(node.binary)), "include", "node");
      if (!existsSync(path.join(include, "node_api.h"))) {
        console.log(`      skipped: the pinned Node has no headers at ${include}`);
        this.skip();
      }
    });

    async function addon(source: string, libs: string[]): Promise<Buffer> {
      const dir = await mk({ "addon.c": source });
      await execa("gcc", [
        "-shared",
        "-fPIC",
        "-O1",
        "-I",
        include,
        "-o",
        path.join(dir, "addon.node"),
        path.join(dir, "addon.c"),
        ...libs,
      ]);
      const { readFile } = await import("node:fs/promises");
      return readFile(path.join(dir, "addon.node"));
    }

    const libPath = (soname: string) =>
      ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"]
        .map((d) => path.join(d, soname))
        .find((p) => existsSync(p));

    it("loads a Node-API addon that links zlib: the base carries the library", async function () {
      const libz = libPath("libz.so.1");
      if (!libz) this.skip();
      const dir = await mk({
        "package.json": JSON.stringify({ main: "index.js" }),
        "index.js":
          "const z = require('./build/Release/zv.node'); exports.handler = async () => ({ statusCode: 200, body: z.zlibVersion() });\n",
        "build/Release/zv.node": await addon(NAPI_ZLIB_ADDON, [libz!]),
      });
      const { code, printed } = await runCli(agent, ["deploy", dir, "--name", "addon-zlib"]);
      assert.equal(code, 0, printed.join("\n"));
      const res = await agent.call("addon-zlib", undefined, { method: "GET" });
      assert.equal(res.status, 200, res.text);
      // The symbol may resolve to node's own zlib: what matters is that the addon and libz.so.1 loaded.
      assert.match(res.text, /^1\.\d+/);
    });

    it("refuses at deploy an addon built for another Node's NODE_MODULE_VERSION, naming the file and the base's", async () => {
      const dir = await mk({
        "index.js": "exports.handler = async () => 1;\n",
        "lib/old/build/Release/old.node": await addon(NODE20_ADDON, []),
      });
      const refused = await agent.admin("PUT", "/v1/functions/addon-old", await packFunction(dir));
      assert.equal(refused.status, 400);
      const base = await testBase();
      assert.match(
        String((refused.json.error as { message: string }).message),
        new RegExp(
          `lib/old/build/Release/old\\.node is built for NODE_MODULE_VERSION 115; this base runs Node ${base.nativeAddons!.nodeVersion.replaceAll(".", "\\.")} \\(NODE_MODULE_VERSION ${base.nativeAddons!.nodeModuleVersion}\\)`,
        ),
      );
    });

    it("refuses at deploy an addon linking a library the base lacks, listing the ones it has", async function () {
      const libelf = libPath("libelf.so.1");
      if (!libelf) this.skip();
      const dir = await mk({
        "index.js": "exports.handler = async () => 1;\n",
        "elf.node": await addon(LIBELF_ADDON, [libelf!]),
      });
      const refused = await agent.admin("PUT", "/v1/functions/addon-elf", await packFunction(dir));
      assert.equal(refused.status, 400);
      assert.match(
        String((refused.json.error as { message: string }).message),
        /elf\.node links libelf\.so\.1, which this base does not carry; the base has: .*libz\.so\.1/,
      );
    });
  });
});
