/**
 * PoolUtilization: what it measures (from real pool and rollout pictures) and how it is published (a
 * real CloudWatch SDK client against a local stand-in of the API, driven by the fake clock).
 */
import assert from "node:assert/strict";
import { CloudWatchClient } from "@aws-sdk/client-cloudwatch";
import pino from "pino";
import {
  PoolUtilizationPublisher,
  type PoolUtilizationPublisherDeps,
  poolUtilizationPercent,
} from "../../host-agent/aws/pool-utilization.ts";
import { createMetrics } from "../../host-agent/metrics.ts";
import type { PoolPicture } from "../../host-agent/pool/instance-source.ts";
import { driverProbe } from "../../host-agent/release/base-check.ts";
import { parseRelease } from "../../host-agent/release/release.ts";
import { Rollout } from "../../host-agent/release/rollout.ts";
import type { BaseImage } from "../../host-agent/sandbox/driver.ts";
import { FakeAwsApi, TEST_CREDENTIALS, TEST_REGION } from "../helpers/fake-aws-api.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";
import { captureLog, LEVEL } from "../helpers/log-capture.ts";
import { testPoolConfig } from "../helpers/pool-config.ts";
import { waitFor } from "../helpers/wait.ts";

const LIMITS = { memoryMiB: 128, cpuPercent: 100, pids: 32, tmpMiB: 16, openFiles: 256, fileSizeMiB: 16 };
const base = (version: string): BaseImage => ({ version, driver: "process", dir: `/bases/${version}` });
const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

function picture(instances: Partial<Record<string, number>>, capacity: number, extra = {}): PoolPicture {
  return {
    functions: {},
    instances: { starting: 0, generic: 0, specializing: 0, idle: 0, busy: 0, stopping: 0, ...instances },
    targets: { capacity },
    ...extra,
  };
}

describe("PoolUtilization: what it measures", () => {
  it("counts busy, specializing and starting instances over the pool's capacity, not idle or generic ones", () => {
    const p = picture({ busy: 2, specializing: 1, starting: 1, idle: 3, generic: 2, stopping: 1 }, 16);
    assert.equal(poolUtilizationPercent(p), 25);
  });

  it("adds every pool of a base roll against the current pool's capacity, capped at 100", () => {
    const rolling = picture({}, 10, {
      pools: [
        { role: "candidate", ...picture({ starting: 2 }, 10) },
        { role: "current", ...picture({ busy: 3, specializing: 1 }, 10) },
      ],
    });
    assert.equal(poolUtilizationPercent(rolling), 60);
    const over = picture({}, 4, {
      pools: [
        { role: "current", ...picture({ busy: 4 }, 4) },
        { role: "draining", ...picture({ busy: 2 }, 4) },
      ],
    });
    assert.equal(poolUtilizationPercent(over), 100);
  });

  it("refuses a picture without instance counts or capacity", () => {
    assert.throws(() => poolUtilizationPercent({ functions: {} }), /lacks instance counts/);
    assert.throws(() => poolUtilizationPercent(picture({}, 0)), /no capacity/);
  });

  it("reads the fields a real rollout's snapshot has: one busy instance of 4 is 25 %", async () => {
    const clock = new FakeClock();
    const driver = new FakeDriver();
    let n = 0;
    const newInstanceId = () => `i${n++}`;
    const rollout = new Rollout(
      {
        driver,
        limits: LIMITS,
        poolConfig: testPoolConfig({ genericMin: 1, genericMax: 1, maxInstances: 4 }),
        clock,
        log: pino({ level: "silent" }),
        metrics: createMetrics(),
        newInstanceId,
        clientFor: driver.clientFor,
        random: () => 0,
        checkBase: async (r) => base(r.baseVersion),
        probeBase: driverProbe({ driver, limits: LIMITS, newInstanceId, clientFor: driver.clientFor }),
        warmupTimeoutMs: 10_000,
        drainTimeoutMs: 30_000,
      },
      { release: parseRelease({ baseVersion: "v1", baseDir: "/bases/v1" }), base: base("v1") },
    );
    try {
      rollout.start();
      await settle();
      assert.equal(poolUtilizationPercent(rollout.snapshot()), 0, "a ready generic instance is not in use");
      const lease = await rollout.acquire(
        { name: "a", codeHash: "a-hash", entry: "index.js", hostPath: "/code/a" },
        clock.now() + 1000,
      );
      assert.equal(poolUtilizationPercent(rollout.snapshot()), 25);
      lease.end(true);
      assert.equal(poolUtilizationPercent(rollout.snapshot()), 0);
    } finally {
      await rollout.close();
    }
  });
});

describe("PoolUtilization: publishing to CloudWatch", () => {
  let api: FakeAwsApi;
  let cloudWatch: CloudWatchClient;
  let publisher: PoolUtilizationPublisher | undefined;

  beforeEach(async () => {
    api = await new FakeAwsApi().start();
    cloudWatch = new CloudWatchClient({
      region: TEST_REGION,
      endpoint: api.endpoint,
      credentials: TEST_CREDENTIALS,
      maxAttempts: 1,
    });
  });

  afterEach(async () => {
    await publisher?.stop();
    publisher = undefined;
    cloudWatch.destroy();
    await api.close();
  });

  /** Commands handed to the client, counted the moment the publisher sends (before any HTTP). */
  let handed: unknown[] = [];

  function makePublisher(samples: number[], overrides: Partial<PoolUtilizationPublisherDeps> = {}) {
    const clock = new FakeClock();
    handed = [];
    const captured = captureLog();
    const metrics = createMetrics();
    let i = 0;
    publisher = new PoolUtilizationPublisher({
      cloudWatch: {
        send: ((command: Parameters<CloudWatchClient["send"]>[0]) => {
          handed.push(command);
          return cloudWatch.send(command);
        }) as CloudWatchClient["send"],
      },
      namespace: "SnapFaaS",
      groupName: async () => "snapfaas-hosts-group",
      sample: () => samples[i++] ?? 0,
      clock,
      log: captured.log,
      metrics,
      intervalMs: 60_000,
      sampleEveryMs: 5_000,
      ...overrides,
    });
    publisher.start();
    return { clock, captured, metrics, publisher };
  }

  const puts = () => api.of("PutMetricData");
  const failures = async (metrics: ReturnType<typeof createMetrics>) =>
    (await metrics.metricPublishFailures.get()).values[0]?.value ?? 0;

  it("sends the average of the interval's samples as PoolUtilization, Percent, per Auto Scaling group", async () => {
    // Twelve 5 s samples per minute: the first minute averages 27.5, the second 80.
    const first = [0, 10, 20, 30, 40, 50, 60, 50, 40, 10, 10, 10];
    const second = Array(12).fill(80) as number[];
    const { clock } = makePublisher([...first, ...second]);

    clock.advance(55_000);
    await settle();
    assert.equal(handed.length, 0, "nothing is sent before the interval is over");

    clock.advance(5_000);
    await waitFor("the first PutMetricData", () => puts().length === 1);
    const call = puts()[0]!;
    assert.equal(call.protocol, "json");
    assert.match(
      String(call.headers.authorization),
      /^AWS4-HMAC-SHA256 Credential=AKIDFAKEFLEETTEST\/\d+\/eu-west-1\/monitoring\//,
    );
    assert.deepEqual(call.params, {
      Namespace: "SnapFaaS",
      MetricData: [
        {
          MetricName: "PoolUtilization",
          Dimensions: [{ Name: "AutoScalingGroupName", Value: "snapfaas-hosts-group" }],
          Timestamp: clock.now() / 1000,
          Unit: "Percent",
          Value: 27.5,
        },
      ],
    });

    clock.advance(60_000);
    await waitFor("the second PutMetricData", () => puts().length === 2);
    const data = (puts()[1]!.params["MetricData"] as Array<Record<string, unknown>>)[0]!;
    assert.equal(data["Value"], 80);
  });

  it("logs and counts a publish CloudWatch refuses, and sends again the next interval", async () => {
    api.fail("PutMetricData", {
      status: 400,
      code: "AccessDenied",
      message: "not allowed in namespace SnapFaaS",
    });
    const { clock, captured, metrics } = makePublisher(Array(24).fill(50) as number[]);

    clock.advance(60_000);
    await waitFor(
      "the failure to be logged",
      () => captured.find("could not publish PoolUtilization").length === 1,
    );
    const line = captured.find("could not publish PoolUtilization")[0]!;
    assert.equal(line["level"], LEVEL.error);
    assert.match(String(line["err"]), /not allowed in namespace SnapFaaS/);
    assert.equal(line["namespace"], "SnapFaaS");
    assert.equal(await failures(metrics), 1);

    clock.advance(60_000);
    await waitFor("the next interval's PutMetricData", () => puts().length === 2);
    await waitFor(
      "the second send to be settled",
      () => captured.find("published PoolUtilization").length === 1,
    );
    assert.equal(await failures(metrics), 1, "the second send went through");
    assert.equal((puts()[1]!.params["MetricData"] as Array<{ Value: number }>)[0]!.Value, 50);
  });

  it("counts a send whose group name cannot be read, and reads it again next time", async () => {
    let calls = 0;
    const { clock, metrics, captured } = makePublisher(Array(24).fill(10) as number[], {
      groupName: async () => {
        if (calls++ === 0)
          throw new Error("instance metadata tags/instance/aws:autoscaling:groupName answered HTTP 404");
        return "later-group";
      },
    });
    clock.advance(60_000);
    await waitFor(
      "the failure to be logged",
      () => captured.find("could not publish PoolUtilization").length === 1,
    );
    assert.equal(await failures(metrics), 1);
    assert.equal(handed.length, 0, "nothing was sent without the group name");
    clock.advance(60_000);
    await waitFor("the next PutMetricData", () => puts().length === 1);
    const data = (puts()[0]!.params["MetricData"] as Array<{ Dimensions: unknown }>)[0]!;
    assert.deepEqual(data.Dimensions, [{ Name: "AutoScalingGroupName", Value: "later-group" }]);
  });

  it("skips a sample that cannot be taken and averages the others", async () => {
    let i = 0;
    const { clock, captured } = makePublisher([], {
      sample: () => {
        i++;
        if (i % 2 === 0) throw new Error("the pool picture lacks instance counts or capacity");
        return 40;
      },
    });
    clock.advance(60_000);
    await waitFor("the PutMetricData", () => puts().length === 1);
    assert.equal((puts()[0]!.params["MetricData"] as Array<{ Value: number }>)[0]!.Value, 40);
    assert.equal(captured.find("could not sample pool utilization").length, 6);
  });

  it("stops sampling and sending when stopped", async () => {
    const { clock, publisher: p } = makePublisher(Array(24).fill(30) as number[]);
    clock.advance(30_000);
    await p.stop();
    assert.equal(clock.pendingTimers, 0);
    clock.advance(120_000);
    await settle();
    assert.equal(handed.length, 0);
  });
});
