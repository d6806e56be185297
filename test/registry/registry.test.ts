import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { forceRemove } from "../../host-agent/registry/bundle.ts";
import { LocalRegistryBackend } from "../../host-agent/registry/local-backend.ts";
import { checkFunctionName, Registry, RegistryError } from "../../host-agent/registry/registry.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { helloBundle, tarGz } from "../helpers/tar-builder.ts";

const LIMITS = { maxBundleBytes: 1 << 20, maxUnpackedBytes: 1 << 20, maxFiles: 100 };

describe("function registry", () => {
  let state: string;
  const open = () =>
    new Registry(new LocalRegistryBackend(state), path.join(state, "code"), LIMITS, new FakeClock());

  beforeEach(async () => {
    state = await mkdtemp(path.join(tmpdir(), "faas-reg-"));
  });
  afterEach(async () => {
    await forceRemove(state);
  });

  it("accepts the documented names and refuses the rest", () => {
    for (const ok of ["a", "hello-world", `a${"b".repeat(62)}`]) checkFunctionName(ok);
    for (const bad of ["", "A", "-a", "1a", "a.b", "a/b", `a${"b".repeat(63)}`, "healthz"]) {
      assert.throws(() => checkFunctionName(bad), RegistryError, bad);
    }
  });

  it("persists a committed deploy: a new registry on the same state dir serves it", async () => {
    const reg = open();
    await reg.init();
    const prepared = await reg.prepare("hello", helloBundle());
    assert.equal(reg.get("hello"), undefined, "not visible before commit");
    const record = await reg.commit(prepared);
    assert.equal(record.revision, 1);
    assert.equal(record.entry, "index.js");
    const again = open();
    await again.init();
    assert.deepEqual(again.get("hello"), record);
    const files = await readdir(path.join(state, "registry"));
    assert.deepEqual(files, ["hello.json"], "no temporary files left");
    assert.deepEqual(JSON.parse(await readFile(path.join(state, "registry", "hello.json"), "utf8")), record);
  });

  it("rebuilds unpacked code from the stored bundle when it is missing", async () => {
    const reg = open();
    await reg.init();
    const record = await reg.commit(await reg.prepare("hello", helloBundle()));
    await forceRemove(path.join(state, "code"));
    const again = open();
    await again.init();
    assert.match(
      await readFile(path.join(again.codePath(record.codeHash), "index.js"), "utf8"),
      /HelloWorldService/,
    );
  });

  it("counts revisions per name and keeps the previous record when a prepare fails", async () => {
    const reg = open();
    await reg.init();
    await reg.commit(await reg.prepare("f", helloBundle()));
    const r2 = await reg.commit(
      await reg.prepare("f", tarGz([{ name: "index.js", data: "exports.handler = () => 1" }])),
    );
    assert.equal(r2.revision, 2);
    await assert.rejects(reg.prepare("f", tarGz([{ name: "x.txt", data: "no entry" }])), /no entry module/);
    assert.deepEqual(reg.get("f"), r2);
  });

  it("runs work on one name one at a time, in arrival order", async () => {
    const reg = open();
    const order: string[] = [];
    const slow = reg.withNameLock("f", async () => {
      order.push("a-start");
      await new Promise((r) => setTimeout(r, 30));
      order.push("a-end");
    });
    const fast = reg.withNameLock("f", async () => {
      order.push("b");
    });
    const other = reg.withNameLock("g", async () => {
      order.push("g");
    });
    await Promise.all([slow, fast, other]);
    assert.deepEqual(order, ["a-start", "g", "a-end", "b"]);
  });

  it("removes a record; unknown names are 404", async () => {
    const reg = open();
    await reg.init();
    await reg.commit(await reg.prepare("f", helloBundle()));
    await reg.remove("f");
    assert.equal(reg.get("f"), undefined);
    await assert.rejects(reg.remove("f"), (e: unknown) => e instanceof RegistryError && e.status === 404);
    const again = open();
    await again.init();
    assert.equal(again.size, 0);
  });
});
