import assert from "node:assert/strict";
import { moduleFormat, parseHandlerName } from "../../contracts/function-entry.ts";
import { LoadError, pickExport, resolveEntry, resolveFunction } from "../../guest-images/runtime/loader.ts";

function fsOf(files: Record<string, string>) {
  return {
    exists: (p: string) => p in files,
    readFile: (p: string) => {
      const f = files[p];
      if (f === undefined) throw new Error("ENOENT");
      return f;
    },
  };
}

describe("entry module resolution", () => {
  it("takes package.json main, with or without extension", () => {
    assert.equal(
      resolveEntry("/c", fsOf({ "/c/package.json": '{"main":"./dist/app.js"}', "/c/dist/app.js": "" })),
      "dist/app.js",
    );
    assert.equal(
      resolveEntry("/c", fsOf({ "/c/package.json": '{"main":"lib/x"}', "/c/lib/x.mjs": "" })),
      "lib/x.mjs",
    );
  });

  it("falls back to index.js, then index.mjs", () => {
    assert.equal(resolveEntry("/c", fsOf({ "/c/index.js": "", "/c/index.mjs": "" })), "index.js");
    assert.equal(resolveEntry("/c", fsOf({ "/c/package.json": "{}", "/c/index.mjs": "" })), "index.mjs");
  });

  it("says what is missing when there is no entry", () => {
    assert.throws(() => resolveEntry("/c", fsOf({})), /no entry module/);
    assert.throws(
      () => resolveEntry("/c", fsOf({ "/c/package.json": '{"main":"gone.js"}' })),
      /not in the bundle/,
    );
  });

  it("refuses a main that leaves the bundle or bad package.json", () => {
    assert.throws(() => resolveEntry("/c", fsOf({ "/c/package.json": '{"main":"../x.js"}' })), LoadError);
    assert.throws(() => resolveEntry("/c", fsOf({ "/c/package.json": "{nope" })), /not valid JSON/);
  });
});

describe("Lambda handler names (package.json faas.handler)", () => {
  it("splits the last path segment at its first dot and finds the module as Lambda does", () => {
    assert.deepEqual(parseHandlerName("src/lambda.handler"), {
      module: "src/lambda",
      exportPath: ["handler"],
    });
    assert.deepEqual(parseHandlerName("./api/v1.2/app.routes.get"), {
      module: "api/v1.2/app",
      exportPath: ["routes", "get"],
    });
    const files = {
      "/c/package.json": '{"faas":{"handler":"src/lambda.main"},"main":"other.js"}',
      "/c/src/lambda.mjs": "",
      "/c/src/lambda.cjs": "",
      "/c/other.js": "",
    };
    assert.deepEqual(resolveFunction("/c", fsOf(files)), { file: "src/lambda.mjs", exportPath: ["main"] });
  });

  it("refuses a name that is not file.export, leaves the code, or names no module", () => {
    for (const bad of ["lambda", "src/lambda.", "../x.handler", "src/.handler", "a b.handler"]) {
      assert.throws(() => parseHandlerName(bad), /not a Lambda handler name: use <path to the module/, bad);
    }
    assert.throws(
      () => resolveFunction("/c", fsOf({ "/c/package.json": '{"faas":{"handler":"app.handler"}}' })),
      /handler app\.handler: no app\.js, app\.mjs or app\.cjs in the code/,
    );
  });

  it("tells ES modules from CommonJS by extension, else the nearest package.json type", () => {
    const files = {
      "/c/package.json": '{"type":"module"}',
      "/c/legacy/package.json": "{}",
    };
    assert.equal(moduleFormat("/c", "index.js", fsOf(files)), "module");
    assert.equal(moduleFormat("/c", "legacy/old.js", fsOf(files)), "commonjs");
    assert.equal(moduleFormat("/c", "legacy/new.mjs", fsOf(files)), "module");
    assert.equal(moduleFormat("/c", "x.cjs", fsOf(files)), "commonjs");
    assert.equal(moduleFormat("/c", "index.js", fsOf({})), "commonjs");
  });
});

describe("picking a handler's export", () => {
  it("follows a nested path, falls back to a default export's, and names what is exported otherwise", () => {
    const get = () => 1;
    assert.equal(pickExport({ routes: { get } }, "app.js", ["routes", "get"]), get);
    assert.equal(pickExport({ default: { handler: get } }, "app.js", ["handler"]), get);
    assert.throws(
      () => pickExport({ handler: get, other: 2 }, "app.js", ["nope"]),
      /app\.js has no function export nope .*it exports: handler, other/,
    );
  });
});
