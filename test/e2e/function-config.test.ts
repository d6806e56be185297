/**
 * Per-function configuration through the running agent, as a user sets it and as the function's code
 * reads it: environment and secrets set at deploy, listed by name only, changed without a re-upload
 * (new instances see the change, old ones are retired), memory and timeout per function within the
 * host's bounds, the AWS_LAMBDA_* variables and context fields a Lambda handler reads, and CORS origins.
 */
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { request } from "undici";
import { configPatchOf, deployConfigHeaders } from "../../host-agent/cli/admin-client.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const HANDLER = `
const crypto = require("node:crypto");
// Read at load time, as module-level configuration code does.
const greetingAtLoad = process.env.GREETING;
const boot = crypto.randomUUID();
exports.handler = async (event, context) => {
  const q = event.queryStringParameters || {};
  if (q.sleep) await new Promise((r) => setTimeout(r, Number(q.sleep)));
  if (q.hog) { const keep = []; for (let i = 0; i < Number(q.hog); i++) keep.push(Buffer.alloc(1024 * 1024, 1)); return { held: keep.length }; }
  const env = {};
  for (const k of Object.keys(process.env)) if (k.startsWith("AWS_") || k.startsWith("LAMBDA_") || k === "_HANDLER") env[k] = process.env[k];
  return {
    boot, greetingAtLoad, greeting: process.env.GREETING, secret: process.env.DB_PASSWORD, env,
    context: { functionName: context.functionName, functionVersion: context.functionVersion,
      memoryLimitInMB: context.memoryLimitInMB, awsRequestId: context.awsRequestId,
      invokedFunctionArn: context.invokedFunctionArn, logGroupName: context.logGroupName,
      remaining: context.getRemainingTimeInMillis() },
  };
};
`;

const CLASS = `class Api { ping() { return "pong"; } }\nmodule.exports = { Api };\n`;

const SECRET = "s3cr3t-value-never-shown";

describe("per-function configuration (process sandbox)", function () {
  this.timeout(90_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({ FAAS_CALL_TIMEOUT_MS: "8000", FAAS_INSTANCE_MEMORY_MIB: "384" });
  });

  after(async () => {
    await agent?.close();
  });

  const get = async (name: string, query = "") => {
    const res = await request(`${agent.dataUrl}/${name}${query}`);
    const text = await res.body.text();
    return { status: res.statusCode, text, json: () => JSON.parse(text) };
  };

  it("sets environment and secrets at deploy (faas deploy --env/--secret), with the Lambda variables and context", async () => {
    const patch = configPatchOf({
      env: ["GREETING=hi"],
      secrets: [`DB_PASSWORD=${SECRET}`],
      memory: "192",
      timeout: "5",
    });
    const deployed = await agent.admin(
      "PUT",
      "/v1/functions/envy",
      tarGz([{ name: "index.js", data: HANDLER }]),
      deployConfigHeaders(patch),
    );
    assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
    const res = await get("envy");
    assert.equal(res.status, 200, res.text);
    const body = res.json();
    assert.equal(body.greetingAtLoad, "hi", "the module saw its environment when it loaded");
    assert.equal(body.secret, SECRET, "the function reads its secret from process.env");
    assert.equal(body.env.AWS_LAMBDA_FUNCTION_NAME, "envy");
    assert.equal(body.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE, "192");
    assert.equal(body.env.AWS_LAMBDA_FUNCTION_VERSION, "1");
    assert.equal(body.env.AWS_LAMBDA_LOG_GROUP_NAME, "/aws/lambda/envy");
    assert.match(body.env.AWS_LAMBDA_LOG_STREAM_NAME, /^\d{4}\/\d{2}\/\d{2}\/\[1\]/);
    assert.match(body.env.AWS_EXECUTION_ENV, /^AWS_Lambda_nodejs\d+\.x$/);
    assert.equal(body.env._HANDLER, "index.handler");
    assert.equal(body.context.functionName, "envy");
    assert.equal(body.context.functionVersion, "1");
    assert.equal(body.context.memoryLimitInMB, "192");
    assert.equal(body.context.logGroupName, "/aws/lambda/envy");
    assert.match(body.context.invokedFunctionArn, /^arn:aws:lambda:[a-z0-9-]+:000000000000:function:envy$/);
    assert.ok(
      body.context.remaining > 0 && body.context.remaining <= 5000,
      `remaining ${body.context.remaining}`,
    );
  });

  it("lists variables and secrets by name only: never a value in the API, the record, or the logs", async () => {
    for (const route of ["/v1/functions/envy", "/v1/functions", "/v1/functions/envy/config"]) {
      const res = await agent.admin("GET", route);
      assert.equal(res.status, 200);
      const text = JSON.stringify(res.json);
      assert.ok(!text.includes(SECRET) && !text.includes('"hi"'), `${route} shows no value: ${text}`);
    }
    const shown = (await agent.admin("GET", "/v1/functions/envy")).json.function as { config: unknown };
    assert.deepEqual(shown.config, {
      env: ["GREETING"],
      secrets: ["DB_PASSWORD"],
      memoryMiB: 192,
      timeoutMs: 5000,
      cors: null,
      egress: false,
    });
    const record = await readFile(path.join(agent.stateDir, "registry", "envy.json"), "utf8");
    assert.ok(!record.includes(SECRET), "the record holds no secret");
    const secretsFile = path.join(agent.stateDir, "secrets", "envy.json");
    assert.ok((await readFile(secretsFile, "utf8")).includes(SECRET), "the secret store holds it");
    assert.equal((await stat(secretsFile)).mode & 0o777, 0o600);
    assert.ok(!JSON.stringify(agent.logs).includes(SECRET), "no log line carries the secret");
  });

  it("changes the environment without a re-upload: the next call runs on a new instance with it", async () => {
    const before = (await get("envy")).json();
    const changed = await agent.admin(
      "PATCH",
      "/v1/functions/envy/config",
      Buffer.from(JSON.stringify({ env: { GREETING: "hello" }, secrets: { DB_PASSWORD: "rotated" } })),
      { "content-type": "application/json" },
    );
    assert.equal(changed.status, 200, JSON.stringify(changed.json));
    const fn = changed.json.function as { revision: number; codeHash: string };
    assert.equal(fn.revision, 2);
    const after = (await get("envy")).json();
    assert.notEqual(after.boot, before.boot, "a new instance serves the new configuration");
    assert.equal(after.greetingAtLoad, "hello");
    assert.equal(after.secret, "rotated");
    assert.equal(after.env.AWS_LAMBDA_FUNCTION_VERSION, "2");
    // The instance of the old configuration was retired, not kept warm beside the new one.
    const pool = (await agent.admin("GET", "/v1/pool")).json.functions as Record<string, { idle: number }>;
    assert.equal(pool.envy?.idle, 1);
    const rec = (await agent.admin("GET", "/v1/functions/envy")).json.function as { codeHash: string };
    assert.equal(rec.codeHash, fn.codeHash, "same code");
  });

  it("faas config changes and removes variables from the command line, and refuses a line with no change", async () => {
    const set = await runCli(agent, ["config", "envy", "--env", "GREETING=from-cli", "--json"]);
    assert.equal(set.code, 0, set.errors.join("\n"));
    const shown = JSON.parse(set.printed.join("\n")) as { function: { name: string; revision: number } };
    assert.equal(shown.function.name, "envy");
    assert.equal((await get("envy")).json().greeting, "from-cli");
    const unset = await runCli(agent, ["config", "envy", "--unset-env", "GREETING"]);
    assert.equal(unset.code, 0, unset.errors.join("\n"));
    assert.match(
      unset.printed.join("\n"),
      new RegExp(`configured envy \\(revision ${shown.function.revision + 1}\\)`),
    );
    assert.equal((await get("envy")).json().greeting, undefined);
    const none = await runCli(agent, ["config", "envy"]);
    assert.equal(none.code, 1);
    assert.match(none.errors.join("\n"), /nothing to change: give --env/);
    // Back as the later cases expect it.
    assert.equal((await runCli(agent, ["config", "envy", "--env", "GREETING=hello"])).code, 0);
  });

  it("applies the function's own timeout as the call's deadline", async () => {
    const set = await agent.admin(
      "PATCH",
      "/v1/functions/envy/config",
      Buffer.from(JSON.stringify({ timeoutMs: 1000 })),
      { "content-type": "application/json" },
    );
    assert.equal(set.status, 200, JSON.stringify(set.json));
    const slow = await get("envy", "?sleep=1500");
    assert.equal(slow.status, 504, slow.text);
    assert.match(slow.text, /deadline of 1000 ms/);
    assert.equal((await get("envy", "?sleep=10")).status, 200);
  });

  it("caps each instance at the function's memory, and the host's when the function asks for none", async () => {
    const small = await agent.admin(
      "PATCH",
      "/v1/functions/envy/config",
      Buffer.from(JSON.stringify({ memoryMiB: 128, timeoutMs: null })),
      { "content-type": "application/json" },
    );
    assert.equal(small.status, 200, JSON.stringify(small.json));
    const killed = await get("envy", "?hog=200");
    assert.equal(killed.status, 502, killed.text);
    assert.match(killed.text, /killed by the memory limit \(128 MiB\)/);
    const big = await agent.admin(
      "PATCH",
      "/v1/functions/envy/config",
      Buffer.from(JSON.stringify({ memoryMiB: null })),
      { "content-type": "application/json" },
    );
    assert.equal(big.status, 200, JSON.stringify(big.json));
    const held = await get("envy", "?hog=200");
    assert.equal(held.status, 200, held.text);
    assert.equal(held.json().held, 200);
  });

  it("refuses what it cannot use with a 400 naming the setting and what is allowed", async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ memoryMiB: 100_000 }, /memoryMiB must be a whole number of MiB from 128 to 384 on this host/],
      [{ timeoutMs: 60_000 }, /timeoutMs must be a whole number of ms from 1000 to 8000 on this host/],
      [{ env: { AWS_SECRET: "x" } }, /env\.AWS_SECRET starts with AWS_/],
      [{ env: { "1BAD": "x" } }, /env\.1BAD must be letters, digits and _/],
      [{ env: { BIG: "x".repeat(5000) } }, /env is \d+ bytes: names and values together may take 4096/],
      [{ secrets: { GREETING: "x" } }, /secrets\.GREETING is also an environment variable/],
      [{ cors: { allowOrigins: ["https://a.example/path"] } }, /cors\.allowOrigins entries must be/],
      [{ colour: "blue" }, /colour is not a setting/],
    ];
    for (const [body, message] of cases) {
      const res = await agent.admin("PATCH", "/v1/functions/envy/config", Buffer.from(JSON.stringify(body)), {
        "content-type": "application/json",
      });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match((res.json.error as { message: string }).message, message);
    }
    const header = await agent.admin(
      "PUT",
      "/v1/functions/other",
      tarGz([{ name: "index.js", data: HANDLER }]),
      {
        "x-faas-config": Buffer.from(JSON.stringify({ env: { FAAS_X: "1" } })).toString("base64"),
      },
    );
    assert.equal(header.status, 400);
    assert.match((header.json.error as { message: string }).message, /env\.FAAS_X starts with FAAS_/);
    assert.equal((await agent.admin("GET", "/v1/functions/other")).status, 404, "nothing was deployed");
    assert.equal((await agent.admin("GET", "/v1/functions/envy")).json.function !== undefined, true);
  });

  it("answers CORS for the origins a function allows, and only those", async () => {
    const deployed = await agent.admin(
      "PUT",
      "/v1/functions/api",
      tarGz([{ name: "index.js", data: CLASS }]),
      {
        "x-faas-config": Buffer.from(
          JSON.stringify({ cors: { allowOrigins: ["https://app.example.com"] } }),
        ).toString("base64"),
      },
    );
    assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
    const preflight = async (origin: string) => {
      const res = await request(`${agent.dataUrl}/api`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST" },
      });
      await res.body.text();
      return res;
    };
    const allowed = await preflight("https://app.example.com");
    assert.equal(allowed.statusCode, 204);
    assert.equal(allowed.headers["access-control-allow-origin"], "https://app.example.com");
    assert.equal(allowed.headers.vary, "origin");
    const other = await preflight("https://evil.example");
    assert.equal(other.headers["access-control-allow-origin"], undefined);
    const call = await agent.call(
      "api",
      { jsonrpc: "2.0", method: "Api.ping", params: [], id: 1 },
      { headers: { "content-type": "application/json", origin: "https://app.example.com" } },
    );
    assert.equal(call.json().result, "pong");
    assert.equal(call.headers["access-control-allow-origin"], "https://app.example.com");
  });

  it("puts the function's CORS on the agent's own answers too: a crashed call's 502 is readable by an allowed origin", async () => {
    const deployed = await agent.admin(
      "PUT",
      "/v1/functions/crashy",
      tarGz([
        { name: "index.js", data: `class Api { die() { process.exit(3); } }\nmodule.exports = { Api };\n` },
      ]),
      {
        "x-faas-config": Buffer.from(
          JSON.stringify({ cors: { allowOrigins: ["https://app.example.com"] } }),
        ).toString("base64"),
      },
    );
    assert.equal(deployed.status, 201, JSON.stringify(deployed.json));
    const die = (origin: string) =>
      agent.call(
        "crashy",
        { jsonrpc: "2.0", method: "Api.die", params: [], id: 1 },
        { headers: { "content-type": "application/json", origin } },
      );
    const allowed = await die("https://app.example.com");
    assert.equal(allowed.status, 502, allowed.text);
    assert.equal(allowed.headers["access-control-allow-origin"], "https://app.example.com");
    assert.equal(allowed.headers.vary, "origin");
    const other = await die("https://evil.example");
    assert.equal(other.status, 502, other.text);
    assert.equal(other.headers["access-control-allow-origin"], undefined);
  });
});
