/**
 * The process base baked through the pipeline (manifest, base version) is what a real agent starts
 * from: verified, handed to the agent, and serving the seed's hello-world.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { processBaseForAgent } from "../../guest-images/bake/process.ts";
import { verifyBaseImage } from "../../guest-images/bake/verify.ts";
import { type RunningAgent, startAgent } from "../../host-agent/agent.ts";
import { packFunction } from "../../host-agent/cli/pack.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { createLogger } from "../../host-agent/log.ts";
import { requireJailHost } from "../helpers/host.ts";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../examples");

describe("process base from the bake pipeline", function () {
  this.timeout(120_000);
  let work: string;
  let agent: RunningAgent | undefined;

  before(async function () {
    requireJailHost(this);
    work = await mkdtemp(path.join(tmpdir(), "process-base-"));
    // Jailed uids must traverse down to the base's root (mkdtemp makes 0700), as under the agent's 0711 state dir.
    await chmod(work, 0o711);
  });
  after(async () => {
    await agent?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("is verified and started by the agent, which serves hello-world under that base version", async () => {
    const base = await processBaseForAgent(path.join(work, "bases"));
    assert.equal(base.driver, "process");
    assert.equal(base.version, path.basename(base.dir));
    await verifyBaseImage(base.dir);

    const config = loadAgentConfig({
      PORT: "0",
      ADMIN_PORT: "0",
      FAAS_STATE_DIR: path.join(work, "state"),
      FAAS_POOL_GENERIC: "1",
      FAAS_LOG_LEVEL: "warn",
    });
    const quiet = new Writable({ write: (_chunk, _enc, cb) => cb() });
    agent = await startAgent(config, { base, log: createLogger("warn", quiet) });
    assert.equal(agent.base.version, base.version);

    const deployed = await request(`${agent.adminUrl}/v1/functions/hello-world`, {
      method: "PUT",
      headers: { authorization: `Bearer ${agent.adminToken}`, "content-type": "application/gzip" },
      body: await packFunction(path.join(EXAMPLES, "hello-world")),
    });
    assert.equal(deployed.statusCode, 201, await deployed.body.text());

    const res = await request(`${agent.dataUrl}/hello-world`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method: "HelloWorldService.helloWorld", params: [], id: 1 }),
    });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(await res.body.json(), { jsonrpc: "2.0", result: "Hello world!", error: null, id: 1 });
    assert.match(String(res.headers["x-faas-base-version"]), new RegExp(`^${base.version}; runtime=`));
  });
});
