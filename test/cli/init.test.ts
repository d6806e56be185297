/**
 * `faas init`: the function it writes typechecks as its own project, deploys with `faas deploy` into a
 * running agent and answers, for both templates; a folder with anything in it is refused untouched.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FILES = ["README.md", "index.ts", "package.json", "tsconfig.json"];

describe("faas init", function () {
  this.timeout(120_000);
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "faas-init-"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("writes a function whose project typechecks on its own (tsc with its tsconfig)", async () => {
    for (const template of ["class", "handler"]) {
      const dir = path.join(work, `typed-${template}`);
      const res = await runCli(undefined, ["init", dir, "--template", template, "--json"]);
      assert.equal(res.code, 0, res.errors.join("\n"));
      assert.deepEqual(JSON.parse(res.printed.join("\n")), {
        dir,
        name: `typed-${template}`,
        template,
        files: ["index.ts", "package.json", "tsconfig.json", "README.md"],
      });
      assert.deepEqual((await readdir(dir)).sort(), FILES);
      const readme = await readFile(path.join(dir, "README.md"), "utf8");
      assert.equal(readme.trimEnd().split("\n").length, 3, readme);
      assert.match(readme, new RegExp(`npx faas deploy <this folder> --name typed-${template}`));
      const pkg = JSON.parse(await readFile(path.join(dir, "package.json"), "utf8"));
      assert.equal(pkg.name, `typed-${template}`);
      // The project's own devDependencies, borrowed from this checkout for the check, then removed.
      await symlink(path.join(REPO, "node_modules"), path.join(dir, "node_modules"));
      try {
        const tsc = await execa(
          process.execPath,
          [path.join(REPO, "node_modules/typescript/bin/tsc"), "-p", dir],
          {
            reject: false,
          },
        );
        assert.equal(tsc.exitCode, 0, `${template}: ${tsc.stdout}${tsc.stderr}`);
      } finally {
        await unlink(path.join(dir, "node_modules"));
      }
    }
  });

  it("refuses a folder that is not empty, changing nothing, and a name the agent would refuse", async () => {
    const dir = path.join(work, "taken");
    await mkdir(dir);
    await writeFile(path.join(dir, "notes.txt"), "mine");
    const res = await runCli(undefined, ["init", dir]);
    assert.equal(res.code, 1);
    assert.deepEqual(res.errors, [
      `faas: ${dir} is not empty (1 entries): faas init writes into a new or empty folder only`,
    ]);
    assert.deepEqual(await readdir(dir), ["notes.txt"]);

    const badName = await runCli(undefined, ["init", path.join(work, "9lives")]);
    assert.equal(badName.code, 1);
    assert.match(badName.errors[0]!, /^faas: "9lives" is not a function name: .*give one with --name$/);
    const named = await runCli(undefined, ["init", path.join(work, "9lives"), "--name", "nine-lives"]);
    assert.equal(named.code, 0, named.errors.join("\n"));
    assert.equal(
      named.printed.at(-1),
      `next: faas deploy ${path.relative(process.cwd(), path.join(work, "9lives"))} --name nine-lives`,
    );
  });

  describe("deployed into a running agent", () => {
    let agent: TestAgent;
    before(async function () {
      requireJailHost(this);
      agent = await startTestAgent();
    });
    after(async () => {
      await agent?.close();
    });

    it("the class template answers over JSON-RPC, and its console line is in faas logs", async () => {
      const dir = path.join(work, "greeter");
      assert.equal((await runCli(undefined, ["init", dir])).code, 0);
      const deployed = await runCli(agent, ["deploy", dir]);
      assert.equal(deployed.code, 0, deployed.errors.join("\n"));
      assert.match(deployed.printed[0]!, /^deployed greeter \(revision 1, /);
      const res = await agent.call("greeter", {
        jsonrpc: "2.0",
        method: "Greeter.hello",
        params: ["Ada"],
        id: 7,
      });
      assert.deepEqual(res.json(), { jsonrpc: "2.0", result: "Hello, Ada!", error: null, id: 7 });
      const invoked = await runCli(agent, ["invoke", "greeter", "Greeter.stats"]);
      assert.deepEqual(JSON.parse(invoked.printed.join("\n")), { calls: 1 });
      const logs = await runCli(agent, ["logs", "greeter"]);
      assert.match(logs.printed.join("\n"), /hello called for Ada/);
    });

    it("the handler template answers HTTP calls under its prefix", async () => {
      const dir = path.join(work, "echo");
      assert.equal((await runCli(undefined, ["init", "--template", "handler", dir])).code, 0);
      const deployed = await runCli(agent, ["deploy", dir, "--json"]);
      assert.equal(deployed.code, 0, deployed.errors.join("\n"));
      assert.equal(JSON.parse(deployed.printed.join("\n")).function.name, "echo");
      const res = await agent.call("echo", "hi", { path: "/echo/items/7?x=1" });
      assert.equal(res.status, 200, res.text);
      const body = res.json();
      assert.deepEqual(
        { method: body.method, path: body.path, query: body.query, body: body.body },
        { method: "POST", path: "/items/7", query: "x=1", body: "hi" },
      );
      assert.match(body.requestId, /\S/);
    });
  });
});
