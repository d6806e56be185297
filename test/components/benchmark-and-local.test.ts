import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import { BenchmarkLambda, HELLO_WORLD_HANDLER } from "../../components/benchmark-lambda.ts";
import { LOCAL_STOP_SCRIPT, LocalAgent, localStartScript } from "../../components/local-agent.ts";
import {
  findRegistered,
  promiseOf,
  registeredTypesAndNames,
  settled,
  usePulumiMocks,
} from "../support/pulumi-mocks.ts";

/**
 * Node runtimes Lambda still lets you create functions on (AWS "Lambda runtimes" table, checked
 * 2026-12): nodejs20.x is deprecated since 2026-04-30 and creation is blocked after it.
 */
const CREATABLE_NODE_RUNTIMES = ["nodejs22.x", "nodejs24.x"];

describe("BenchmarkLambda", () => {
  usePulumiMocks();

  it("deploys the hello-world handler behind a public function URL", async () => {
    const lambda = new BenchmarkLambda("bench", { memoryMiB: 512 });
    assert.equal(await promiseOf(lambda.functionUrl), "https://bench-url.lambda-url.us-east-1.on.aws/");
    await settled(lambda);
    assert.deepEqual(registeredTypesAndNames(), [
      "aws:iam/role:Role bench-role",
      "aws:iam/rolePolicyAttachment:RolePolicyAttachment bench-logs",
      "aws:lambda/function:Function bench-function",
      "aws:lambda/functionUrl:FunctionUrl bench-url",
      "aws:lambda/permission:Permission bench-invoke",
      "aws:lambda/permission:Permission bench-url-invoke",
      "snapfaas:index:BenchmarkLambda bench",
    ]);
    const fn = findRegistered("aws:lambda/function:Function", "bench-function").inputs;
    assert.ok(CREATABLE_NODE_RUNTIMES.includes(fn.runtime), `${fn.runtime} is a runtime AWS still creates`);
    assert.deepEqual([fn.handler, fn.memorySize], ["index.handler", 512]);
    const code = fn.code as pulumi.asset.AssetArchive;
    const assets = (await code.assets) as Record<string, pulumi.asset.StringAsset>;
    assert.equal(await assets["index.mjs"]?.text, HELLO_WORLD_HANDLER);
    assert.equal(
      findRegistered("aws:lambda/functionUrl:FunctionUrl", "bench-url").inputs.authorizationType,
      "NONE",
    );
  });

  it("lets anyone call the URL: both grants a NONE-auth function URL needs", async () => {
    const lambda = new BenchmarkLambda("bench", {});
    await settled(lambda);
    const grant = (name: string) => {
      const inputs = findRegistered("aws:lambda/permission:Permission", name).inputs;
      const { function: fn, action, principal, functionUrlAuthType, invokedViaFunctionUrl } = inputs;
      return { fn, action, principal, functionUrlAuthType, invokedViaFunctionUrl };
    };
    const fnName = await promiseOf(lambda.functionArn);
    assert.match(fnName, /bench-function$/);
    assert.deepEqual(grant("bench-url-invoke"), {
      fn: fnName,
      action: "lambda:InvokeFunctionUrl",
      principal: "*",
      functionUrlAuthType: "NONE",
      invokedViaFunctionUrl: undefined,
    });
    assert.deepEqual(grant("bench-invoke"), {
      fn: fnName,
      action: "lambda:InvokeFunction",
      principal: "*",
      functionUrlAuthType: undefined,
      invokedViaFunctionUrl: true,
    });
  });

  it("answers like the seed's HelloWorldService", async () => {
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-lambda-"));
    try {
      const file = join(dir, "index.mjs");
      writeFileSync(file, HELLO_WORLD_HANDLER);
      const module = (await import(file)) as { handler: () => Promise<{ statusCode: number; body: string }> };
      const response = await module.handler();
      assert.equal(response.statusCode, 200);
      assert.deepEqual(JSON.parse(response.body), {
        jsonrpc: "2.0",
        result: "Hello world!",
        error: null,
        id: 1,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("LocalAgent", () => {
  usePulumiMocks();

  it("installs, then runs the agent with the process sandbox and stops it on delete", async () => {
    const agent = new LocalAgent("local", {
      repoDir: "/repo",
      port: 8090,
      settings: { pool: { minIdle: 1 } },
    });
    assert.equal(await promiseOf(agent.endpointUrl), "http://127.0.0.1:8090");
    await settled(agent);
    assert.deepEqual(registeredTypesAndNames(), [
      "command:local:Command local-install",
      "command:local:Command local-run",
      "snapfaas:index:LocalAgent local",
    ]);
    const install = findRegistered("command:local:Command", "local-install").inputs;
    assert.deepEqual([install.dir, install.create], ["/repo", "npm ci --no-audit --no-fund"]);
    const run = findRegistered("command:local:Command", "local-run").inputs;
    assert.equal(run.dir, "/repo");
    assert.equal(run.create, localStartScript(8090));
    assert.equal(run.delete, LOCAL_STOP_SCRIPT);
    assert.deepEqual(run.environment, { FAAS_POOL_GENERIC: "1" });
    assert.ok((run.create as string).includes("FAAS_DRIVER=process PORT=8090 setsid nohup npm start"));
    assert.ok((run.delete as string).includes('kill -TERM -- "-$(cat .faas/agent.pid)"'));
  });

  it("start and stop scripts are shellcheck-clean as sh", function () {
    if (spawnSync("shellcheck", ["--version"]).status !== 0) {
      console.log("    (skipped: shellcheck is not installed)");
      this.skip();
    }
    const dir = mkdtempSync(join(tmpdir(), "snapfaas-local-"));
    try {
      const start = join(dir, "start.sh");
      const stop = join(dir, "stop.sh");
      writeFileSync(start, `#!/bin/sh\n${localStartScript(8080)}\n`);
      writeFileSync(stop, `#!/bin/sh\n${LOCAL_STOP_SCRIPT}\n`);
      execFileSync("shellcheck", ["-s", "sh", start, stop], { stdio: "pipe" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("LocalAgent environment", () => {
  it("maps the stack's pool, vm and limits onto variables the agent itself accepts", async () => {
    const { agentEnvironment } = await import("../../components/local-agent.ts");
    const { loadAgentConfig } = await import("../../host-agent/config.ts");
    const env = agentEnvironment({
      pool: {
        minIdle: 3,
        maxInstances: 20,
        idleTtlSeconds: 120,
        maxConcurrentRestores: 6,
        memoryBudgetMiB: 4096,
      },
      vm: { memoryMiB: 512, cpuMaxPercent: 50 },
      limits: { callTimeoutMs: 10_000, payloadLimitBytes: 1_048_576 },
    });
    const config = loadAgentConfig(env);
    assert.equal(config.pool.genericMin, 3);
    assert.equal(config.pool.maxInstances, 20);
    assert.equal(config.pool.idleTtlMs, 120_000);
    assert.equal(config.pool.maxStarting, 6);
    assert.equal(config.pool.memoryBudgetMiB, 4096);
    assert.equal(config.limits.memoryMiB, 512);
    assert.equal(config.limits.cpuPercent, 50);
    assert.equal(config.pool.callTimeoutMs, 10_000);
    assert.equal(config.maxBodyBytes, 1_048_576);
  });
});
