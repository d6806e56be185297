/**
 * Rolling a real agent (process sandbox) to a new base under continuous load, and back: no call fails,
 * every function answers from the new base afterwards, and no code is re-deployed. A broken base rolls
 * back by itself; a bad release is refused with a 400 naming the field.
 */
import assert from "node:assert/strict";
import { chmod, cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ProcessBase } from "../../contracts/process-base.ts";
import { packFunction } from "../../host-agent/cli/pack.ts";
import type { RolloutStatus } from "../../host-agent/release/rollout.ts";
import {
  HELLO_CALL,
  startTestAgent,
  type TestAgent,
  testBaseVariant,
  untilNoStarts,
} from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const EXAMPLES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "examples");

const ADDER = `class Adder { add(a, b) { return a + b; } }
module.exports = { Adder };
`;

/** One call per function, each checked for its own answer. */
const CALLS: Array<{ fn: string; body: unknown; init?: { method?: string; path?: string }; ok: RegExp }> = [
  { fn: "hello-world", body: HELLO_CALL, ok: /"result":"Hello world!"/ },
  { fn: "http-echo", body: "ping", init: { method: "PUT", path: "/http-echo/items/1" }, ok: /"body":"ping"/ },
  { fn: "adder", body: { jsonrpc: "2.0", method: "Adder.add", params: [2, 3], id: 1 }, ok: /"result":5/ },
];

interface Load {
  calls: number;
  failures: string[];
  /** Base version that served each call, counted. */
  bases: Map<string, number>;
  stop(): Promise<void>;
}

/** `loops` clients calling the functions in turn, back to back, until stopped. */
function startLoad(agent: TestAgent, loops: number): Load {
  let running = true;
  const load: Load = {
    calls: 0,
    failures: [],
    bases: new Map(),
    stop: async () => {
      running = false;
      await Promise.all(workers);
    },
  };
  const worker = async (w: number) => {
    for (let i = w; running; i++) {
      const c = CALLS[i % CALLS.length]!;
      try {
        const res = await agent.call(c.fn, c.body, {
          ...c.init,
          headers: { "content-type": c.fn === "http-echo" ? "text/plain" : "application/json" },
        });
        load.calls++;
        if (res.status !== 200 || !c.ok.test(res.text)) {
          load.failures.push(`${c.fn}: ${res.status} ${res.text.slice(0, 200)}`);
        }
        const base = String(res.headers["x-faas-base-version"] ?? "none").split(";")[0]!;
        load.bases.set(base, (load.bases.get(base) ?? 0) + 1);
      } catch (err) {
        load.calls++;
        load.failures.push(`${c.fn}: ${(err as Error).message}`);
      }
    }
  };
  const workers = Array.from({ length: loops }, (_, w) => worker(w));
  return load;
}

async function answersFrom(agent: TestAgent, base: ProcessBase): Promise<void> {
  for (const c of CALLS) {
    const res = await agent.call(c.fn, c.body, {
      ...c.init,
      headers: { "content-type": c.fn === "http-echo" ? "text/plain" : "application/json" },
    });
    assert.equal(res.status, 200, `${c.fn}: ${res.text}`);
    assert.match(res.text, c.ok);
    assert.equal(
      res.headers["x-faas-base-version"],
      `${base.version}; runtime=${base.runtimeBuild}`,
      `${c.fn} answers from base ${base.version}`,
    );
  }
}

describe("rolling the base image of a live agent (process sandbox)", function () {
  this.timeout(180_000);
  let agent: TestAgent;
  let v1: ProcessBase;
  let v2: ProcessBase;
  let work: string;

  const post = async (route: string, body: unknown) =>
    agent.admin("POST", route, Buffer.from(JSON.stringify(body)), { "content-type": "application/json" });

  before(async function () {
    requireJailHost(this);
    work = await mkdtemp(path.join(tmpdir(), "faas-roll-"));
    // The jails' uids must be able to reach the bases below it.
    await chmod(work, 0o755);
    // A changed runtime build is a new base version; user code stays where it is.
    v2 = await testBaseVariant("v2");
    agent = await startTestAgent({ FAAS_POOL_GENERIC: "2", FAAS_CALL_TIMEOUT_MS: "10000" });
    v1 = agent.base as ProcessBase;
    assert.notEqual(v1.version, v2.version);
    for (const name of ["hello-world", "http-echo"]) {
      const put = await agent.admin(
        "PUT",
        `/v1/functions/${name}`,
        await packFunction(path.join(EXAMPLES, name)),
      );
      assert.equal(put.status, 201, JSON.stringify(put.json));
    }
    const put = await agent.admin("PUT", "/v1/functions/adder", tarGz([{ name: "index.js", data: ADDER }]));
    assert.equal(put.status, 201, JSON.stringify(put.json));
  });

  after(async () => {
    if (agent) await untilNoStarts(agent).catch(() => undefined);
    await agent?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("rolls to a new base and back under load: no failed call, every function on the new base, no re-deploy", async () => {
    const registryBefore = (await agent.admin("GET", "/v1/functions")).json;
    await answersFrom(agent, v1);
    const load = startLoad(agent, 4);
    await new Promise((r) => setTimeout(r, 500));

    // Forward as a canary: half the calls on the new base until it has served 40 without failing.
    const callsBefore = load.calls;
    const t0 = Date.now();
    const forwarding = post("/v1/release?wait=1", {
      baseVersion: v2.version,
      baseDir: v2.dir,
      rollout: { canaryPercent: 50, minCalls: 40 },
    });
    // While it rolls: where it stands, and no second roll.
    let during = (await agent.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
    while (!during.phase) {
      await new Promise((r) => setTimeout(r, 10));
      during = (await agent.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
    }
    assert.equal(during.candidate?.baseVersion, v2.version);
    const second = await post("/v1/release", { baseVersion: v1.version, baseDir: v1.dir });
    assert.equal(second.status, 409);
    assert.match(
      (second.json.error as { message: string }).message,
      new RegExp(`a roll to base ${v2.version} is in progress`),
    );
    const forward = await forwarding;
    const callsDuringForward = load.calls - callsBefore;
    const forwardMs = Date.now() - t0;
    assert.equal(forward.status, 200, JSON.stringify(forward.json));
    const rolled = forward.json as unknown as RolloutStatus;
    assert.equal(rolled.state, "completed", JSON.stringify(rolled));
    assert.equal(rolled.current.baseVersion, v2.version);
    assert.equal(rolled.previous?.baseVersion, v1.version);
    await new Promise((r) => setTimeout(r, 300));
    await answersFrom(agent, v2);

    // Back, all at once (the previous release's own policy).
    const callsBeforeBack = load.calls;
    const t1 = Date.now();
    const back = await post("/v1/release/rollback?wait=1", {});
    const callsDuringBack = load.calls - callsBeforeBack;
    const backMs = Date.now() - t1;
    assert.equal(back.status, 200, JSON.stringify(back.json));
    const backStatus = back.json as unknown as RolloutStatus;
    assert.equal(backStatus.state, "rolled-back");
    assert.equal(backStatus.reason, "manual rollback");
    assert.equal(backStatus.current.baseVersion, v1.version);
    assert.equal(backStatus.previous?.baseVersion, v2.version);
    await new Promise((r) => setTimeout(r, 300));
    await answersFrom(agent, v1);
    await load.stop();

    console.log(
      `      roll: ${callsDuringForward} calls during the roll to ${v2.version} (canary 50%, ${forwardMs} ms), ${callsDuringBack} during the roll back (${backMs} ms), ${load.calls} in all, ${load.failures.length} failed; served by base: ${JSON.stringify(Object.fromEntries(load.bases))}`,
    );
    assert.deepEqual(load.failures, [], "no call failed");
    assert.ok((load.bases.get(v2.version) ?? 0) > 40, "the new base served calls under load");
    assert.ok(callsDuringForward > 0 && callsDuringBack > 0, "the load ran through both rolls");
    const registryAfter = (await agent.admin("GET", "/v1/functions")).json;
    assert.deepEqual(registryAfter, registryBefore, "same records: same code hash, revision, deploy time");

    // The old pool of each roll is gone: one pool left, on v1.
    await new Promise((r) => setTimeout(r, 300));
    const pool = (await agent.admin("GET", "/v1/pool")).json as {
      pools: Array<{ role: string; baseVersion: string }>;
    };
    assert.deepEqual(
      pool.pools.map((p) => `${p.role}:${p.baseVersion}`),
      [`current:${v1.version}`],
    );
    const health = await agent.admin("GET", "/healthz");
    assert.equal(health.json.baseVersion, v1.version);
    const { request } = await import("undici");
    const metrics = await request(`${agent.adminUrl}/metrics`, {
      headers: { authorization: `Bearer ${agent.adminToken}` },
    });
    const text = await metrics.body.text();
    assert.match(text, /faas_base_rolls_total\{kind="release",outcome="completed"\} 1/);
    assert.match(text, /faas_base_rolls_total\{kind="rollback",outcome="rolled-back"\} 1/);
  });

  it("rolls back by itself from a base that does not start, while calls keep succeeding", async () => {
    // The right version on the label, a garbage startup snapshot inside.
    const broken = path.join(work, "broken");
    await cp(v2.dir, broken, { recursive: true });
    await writeFile(path.join(broken, "root", "runtime", "runtime.blob"), "not a V8 startup snapshot");
    const load = startLoad(agent, 4);
    await new Promise((r) => setTimeout(r, 300));
    const res = await post("/v1/release?wait=1", { baseVersion: v2.version, baseDir: broken });
    await new Promise((r) => setTimeout(r, 300));
    await load.stop();
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const status = res.json as unknown as RolloutStatus;
    assert.equal(status.state, "rolled-back");
    assert.match(
      status.reason ?? "",
      new RegExp(`an instance of base ${v2.version} failed its start check: .*did not start`),
    );
    assert.doesNotMatch(status.reason ?? "", /Permission denied/);
    assert.equal(status.current.baseVersion, v1.version);
    assert.deepEqual(load.failures, []);
    assert.ok(load.calls > 0);
    const shown = (await agent.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
    assert.equal(shown.state, "rolled-back");
    assert.equal(shown.reason, status.reason);
    assert.ok(
      agent.logs.some((l) => l.msg === "base roll rolled back" && String(l.reason).includes("start check")),
      "the reason is logged",
    );
    await answersFrom(agent, v1);
  });

  it("rolls back by itself when the canary's error rate passes the threshold, while calls keep succeeding", async () => {
    // A base that starts and answers its health check but breaks this module's load (it sees a file in
    // the base's root): every canary call fails to specialize, is served by the current base instead,
    // and counts against the canary. The policy is judged on the count of failures, not on how fast the
    // other load runs: with minCalls 40,000 and a threshold of 0.0001 the canary is hopeless at its 5th
    // failure, long before the other functions' calls could reach minCalls on any machine.
    const fragile = `const fs = require("fs");
if (fs.existsSync("/load-fails-on-this-base")) throw new Error("this base breaks my module");
class Fragile { ping() { return "pong"; } }
module.exports = { Fragile };
`;
    const put = await agent.admin(
      "PUT",
      "/v1/functions/fragile",
      tarGz([{ name: "index.js", data: fragile }]),
    );
    assert.equal(put.status, 201, JSON.stringify(put.json));
    const breaking = path.join(work, "breaking");
    await cp(v2.dir, breaking, { recursive: true });
    await writeFile(path.join(breaking, "root", "load-fails-on-this-base"), "");

    const load = startLoad(agent, 2);
    let fragileCalls = 0;
    const fragileFailures: string[] = [];
    let running = true;
    const fragileLoop = async () => {
      while (running) {
        const res = await agent.call("fragile", {
          jsonrpc: "2.0",
          method: "Fragile.ping",
          params: [],
          id: 1,
        });
        fragileCalls++;
        if (res.status !== 200) fragileFailures.push(`${res.status} ${res.text.slice(0, 200)}`);
      }
    };
    const fragileLoops = [fragileLoop(), fragileLoop()];
    await new Promise((r) => setTimeout(r, 300));
    const res = await post("/v1/release?wait=1", {
      baseVersion: v2.version,
      baseDir: breaking,
      rollout: { canaryPercent: 50, minCalls: 40_000, errorRateThreshold: 0.0001 },
    });
    await new Promise((r) => setTimeout(r, 300));
    running = false;
    await Promise.all(fragileLoops);
    await load.stop();
    assert.equal(res.status, 200, JSON.stringify(res.json));
    const status = res.json as unknown as RolloutStatus;
    assert.equal(status.state, "rolled-back", JSON.stringify(status));
    assert.match(
      status.reason ?? "",
      /^5 of \d+ calls on base .* failed \(error rate .* > threshold 0\.0001\)/,
    );
    assert.equal(status.current.baseVersion, v1.version);
    assert.deepEqual(fragileFailures, [], "the current base served every call the canary could not");
    assert.deepEqual(load.failures, [], "the other functions' calls kept succeeding");
    assert.ok(fragileCalls > 5 && load.calls > 0);
    await answersFrom(agent, v1);
  });

  describe("a release that cannot be used is refused with a 400 naming the field", () => {
    /** A good base below a folder other uids cannot enter. */
    let hidden: string;
    const cases: Array<[string, () => unknown, RegExp]> = [
      ["a body that is not JSON", () => "{nope", /the body is not JSON/],
      ["no baseVersion", () => ({ baseDir: v2.dir }), /^baseVersion: is required/],
      [
        "a canary share over 100",
        () => ({ baseVersion: v2.version, baseDir: v2.dir, rollout: { canaryPercent: 150 } }),
        /^rollout\.canaryPercent: .*<=100/,
      ],
      [
        "an unknown field",
        () => ({ baseVersion: v2.version, baseDir: v2.dir, rollout: { canary: 5 } }),
        /^rollout\.canary: is not a release field/,
      ],
      [
        "a relative baseDir",
        () => ({ baseVersion: v2.version, baseDir: "bases/x" }),
        /^baseDir: must be an absolute path/,
      ],
      [
        "a folder that does not exist",
        () => ({ baseVersion: v2.version, baseDir: "/nonexistent/base" }),
        /^baseDir: .* is not a folder/,
      ],
      [
        "a folder that is not a base",
        () => ({ baseVersion: v2.version, baseDir: work }),
        /^baseDir: .*base\.json is missing/,
      ],
      [
        "a base the sandbox's uids cannot reach",
        () => ({ baseVersion: v2.version, baseDir: hidden }),
        /^baseDir: the sandbox's uids cannot reach .* is not searchable by others/,
      ],
      [
        "a version that is not the folder's",
        () => ({ baseVersion: "0123abc", baseDir: v2.dir }),
        /^baseVersion: is 0123abc but .* holds base /,
      ],
    ];
    for (const [what, body, message] of cases) {
      it(what, async () => {
        const input = body();
        const res = await agent.admin(
          "POST",
          "/v1/release",
          Buffer.from(typeof input === "string" ? input : JSON.stringify(input)),
          { "content-type": "application/json" },
        );
        assert.equal(res.status, 400, JSON.stringify(res.json));
        const err = res.json.error as { code: string; message: string };
        assert.equal(err.code, "invalid_release");
        assert.match(err.message, message);
        const status = (await agent.admin("GET", "/v1/release")).json as unknown as RolloutStatus;
        assert.equal(status.current.baseVersion, v1.version, "nothing changed");
      });
    }

    before(async () => {
      const closed = path.join(work, "closed");
      hidden = path.join(closed, "base");
      await cp(v2.dir, hidden, { recursive: true });
      await chmod(closed, 0o700);
    });

    it("a base with its runtime files missing", async () => {
      const partial = path.join(work, "partial");
      await cp(v2.dir, partial, { recursive: true });
      await rm(path.join(partial, "root", "runtime", "runtime.blob"));
      const res = await post("/v1/release", { baseVersion: v2.version, baseDir: partial });
      assert.equal(res.status, 400);
      assert.match(
        (res.json.error as { message: string }).message,
        /^baseDir: .*runtime\.blob is missing or empty/,
      );
    });

    it("without the admin token", async () => {
      const { request } = await import("undici");
      const res = await request(`${agent.adminUrl}/v1/release`, { method: "POST", body: "{}" });
      await res.body.text();
      assert.equal(res.statusCode, 401);
    });
  });
});
