/**
 * Reading native addons (ELF shared objects compiled here with gcc, skipped without it) and the rule
 * that says whether a base can load one.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import {
  type AddonFacts,
  addonProblem,
  type NativeAddonAbi,
  readAddon,
} from "../../contracts/native-addons.ts";

const ABI: NativeAddonAbi = {
  nodeVersion: "24.22.3",
  nodeModuleVersion: 137,
  machine: 62,
  glibcVersion: "2.36",
  libraries: ["libc.so.6", "libm.so.6", "libstdc++.so.6", "libz.so.1"],
};

const facts = (over: Partial<AddonFacts>): AddonFacts => ({
  machine: 62,
  needed: ["libc.so.6"],
  napi: true,
  nodeModuleVersion: null,
  glibcNeeded: "2.17",
  glibcDefined: null,
  ...over,
});

describe("native addons against a base", () => {
  let dir: string;
  let gcc = false;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "faas-addon-"));
    gcc = (await execa("gcc", ["--version"], { reject: false })).exitCode === 0;
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function compile(name: string, source: string): Promise<Buffer> {
    await writeFile(path.join(dir, `${name}.c`), source);
    await execa("gcc", [
      "-shared",
      "-fPIC",
      "-o",
      path.join(dir, `${name}.node`),
      path.join(dir, `${name}.c`),
      "-lm",
    ]);
    return readFile(path.join(dir, `${name}.node`));
  }

  it("reads the Node ABI an addon was built for: Node-API, context-aware, and NODE_MODULE's static struct", async function () {
    if (!gcc) {
      console.log("      skipped: gcc is not installed (apt-get install -y gcc)");
      this.skip();
    }
    const napi = readAddon(
      await compile(
        "napi",
        '#include <stdio.h>\nvoid *napi_register_module_v1(void *e, void *x) { puts("loaded"); return x; }\n',
      ),
    );
    assert.equal(napi.napi, true);
    assert.equal(napi.machine, process.arch === "arm64" ? 183 : 62);
    assert.ok(napi.needed.includes("libc.so.6"), napi.needed.join());
    assert.match(napi.glibcNeeded ?? "2.2.5", /^2\.\d+/);
    const aware = readAddon(
      await compile("aware", "void node_register_module_v127(void *e, void *m, void *c) {}\n"),
    );
    assert.deepEqual([aware.napi, aware.nodeModuleVersion], [false, 127]);
    // What NODE_MODULE(...) expands to in C: the version is the struct's first field.
    const legacy = readAddon(
      await compile(
        "legacy",
        "struct m { int v; unsigned f; void *p; };\nstatic struct m _module __attribute__((used)) = { 115, 0, 0 };\n",
      ),
    );
    assert.deepEqual([legacy.napi, legacy.nodeModuleVersion], [false, 115]);
    const libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"];
    for (const file of libc) {
      const bytes = await readFile(file).catch(() => undefined);
      if (bytes) assert.match(readAddon(bytes).glibcDefined ?? "", /^2\.\d+$/);
    }
  });

  it("refuses what is not a 64-bit little-endian ELF file", () => {
    assert.throws(() => readAddon(Buffer.from("#!/bin/sh\n".padEnd(80))), /not an ELF file/);
    const elf32 = Buffer.alloc(80);
    elf32.writeUInt32BE(0x7f454c46, 0);
    elf32[4] = 1;
    elf32[5] = 1;
    assert.throws(() => readAddon(elf32), /not a 64-bit little-endian ELF/);
  });

  it("names what a base cannot load: machine, musl, NODE_MODULE_VERSION, libraries, glibc", () => {
    assert.equal(addonProblem("a.node", facts({}), ABI), null);
    assert.equal(addonProblem("a.node", facts({ napi: false, nodeModuleVersion: 137 }), ABI), null);
    assert.match(
      addonProblem("a.node", facts({ machine: 183 }), ABI)!,
      /a\.node is built for aarch64; this base runs x86_64/,
    );
    assert.match(
      addonProblem("a.node", facts({ needed: ["libc.musl-x86_64.so.1"] }), ABI)!,
      /built for musl libc .*this base has glibc 2\.36/,
    );
    assert.match(
      addonProblem("a.node", facts({ napi: false, nodeModuleVersion: 127 }), ABI)!,
      /NODE_MODULE_VERSION 127; this base runs Node 24\.22\.3 \(NODE_MODULE_VERSION 137\): rebuild it with Node 24/,
    );
    assert.match(
      addonProblem("a.node", facts({ needed: ["libc.so.6", "libvips.so.42"] }), ABI)!,
      /links libvips\.so\.42, which this base does not carry; the base has: libc\.so\.6, libm\.so\.6, libstdc\+\+\.so\.6, libz\.so\.1/,
    );
    assert.match(
      addonProblem("a.node", facts({ glibcNeeded: "2.38" }), ABI)!,
      /needs glibc 2\.38; this base has glibc 2\.36/,
    );
  });
});
