/**
 * The data plane's side of a drain, over real HTTP: /healthz fails once draining while calls are still
 * served, and a call counts as in flight from its arrival until its answer has been sent.
 */
import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { request } from "undici";
import { systemClock } from "../../host-agent/clock.ts";
import { createDataPlane } from "../../host-agent/http/data-plane.ts";
import { ServingState } from "../../host-agent/http/serving-state.ts";
import { createMetrics } from "../../host-agent/metrics.ts";
import type { InstanceSource } from "../../host-agent/pool/instance-source.ts";
import type { CallAnswer, Lease } from "../../host-agent/pool/lease.ts";
import type { FunctionRecord } from "../../host-agent/registry/backend.ts";
import type { Registry } from "../../host-agent/registry/registry.ts";
import { waitFor } from "../helpers/wait.ts";

const RECORD = {
  name: "slow",
  codeHash: "a".repeat(64),
  format: "tar.gz",
  bundleBytes: 1,
  unpackedBytes: 1,
  fileCount: 1,
  entry: "index.js",
} as unknown as FunctionRecord;

/** A registry with one function and a pool whose only instance answers when the test lets it. */
function stubs() {
  let letAnswer: () => void = () => {};
  let answered = Promise.resolve();
  const gate = () => {
    answered = new Promise<void>((r) => {
      letAnswer = r;
    });
  };
  const registry = {
    get: (name: string) => (name === "slow" ? RECORD : undefined),
    artifactPath: () => "/code/slow",
    settingsFor: () => ({ load: {}, hash: "", timeoutMs: 30_000 }),
  } as unknown as Registry;
  const lease = {
    acquired: "warm",
    waitedMs: 0,
    at: 0,
    baseVersion: "test",
    async forward(): Promise<CallAnswer> {
      await answered;
      return { status: 200, headers: { "content-type": "text/plain" }, body: Buffer.from("done") };
    },
    end: () => {},
  } satisfies Lease;
  const pool = {
    acquire: async () => lease,
  } as unknown as InstanceSource;
  return { registry, pool, gate, answer: () => letAnswer() };
}

describe("data plane while draining", () => {
  let server: Server;
  let url: string;
  let serving: ServingState;
  let s: ReturnType<typeof stubs>;

  beforeEach(async () => {
    s = stubs();
    serving = new ServingState();
    server = createDataPlane({
      registry: s.registry,
      pool: s.pool,
      clock: systemClock,
      log: pino({ level: "silent" }),
      metrics: createMetrics(),
      callTimeoutMs: 30_000,
      maxBodyBytes: 1024 * 1024,
      timeouts: { headersTimeoutMs: 10_000, requestTimeoutMs: 60_000 },
      serving,
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterEach(async () => {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  });

  const get = async (path: string) => {
    const res = await request(`${url}${path}`);
    return { status: res.statusCode, text: await res.body.text() };
  };

  it("answers /healthz 200 ok until draining, then 503 draining, and still serves calls", async () => {
    assert.deepEqual(await get("/healthz"), { status: 200, text: '{"status":"ok"}\n' });
    serving.startDraining();
    assert.deepEqual(await get("/healthz"), { status: 503, text: '{"status":"draining"}\n' });
    const head = await request(`${url}/healthz`, { method: "HEAD" });
    await head.body.text();
    assert.equal(head.statusCode, 503);
    assert.deepEqual(await get("/slow"), { status: 200, text: "done" }, "a call routed here is served");
  });

  it("counts a call as in flight from its arrival until its answer has been sent", async () => {
    s.gate();
    const call = get("/slow");
    await waitFor("the call to be in flight", () => serving.inFlight === 1);
    let idle = false;
    void serving.idle().then(() => {
      idle = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(idle, false);

    s.answer();
    assert.deepEqual(await call, { status: 200, text: "done" });
    await waitFor("the call to end", () => idle);
    assert.equal(serving.inFlight, 0);
  });

  it("does not count health checks or calls to unknown functions", async () => {
    s.gate();
    await get("/healthz");
    assert.equal((await get("/nothing-here")).status, 404);
    assert.equal(serving.inFlight, 0);
  });
});
