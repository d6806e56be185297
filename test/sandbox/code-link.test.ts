import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { lstatSync, readlinkSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { linkCodeTree } from "../../host-agent/sandbox/process/code-link.ts";

async function listTree(root: string, at = ""): Promise<string[]> {
  const out: string[] = [];
  for (const item of (await readdir(path.join(root, at), { withFileTypes: true })).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    const rel = path.join(at, item.name);
    out.push(`${rel}${item.isDirectory() ? "/" : item.isSymbolicLink() ? "@" : ""}`);
    if (item.isDirectory()) out.push(...(await listTree(root, rel)));
  }
  return out;
}

describe("code link tree (a function's code into an instance's folder)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "code-link-"));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it("makes the same tree of hard links, folders and symlinks, however many entries a folder has", async () => {
    const src = path.join(dir, "src");
    await mkdir(path.join(src, "node_modules", "a", "lib"), { recursive: true });
    // More entries in one folder than are linked at once.
    for (let i = 0; i < 100; i++) await writeFile(path.join(src, "node_modules", "a", `f${i}.js`), `${i}`);
    await writeFile(path.join(src, "node_modules", "a", "lib", "deep.js"), "deep");
    await writeFile(path.join(src, "index.js"), "main");
    await symlink("node_modules/a/lib/deep.js", path.join(src, "alias.js"));
    const dest = path.join(dir, "dest");
    await mkdir(dest);
    const count = await linkCodeTree(src, dest);
    const tree = await listTree(src);
    assert.deepEqual(await listTree(dest), tree);
    assert.equal(count, tree.length);
    for (const rel of ["index.js", "node_modules/a/f57.js", "node_modules/a/lib/deep.js"])
      assert.equal(
        lstatSync(path.join(dest, rel)).ino,
        lstatSync(path.join(src, rel)).ino,
        `${rel} is a link`,
      );
    assert.equal(readlinkSync(path.join(dest, "alias.js")), "node_modules/a/lib/deep.js");
  });

  it("refuses what is not a file, folder or symlink", async () => {
    const src = path.join(dir, "src");
    await mkdir(src);
    execFileSync("mkfifo", [path.join(src, "pipe")]);
    const dest = path.join(dir, "dest");
    await mkdir(dest);
    await assert.rejects(linkCodeTree(src, dest), /pipe: \d+ is not a file, folder or symlink/);
  });
});
