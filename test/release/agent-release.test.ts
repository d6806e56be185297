/**
 * The agent's release plumbing end to end: a release file it follows, and a restart that comes back on
 * the base it had rolled to, with the previous release still there to roll back to.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ProcessBase } from "../../contracts/process-base.ts";
import type { RolloutStatus } from "../../host-agent/release/rollout.ts";
import {
  startTestAgent,
  type TestAgent,
  testBase,
  testBaseVariant,
  untilNoStarts,
} from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";
import { helloBundle } from "../helpers/tar-builder.ts";

const HELLO = { jsonrpc: "2.0", method: "HelloWorldService.helloWorld", params: [], id: 1 };

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("agent release file and release records (process sandbox)", function () {
  this.timeout(120_000);
  let work: string;
  let v1: ProcessBase;
  let v3: ProcessBase;
  let agent: TestAgent | undefined;

  before(async function () {
    requireJailHost(this);
    work = await mkdtemp(path.join(tmpdir(), "faas-release-file-"));
    await chmod(work, 0o755);
    v1 = await testBase();
    v3 = await testBaseVariant("v3");
  });

  after(async () => {
    if (agent) await untilNoStarts(agent).catch(() => undefined);
    await agent?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("follows a release file, and restarts on the base it rolled to", async () => {
    const stateDir = path.join(work, "state");
    const releaseFile = path.join(work, "release.json");
    const env = { FAAS_RELEASE_FILE: releaseFile, FAAS_RELEASE_POLL_MS: "200" };
    agent = await startTestAgent(env, { stateDir });
    const put = await agent.admin("PUT", "/v1/functions/hello", helloBundle());
    assert.equal(put.status, 201);

    // A relative baseDir is read from the release file's folder.
    await writeFile(
      releaseFile,
      JSON.stringify({ baseVersion: v3.version, baseDir: path.relative(work, v3.dir) }),
    );
    const rolled = await until("the roll to the file's release", async () => {
      const s = (await agent!.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
      return s.lastRoll?.to === v3.version ? s : undefined;
    });
    assert.equal(rolled.state, "completed", JSON.stringify(rolled));
    assert.equal(rolled.current.baseVersion, v3.version);
    assert.equal(rolled.current.baseDir, v3.dir);
    const res = await agent.call("hello", HELLO);
    assert.equal(res.status, 200);
    assert.match(String(res.headers["x-faas-base-version"]), new RegExp(`^${v3.version}; runtime=.*-v3$`));

    await untilNoStarts(agent);
    await agent.close(true);
    agent = undefined;
    // No base given: the agent reads its release records.
    agent = await startTestAgent({}, { stateDir, base: null });
    const status = (await agent.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
    assert.equal(status.state, "stable");
    assert.equal(status.current.baseVersion, v3.version);
    assert.equal(status.previous?.baseVersion, v1.version);
    const again = await agent.call("hello", HELLO);
    assert.equal(again.status, 200, "the function deployed before the restart and the roll still answers");
    assert.match(String(again.headers["x-faas-base-version"]), new RegExp(`^${v3.version};`));

    const back = await agent.admin("POST", "/v1/release/rollback?wait=1", Buffer.from("{}"), {
      "content-type": "application/json",
    });
    assert.equal(back.status, 200, JSON.stringify(back.json));
    assert.equal((back.json as unknown as RolloutStatus).current.baseVersion, v1.version);
    const third = await agent.call("hello", HELLO);
    assert.match(String(third.headers["x-faas-base-version"]), new RegExp(`^${v1.version};`));
  });

  it("faas release and faas rollback drive the same roll from the command line", async () => {
    assert.ok(agent, "the agent of the previous test");
    const release = await runCli(agent, ["release", v3.dir, "--canary", "100"]);
    assert.equal(release.code, 0);
    assert.match(
      release.printed.join("\n"),
      new RegExp(`state: completed\ncurrent: base ${v3.version} \\(runtime .*-v3\\)`),
    );
    const status = await runCli(agent, ["release"]);
    assert.equal(status.code, 0);
    assert.match(status.printed.join("\n"), new RegExp(`previous: base ${v1.version}`));
    const rollback = await runCli(agent, ["rollback"]);
    assert.equal(rollback.code, 0);
    assert.match(rollback.printed.join("\n"), new RegExp(`state: rolled-back\ncurrent: base ${v1.version}`));
  });
});
