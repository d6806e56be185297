/**
 * The fleet duties wired into a real agent (fake sandbox driver, fake clock): configured from the
 * environment, it publishes PoolUtilization for its group and drains on scale-in, its data plane's
 * /healthz failing over real HTTP. Off the fleet (no namespace, no hook) it touches no AWS endpoint.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { AutoScalingClient } from "@aws-sdk/client-auto-scaling";
import { CloudWatchClient } from "@aws-sdk/client-cloudwatch";
import { request } from "undici";
import { type RunningAgent, startAgent } from "../../host-agent/agent.ts";
import { startFleetDuties } from "../../host-agent/aws/fleet.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { ServingState } from "../../host-agent/http/serving-state.ts";
import { createMetrics } from "../../host-agent/metrics.ts";
import type { InstanceSource } from "../../host-agent/pool/instance-source.ts";
import { FakeAwsApi, TEST_CREDENTIALS, TEST_REGION } from "../helpers/fake-aws-api.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";
import { FakeImds, GROUP_NAME_PATH, INSTANCE_ID_PATH, TARGET_STATE_PATH } from "../helpers/fake-imds.ts";
import { captureLog } from "../helpers/log-capture.ts";
import { waitFor } from "../helpers/wait.ts";

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

describe("agent on an Auto Scaling fleet", () => {
  let imds: FakeImds;
  let api: FakeAwsApi;
  let clients: Array<{ destroy(): void }> = [];
  let stateDir: string;
  let agent: RunningAgent | undefined;

  beforeEach(async () => {
    imds = await new FakeImds().start();
    imds.items.set(INSTANCE_ID_PATH, "i-0a1b2c3d4e5f60718");
    imds.items.set(GROUP_NAME_PATH, "snapfaas-hosts-group");
    imds.items.set(TARGET_STATE_PATH, "InService");
    api = await new FakeAwsApi().start();
    stateDir = await mkdtemp(path.join(tmpdir(), "faas-fleet-agent-"));
  });

  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    for (const c of clients) c.destroy();
    clients = [];
    await Promise.all([imds.close(), api.close()]);
    await rm(stateDir, { recursive: true, force: true });
  });

  function sdkClients() {
    const options = {
      region: TEST_REGION,
      endpoint: api.endpoint,
      credentials: TEST_CREDENTIALS,
      maxAttempts: 1,
    };
    const cloudWatch = new CloudWatchClient(options);
    const autoScaling = new AutoScalingClient(options);
    clients.push(cloudWatch, autoScaling);
    return { cloudWatch, autoScaling };
  }

  async function start(env: Record<string, string>) {
    const clock = new FakeClock();
    const config = loadAgentConfig({
      PORT: "0",
      ADMIN_PORT: "0",
      FAAS_STATE_DIR: stateDir,
      FAAS_POOL_GENERIC: "0",
      FAAS_POOL_MAX_INSTANCES: "8",
      FAAS_IMDS_URL: imds.url,
      ...env,
    });
    const captured = captureLog();
    agent = await startAgent(config, {
      clock,
      driver: new FakeDriver(),
      base: { version: "v1", driver: "process", dir: "/bases/v1" },
      log: captured.log,
      aws: sdkClients(),
    });
    return { clock, agent, captured };
  }

  const health = async (a: RunningAgent) => {
    const res = await request(`${a.dataUrl}/healthz`);
    return { status: res.statusCode, body: await res.body.json() };
  };

  it("publishes PoolUtilization for its group and, once terminating, fails /healthz and completes the hook", async () => {
    const { clock, agent: a } = await start({
      AWS_REGION: TEST_REGION,
      FAAS_METRIC_NAMESPACE: "SnapFaaS",
      FAAS_METRIC_INTERVAL_MS: "10000",
      FAAS_LIFECYCLE_HOOK: "snapfaas-hosts-drain",
    });
    clock.advance(0);
    await waitFor("the first lifecycle poll", () => imds.gets(TARGET_STATE_PATH).length === 1);
    assert.deepEqual(await health(a), { status: 200, body: { status: "ok" } });

    // Two 5 s samples of an idle pool, one send.
    clock.advance(10_000);
    await waitFor("PutMetricData", () => api.of("PutMetricData").length === 1);
    const put = api.of("PutMetricData")[0]!.params as {
      Namespace: string;
      MetricData: Array<Record<string, unknown>>;
    };
    assert.equal(put.Namespace, "SnapFaaS");
    assert.equal(put.MetricData[0]!["MetricName"], "PoolUtilization");
    assert.equal(put.MetricData[0]!["Unit"], "Percent");
    assert.equal(put.MetricData[0]!["Value"], 0);
    assert.deepEqual(put.MetricData[0]!["Dimensions"], [
      { Name: "AutoScalingGroupName", Value: "snapfaas-hosts-group" },
    ]);

    imds.items.set(TARGET_STATE_PATH, "Terminated");
    for (let i = 0; i < 10 && api.of("CompleteLifecycleAction").length === 0; i++) {
      const polls = imds.gets(TARGET_STATE_PATH).length;
      clock.advance(5_000);
      await waitFor("a lifecycle poll", () => imds.gets(TARGET_STATE_PATH).length > polls);
      await settle();
    }
    await waitFor("CompleteLifecycleAction", () => api.of("CompleteLifecycleAction").length === 1);
    assert.deepEqual(api.of("CompleteLifecycleAction")[0]!.params, {
      Action: "CompleteLifecycleAction",
      Version: "2011-01-01",
      LifecycleHookName: "snapfaas-hosts-drain",
      AutoScalingGroupName: "snapfaas-hosts-group",
      LifecycleActionResult: "CONTINUE",
      InstanceId: "i-0a1b2c3d4e5f60718",
    });
    assert.deepEqual(await health(a), { status: 503, body: { status: "draining" } });
    assert.equal(a.serving.draining, true);
  });

  it("uses FAAS_ASG_NAME instead of the instance tag when it is set", async () => {
    imds.items.delete(GROUP_NAME_PATH);
    const { clock } = await start({
      AWS_REGION: TEST_REGION,
      FAAS_METRIC_NAMESPACE: "SnapFaaS",
      FAAS_METRIC_INTERVAL_MS: "5000",
      FAAS_ASG_NAME: "named-group",
    });
    clock.advance(5_000);
    await waitFor("PutMetricData", () => api.of("PutMetricData").length === 1);
    const data = (api.of("PutMetricData")[0]!.params["MetricData"] as Array<{ Dimensions: unknown }>)[0]!;
    assert.deepEqual(data.Dimensions, [{ Name: "AutoScalingGroupName", Value: "named-group" }]);
    assert.equal(imds.gets(GROUP_NAME_PATH).length, 0);
  });

  it("without FAAS_METRIC_NAMESPACE and FAAS_LIFECYCLE_HOOK runs neither duty and calls nothing", async () => {
    const { clock, agent: a, captured } = await start({});
    assert.equal(captured.find("Auto Scaling duties on").length, 0);
    clock.advance(600_000);
    await settle();
    assert.equal(imds.requests.length, 0);
    assert.equal(api.calls.length, 0);
    assert.deepEqual(await health(a), { status: 200, body: { status: "ok" } });
  });

  it("runs only the duty that is configured", async () => {
    const pool = { snapshot: () => ({ functions: {} }) } as unknown as InstanceSource;
    const common = {
      pool,
      serving: new ServingState(),
      clock: new FakeClock(),
      log: captureLog().log,
      metrics: createMetrics(),
      overrides: sdkClients(),
    };
    const metricsOnly = startFleetDuties({
      ...common,
      config: loadAgentConfig({ AWS_REGION: TEST_REGION, FAAS_METRIC_NAMESPACE: "SnapFaaS" }).aws,
    });
    const drainOnly = startFleetDuties({
      ...common,
      config: loadAgentConfig({ AWS_REGION: TEST_REGION, FAAS_LIFECYCLE_HOOK: "hook" }).aws,
    });
    try {
      assert.ok(metricsOnly.publisher);
      assert.equal(metricsOnly.drain, undefined);
      assert.equal(drainOnly.publisher, undefined);
      assert.ok(drainOnly.drain);
    } finally {
      await Promise.all([metricsOnly.stop(), drainOnly.stop()]);
    }
  });
});
