import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmod, copyFile, mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { packBakeSources } from "../../components/bake-sources.ts";
import { firecrackerBaseVersion } from "../../guest-images/bake/firecracker-job.ts";
import { bakeImportGraph, bakeSourceFiles } from "../../guest-images/bake/sources.ts";

const REPO = join(import.meta.dirname, "..", "..");

async function copyOf(files: readonly string[], root: string): Promise<void> {
  for (const file of files) {
    await mkdir(dirname(join(root, file)), { recursive: true });
    await copyFile(join(REPO, file), join(root, file));
  }
}

describe("bake sources: what the stack ships to the builder and the base version hashes", function () {
  this.timeout(120_000);
  let scratch: string;
  let files: string[];

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "snapfaas-bake-sources-test-"));
    files = await bakeSourceFiles(REPO);
  });
  after(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it("holds the bake's whole import graph, the scripts its recipes run, hello-world and the npm files", async () => {
    const graph = await bakeImportGraph(REPO);
    for (const file of [
      "guest-images/bake/main.ts",
      "host-agent/sandbox/firecracker/acceptance.ts",
      "contracts/firecracker-driver-config.ts",
      "contracts/base-layout.ts",
      "guest-images/code-disk/cli.ts",
      "guest-images/runtime/server.ts",
    ]) {
      assert.ok(graph.includes(file), `${file} is in the import graph`);
    }
    for (const file of [
      ...graph,
      "examples/hello-world/index.ts",
      "guest-images/linux/build-rootfs.sh",
      "guest-images/linux/kernel.config",
      "guest-images/bake/fetch-firecracker.sh",
      "package.json",
      "package-lock.json",
      "tsconfig.json",
    ]) {
      assert.ok(files.includes(file), `${file} is shipped`);
    }
    assert.ok(!files.some((f) => f.includes("node_modules/") || f.endsWith(".md") || f.startsWith("test/")));
  });

  it("packs them into the same bytes whatever the checkout's modes and times", async () => {
    const a = join(scratch, "a");
    const b = join(scratch, "b");
    await copyOf(files, a);
    await copyOf(files, b);
    await chmod(join(b, "package.json"), 0o664);
    await utimes(join(b, "tsconfig.json"), new Date(2020, 1, 1), new Date(2020, 1, 1));
    const first = await packBakeSources(a, files, join(scratch, "out-a"));
    const second = await packBakeSources(b, files, join(scratch, "out-b"));
    assert.equal(first.sha256, second.sha256);
    const listing = execFileSync("tar", ["-tzvf", first.file], { encoding: "utf8" }).trim().split("\n");
    assert.equal(listing.length, files.length);
    const script = listing.find((l) => l.endsWith(" guest-images/bake/fetch-firecracker.sh"));
    assert.match(
      script ?? "",
      /^-rwxr-xr-x 0\/0 .* 1970-01-01 /,
      "executables stay executable, owner 0, mtime 0",
    );
    await assert.rejects(
      packBakeSources(a, [...files, "guest-images/bake/nope.sh"], join(scratch, "out-c")),
      /bake source guest-images\/bake\/nope\.sh is missing in /,
    );
  });

  it("gives the base version every input that shapes the snapshot, and none that does not", async () => {
    const repo = join(scratch, "repo");
    await copyOf(files, repo);
    const options = {
      guest: "linux" as const,
      repoDir: repo,
      machine: { vcpus: 1, memMiB: 256 },
      hostAmi: "ami-0abc1234def567890",
    };
    const base = await firecrackerBaseVersion(options);
    assert.match(base, /^[0-9a-f]{64}$/);
    // Where the checkout is does not matter: the builder's folder is another one.
    assert.equal(await firecrackerBaseVersion({ ...options, repoDir: REPO }), base);
    assert.notEqual(await firecrackerBaseVersion({ ...options, hostAmi: "ami-0fff1234def567890" }), base);
    assert.notEqual(await firecrackerBaseVersion({ ...options, machine: { vcpus: 2, memMiB: 256 } }), base);
    assert.notEqual(await firecrackerBaseVersion({ ...options, machine: { vcpus: 1, memMiB: 512 } }), base);
    await writeFile(join(repo, "examples/hello-world/index.ts"), "export const changed = 1;\n", {
      flag: "a",
    });
    const helloChanged = await firecrackerBaseVersion(options);
    assert.notEqual(helloChanged, base, "hello-world shapes the base (the bake's acceptance serves it)");
    await writeFile(join(repo, "host-agent/sandbox/firecracker/request-bodies.ts"), "// changed\n", {
      flag: "a",
    });
    assert.notEqual(
      await firecrackerBaseVersion(options),
      helloChanged,
      "the firecracker driver shapes it too",
    );
    await writeFile(join(repo, "package-lock.json"), "\n", { flag: "a" });
    assert.notEqual(
      await firecrackerBaseVersion(options),
      helloChanged,
      "the lockfile the builder installs from is shipped, so it is hashed: the tarball changes only with the version",
    );
    await copyFile(join(REPO, "package-lock.json"), join(repo, "package-lock.json"));
    await writeFile(join(repo, "guest-images/linux/README.md"), "prose\n");
    await rm(join(repo, "host-agent/sandbox/firecracker/request-bodies.ts"));
    await copyFile(
      join(REPO, "host-agent/sandbox/firecracker/request-bodies.ts"),
      join(repo, "host-agent/sandbox/firecracker/request-bodies.ts"),
    );
    assert.equal(await firecrackerBaseVersion(options), helloChanged, "docs do not");
  });
});
