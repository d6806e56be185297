/**
 * Draining on scale-in: the real IMDSv2 client against a local metadata service, a real Auto Scaling
 * SDK client against a local stand-in of the query API, the fake clock for the 5 s polls, the 60 s
 * heartbeats and the drain timeout.
 */
import assert from "node:assert/strict";
import { AutoScalingClient } from "@aws-sdk/client-auto-scaling";
import { DrainWatcher, type DrainWatcherDeps } from "../../host-agent/aws/drain.ts";
import { ImdsClient } from "../../host-agent/aws/imds.ts";
import { ServingState } from "../../host-agent/http/serving-state.ts";
import { createMetrics } from "../../host-agent/metrics.ts";
import { FakeAwsApi, TEST_CREDENTIALS, TEST_REGION } from "../helpers/fake-aws-api.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeImds, GROUP_NAME_PATH, INSTANCE_ID_PATH, TARGET_STATE_PATH } from "../helpers/fake-imds.ts";
import { captureLog, LEVEL } from "../helpers/log-capture.ts";
import { waitFor } from "../helpers/wait.ts";

const HOOK = "snapfaas-hosts-drain";
const GROUP = "snapfaas-hosts-group";
const INSTANCE = "i-0fedcba9876543210";

const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
};

describe("drain on scale-in (lifecycle hook)", () => {
  let imds: FakeImds;
  let api: FakeAwsApi;
  let autoScaling: AutoScalingClient;
  let watcher: DrainWatcher | undefined;

  beforeEach(async () => {
    imds = await new FakeImds().start();
    imds.items.set(INSTANCE_ID_PATH, INSTANCE);
    imds.items.set(GROUP_NAME_PATH, GROUP);
    imds.items.set(TARGET_STATE_PATH, "InService");
    api = await new FakeAwsApi().start();
    autoScaling = new AutoScalingClient({
      region: TEST_REGION,
      endpoint: api.endpoint,
      credentials: TEST_CREDENTIALS,
      maxAttempts: 1,
    });
  });

  afterEach(async () => {
    await watcher?.stop();
    watcher = undefined;
    autoScaling.destroy();
    await Promise.all([imds.close(), api.close()]);
  });

  function makeWatcher(overrides: Partial<DrainWatcherDeps> = {}) {
    const clock = new FakeClock();
    const serving = new ServingState();
    const captured = captureLog();
    const metrics = createMetrics();
    const metadata = new ImdsClient({ baseUrl: imds.url, clock });
    watcher = new DrainWatcher({
      metadata,
      autoScaling,
      serving,
      hookName: HOOK,
      groupName: () => metadata.autoScalingGroupName(),
      clock,
      log: captured.log,
      metrics,
      timeoutMs: 270_000,
      ...overrides,
    });
    const w = watcher;
    /** One poll period on the fake clock, then wait for that poll's answer to be handled. */
    const poll = async () => {
      const before = imds.gets(TARGET_STATE_PATH).length;
      clock.advance(before === 0 ? 0 : 5_000);
      await waitFor("a lifecycle state poll", () => imds.gets(TARGET_STATE_PATH).length === before + 1);
      // Handled: the next poll is scheduled, or a drain began.
      await waitFor("the poll's answer", () => clock.pendingTimers > 0 || w.phase !== "watching");
    };
    w.start();
    return { clock, serving, captured, metrics, watcher: w, poll };
  }

  const heartbeats = () => api.of("RecordLifecycleActionHeartbeat");
  const completions = () => api.of("CompleteLifecycleAction");
  const failuresOf = async (metrics: ReturnType<typeof createMetrics>, action: string) =>
    (await metrics.lifecycleActionFailures.get()).values.find((v) => v.labels.action === action)?.value ?? 0;

  it("keeps serving and passing its health check until the target lifecycle state is Terminated", async () => {
    imds.items.delete(TARGET_STATE_PATH);
    const { serving, watcher: w, poll, captured } = makeWatcher();
    await poll();
    assert.equal(w.phase, "watching", "an absent item (404) is not a termination");
    imds.items.set(TARGET_STATE_PATH, "InService");
    for (let i = 0; i < 3; i++) await poll();
    imds.items.set(TARGET_STATE_PATH, "Standby");
    await poll();
    assert.equal(serving.draining, false);
    assert.equal(w.phase, "watching");
    assert.equal(api.calls.length, 0);

    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    assert.equal(serving.draining, true);
    assert.ok(captured.find("terminating this host: draining").length === 1);
  });

  it("completes the hook with CONTINUE only after the calls in flight finish, with a heartbeat every minute meanwhile", async () => {
    const { clock, serving, watcher: w, poll } = makeWatcher();
    const endFirst = serving.callStarted();
    const endSecond = serving.callStarted();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    assert.equal(w.phase, "draining");

    clock.advance(60_000);
    await waitFor("the first heartbeat", () => heartbeats().length === 1);
    assert.deepEqual(heartbeats()[0]!.params, {
      Action: "RecordLifecycleActionHeartbeat",
      Version: "2011-01-01",
      LifecycleHookName: HOOK,
      AutoScalingGroupName: GROUP,
      InstanceId: INSTANCE,
    });
    clock.advance(60_000);
    await waitFor("the second heartbeat", () => heartbeats().length === 2);

    endFirst();
    await settle();
    assert.equal(w.phase, "draining", "one call is still in flight");
    assert.equal(completions().length, 0);

    endSecond();
    await waitFor("the completion", () => completions().length === 1);
    assert.deepEqual(completions()[0]!.params, {
      Action: "CompleteLifecycleAction",
      Version: "2011-01-01",
      LifecycleHookName: HOOK,
      AutoScalingGroupName: GROUP,
      LifecycleActionResult: "CONTINUE",
      InstanceId: INSTANCE,
    });
    await waitFor("the completed phase", () => w.phase === "completed");
    assert.equal(serving.draining, true, "the host stays out of the load balancer");

    clock.advance(300_000);
    await settle();
    assert.equal(heartbeats().length, 2, "no heartbeat after the completion");
    assert.equal(
      clock.pendingTimers,
      0,
      "nothing left scheduled: the process is left to the instance's shutdown",
    );
  });

  it("completes at once when nothing is in flight", async () => {
    const { watcher: w, poll } = makeWatcher();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    await waitFor("the completion", () => completions().length === 1);
    await waitFor("the completed phase", () => w.phase === "completed");
    assert.equal(heartbeats().length, 0);
  });

  it("completes at the drain timeout when calls never finish, and says so", async () => {
    const { clock, serving, watcher: w, poll, captured } = makeWatcher({ timeoutMs: 150_000 });
    serving.callStarted();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();

    clock.advance(149_000);
    await waitFor("two heartbeats", () => heartbeats().length === 2);
    assert.equal(completions().length, 0, "not before the timeout");

    clock.advance(1_000);
    await waitFor("the completion at the timeout", () => completions().length === 1);
    assert.equal(completions()[0]!.params["LifecycleActionResult"], "CONTINUE");
    const warning = captured.find("drain timeout passed with calls still in flight");
    assert.equal(warning.length, 1);
    assert.equal(warning[0]!["level"], LEVEL.warn);
    assert.equal(warning[0]!["inFlight"], 1);
    await waitFor("the completed phase", () => w.phase === "completed");
  });

  it("logs and counts a failed heartbeat and keeps draining", async () => {
    api.fail("RecordLifecycleActionHeartbeat", { status: 400, code: "Throttling", message: "Rate exceeded" });
    const { clock, serving, watcher: w, poll, captured, metrics } = makeWatcher();
    const end = serving.callStarted();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    clock.advance(60_000);
    await waitFor(
      "the heartbeat failure to be logged",
      () => captured.find("lifecycle heartbeat failed").length === 1,
    );
    assert.equal(await failuresOf(metrics, "heartbeat"), 1);
    clock.advance(60_000);
    await waitFor("the next heartbeat", () => heartbeats().length === 2);
    end();
    await waitFor("the completion", () => completions().length === 1);
    await waitFor("the completed phase", () => w.phase === "completed");
  });

  it("tries a refused completion again after a poll period", async () => {
    api.fail("CompleteLifecycleAction", { status: 400, code: "Throttling", message: "Rate exceeded" });
    const { clock, watcher: w, poll, metrics } = makeWatcher();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    await waitFor("the first completion attempt", () => completions().length === 1);
    await waitFor("the failure to be handled", () => clock.pendingTimers === 1);
    assert.equal(await failuresOf(metrics, "complete"), 1);
    assert.equal(w.phase, "completing");
    clock.advance(5_000);
    await waitFor("the second completion attempt", () => completions().length === 2);
    await waitFor("the completed phase", () => w.phase === "completed");
  });

  // protection: DrainWatcher.drain keeps trying to complete until the group accepts (it may not hold the
  // instance in Terminating:Wait yet when the target state turns)
  it("keeps trying to complete while the group has no lifecycle action for it yet, without an error each time", async () => {
    const refused = { status: 400, code: "ValidationError", message: "No active Lifecycle Action found" };
    api.fail("CompleteLifecycleAction", refused, 20);
    const { clock, watcher: w, poll, captured } = makeWatcher();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    for (let n = 1; n <= 20; n++) {
      await waitFor(`completion attempt ${n}`, () => completions().length === n);
      await waitFor("the refusal to be handled", () => clock.pendingTimers === 1);
      assert.equal(w.phase, "completing");
      clock.advance(5_000);
    }
    await waitFor("the accepted attempt", () => w.phase === "completed");
    assert.equal(completions().length, 21);
    const loud = captured.find("completion failed").filter((e) => e["level"] === LEVEL.error);
    assert.equal(loud.length, 2, "an error on the first refusal and on the 12th, debug between");
  });

  it("stopped while it retries the completion, it stops at once and tries no more", async () => {
    api.fail(
      "CompleteLifecycleAction",
      { status: 400, code: "ValidationError", message: "No active Lifecycle Action found" },
      50,
    );
    const { clock, watcher: w, poll } = makeWatcher();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    await waitFor("the first completion attempt", () => completions().length === 1);
    await waitFor("the refusal to be handled", () => clock.pendingTimers === 1);
    await w.stop(); // resolves without the clock moving: no 5 s pause left to wait out
    assert.equal(w.phase, "stopped");
    clock.advance(60_000);
    await settle();
    assert.equal(completions().length, 1, "no attempt after the stop");
    assert.equal(w.phase, "stopped");
  });

  it("stopped while draining, it neither completes the hook nor sends heartbeats", async () => {
    const { clock, serving, watcher: w, poll } = makeWatcher();
    const end = serving.callStarted();
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    await poll();
    await w.stop();
    end();
    clock.advance(600_000);
    await settle();
    assert.equal(w.phase, "stopped");
    assert.equal(api.calls.length, 0);
    assert.equal(clock.pendingTimers, 0);
  });
});
