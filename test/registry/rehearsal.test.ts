/**
 * Rehearsal of the documented AWS deploy flow, with both sides real: a function deployed the way the
 * Pulumi FaasFunction deploys it (its two S3 objects, computed by the same helper FaasFunction uses,
 * written to an s3rver) is served by an agent that was already running (process sandbox, S3 registry
 * backend on that s3rver) within its poll interval; a redeploy swaps the code while a call on the old
 * code finishes; a delete makes it 404. Only the IAM and the Pulumi engine are not in the loop.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { functionObjects } from "../../components/function-objects.ts";
import { DEFAULT_REGISTRY_PREFIX } from "../../contracts/registry-layout.ts";
import { startTestAgent, type TestAgent, untilNoStarts } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { startS3Server, type TestS3 } from "../helpers/s3-server.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const POLL_MS = 400;

function greeter(version: string): Buffer {
  return tarGz([
    { name: "package.json", data: JSON.stringify({ name: "greeter", main: "index.js" }) },
    {
      name: "index.js",
      data: `class Greeter {
  hello() { return "${version}"; }
  async slow() { await new Promise((r) => setTimeout(r, 1500)); return "${version} after a while"; }
}
module.exports = { Greeter };
`,
    },
  ]);
}

const call = (method: string) => ({ jsonrpc: "2.0", method: `Greeter.${method}`, params: [], id: 1 });

describe("a function deployed through FaasFunction's S3 layout reaches a running agent", function () {
  this.timeout(90_000);
  let s3: TestS3;
  let agent: TestAgent | undefined;
  let work: string;

  before(async function () {
    requireJailHost(this);
    s3 = await startS3Server();
    work = await mkdtemp(path.join(tmpdir(), "faas-rehearsal-"));
  });
  after(async () => {
    if (agent) {
      await untilNoStarts(agent);
      await agent.close();
    }
    await s3?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** What `pulumi up` of a FaasFunction uploads: the bundle, then the record. */
  async function pulumiUp(version: string, revision: number): Promise<{ codeHash: string }> {
    const archive = path.join(work, `greeter-${version}.tar.gz`);
    await writeFile(archive, greeter(version));
    const objects = await functionObjects(archive, {
      functionName: "greeter",
      prefix: DEFAULT_REGISTRY_PREFIX,
      revision,
    });
    await s3.put(objects.bundleKey, await readFile(archive));
    await s3.put(objects.recordKey, objects.recordBody);
    return { codeHash: objects.record.codeHash };
  }

  async function until(what: string, ok: () => Promise<boolean>, ms: number): Promise<number> {
    const t0 = Date.now();
    while (!(await ok())) {
      if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return Date.now() - t0;
  }

  it("serves it within the poll interval, swaps code on a redeploy without dropping a call, 404s after a delete", async () => {
    agent = await startTestAgent(
      {
        FAAS_REGISTRY: "s3",
        FAAS_REGISTRY_BUCKET: s3.bucket,
        FAAS_REGISTRY_PREFIX: DEFAULT_REGISTRY_PREFIX,
        FAAS_REGISTRY_POLL_MS: String(POLL_MS),
      },
      { s3Client: s3.client },
    );
    const a = agent;
    assert.equal((await a.call("greeter", call("hello"))).status, 404, "nothing deployed yet");

    const v1 = await pulumiUp("v1", 1);
    // Seen within one poll; the first call then specializes a generic instance.
    const seenMs = await until(
      "the agent to list greeter",
      async () => {
        const res = await a.admin("GET", "/v1/functions");
        return (res.json.functions as Array<{ name: string }>).some((f) => f.name === "greeter");
      },
      POLL_MS + 2000,
    );
    console.log(`      seen ${seenMs} ms after the record was written (poll every ${POLL_MS} ms)`);
    const first = await a.call("greeter", call("hello"));
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json().result, "v1");
    const listed = await a.admin("GET", "/v1/functions/greeter");
    assert.equal((listed.json.function as { codeHash: string }).codeHash, v1.codeHash);

    // A call on v1 is in flight while v2 is deployed: it finishes on v1, new calls get v2.
    const inFlight = a.call("greeter", call("slow"));
    await new Promise((r) => setTimeout(r, 200));
    const v2 = await pulumiUp("v2", 2);
    assert.notEqual(v2.codeHash, v1.codeHash);
    await until(
      "v2 to be served",
      async () => (await a.call("greeter", call("hello"))).json().result === "v2",
      POLL_MS + 10_000,
    );
    const slow = await inFlight;
    assert.equal(slow.status, 200, slow.text);
    assert.equal(slow.json().result, "v1 after a while");

    await s3.client.send(
      new DeleteObjectCommand({ Bucket: s3.bucket, Key: `${DEFAULT_REGISTRY_PREFIX}registry/greeter.json` }),
    );
    await until(
      "greeter to be gone",
      async () => (await a.call("greeter", call("hello"))).status === 404,
      POLL_MS + 2000,
    );
    const gone = await a.call("greeter", call("hello"));
    assert.equal(gone.json().error.code, "function_not_found");
  });

  it("serves the settings and secrets FaasFunction writes, and a rotated secret after the next up", async () => {
    const a = agent!;
    const archive = path.join(work, "configured.tar.gz");
    await writeFile(
      archive,
      tarGz([
        { name: "package.json", data: JSON.stringify({ name: "configured", main: "index.js" }) },
        {
          name: "index.js",
          data: "exports.handler = async () => ({ statusCode: 200, body: JSON.stringify({ stage: process.env.STAGE, password: process.env.DB_PASSWORD }) });\n",
        },
      ]),
    );
    const up = async (password: string) => {
      const objects = await functionObjects(archive, {
        functionName: "configured",
        prefix: DEFAULT_REGISTRY_PREFIX,
        revision: 1,
        config: { env: { STAGE: "prod" }, timeoutMs: 5000 },
        secrets: { DB_PASSWORD: password },
      });
      // FaasFunction's order: bundle, secrets, then the record that names them.
      await s3.put(objects.bundleKey, await readFile(archive));
      await s3.put(objects.secrets!.key, objects.secrets!.body);
      await s3.put(objects.recordKey, objects.recordBody);
    };
    const answer = async () => {
      const res = await a.call("configured", undefined, { method: "GET" });
      return res.status === 200 ? (res.json() as { stage: string; password: string }) : undefined;
    };
    await up("first-secret");
    await until(
      "configured to answer",
      async () => (await answer())?.password === "first-secret",
      POLL_MS + 10_000,
    );
    assert.deepEqual(await answer(), { stage: "prod", password: "first-secret" });
    const listed = await a.admin("GET", "/v1/functions/configured");
    const config = (listed.json.function as { config: Record<string, unknown> }).config;
    assert.deepEqual([config.env, config.secrets, config.timeoutMs], [["STAGE"], ["DB_PASSWORD"], 5000]);
    assert.ok(!JSON.stringify(listed.json).includes("first-secret"), "the API never shows a secret's value");
    await up("rotated-secret");
    await until(
      "the rotated secret",
      async () => (await answer())?.password === "rotated-secret",
      POLL_MS + 10_000,
    );
  });
});
