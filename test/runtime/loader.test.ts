import assert from "node:assert/strict";
import { LoadError, resolveEntry } from "../../guest-images/runtime/loader.ts";

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
