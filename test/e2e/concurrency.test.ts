/**
 * A function's `concurrency` through the running agent, with real jails: calls share one instance up to
 * it, each with its own answer and its own console lines; a call past its deadline gets its 504 while
 * the other call in the instance still gets its answer (then the instance is replaced); an instance that
 * dies fails every call in it with 502 and is replaced. The default (1) keeps one call per instance.
 */
import assert from "node:assert/strict";
import { request } from "undici";
import { configPatchOf, deployConfigHeaders } from "../../host-agent/cli/admin-client.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";

// `most` is the largest number of this instance's calls seen in flight at once.
const HANDLER = `
const boot = require("node:crypto").randomUUID();
let inFlight = 0;
let most = 0;
exports.handler = async (event) => {
  const q = event.queryStringParameters || {};
  inFlight++;
  most = Math.max(most, inFlight);
  try {
    if (q.log) console.log(q.log + " start");
    if (q.crash) setTimeout(() => process.exit(3), Number(q.crash));
    if (q.sleep) await new Promise((r) => setTimeout(r, Number(q.sleep)));
    if (q.log) console.log(q.log + " end");
    return { boot, most };
  } finally {
    inFlight--;
  }
};
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("per-function concurrency (process sandbox)", function () {
  this.timeout(90_000);
  let agent: TestAgent;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({ FAAS_CALL_TIMEOUT_MS: "8000" });
  });

  after(async () => {
    await agent?.close();
  });

  const deploy = async (name: string, config: object | undefined) => {
    const res = await agent.admin(
      "PUT",
      `/v1/functions/${name}`,
      tarGz([{ name: "index.js", data: HANDLER }]),
      deployConfigHeaders(config),
    );
    assert.equal(res.status, 201, JSON.stringify(res.json));
  };

  const get = async (name: string, query: string) => {
    const res = await request(`${agent.dataUrl}/${name}${query}`);
    const text = await res.body.text();
    return {
      status: res.statusCode,
      rid: String(res.headers["x-faas-request-id"]),
      text,
      json: () => JSON.parse(text),
    };
  };

  it("serves two calls at once in one instance: both answered, each with its own console lines", async () => {
    // As `faas deploy --concurrency 4` sends it.
    await deploy("shared", configPatchOf({ concurrency: "4" }));
    assert.throws(() => configPatchOf({ concurrency: "many" }), /--concurrency takes a whole number/);
    const shown = (await agent.admin("GET", "/v1/functions/shared")).json.function as {
      config: Record<string, unknown>;
    };
    assert.equal(shown.config.concurrency, 4);
    const [a, b] = await Promise.all([get("shared", "?sleep=1500&log=a"), get("shared", "?sleep=300&log=b")]);
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
    assert.equal(a.json().boot, b.json().boot, "both calls ran in the same instance");
    assert.equal(a.json().most, 2, "the instance had both calls in flight at once");
    await waitFor("both calls' last console lines", () =>
      ["a end", "b end"].every((m) => agent.logs.some((l) => l.user === true && l.msg === m)),
    );
    const user = agent.logs.filter((l) => l.user === true && l.fn === "shared");
    for (const [who, rid] of [
      ["a", a.rid],
      ["b", b.rid],
    ] as const) {
      const mine = user.filter((l) => String(l.msg).startsWith(`${who} `));
      assert.deepEqual(
        mine.map((l) => [l.msg, l.rid]),
        [
          [`${who} start`, rid],
          [`${who} end`, rid],
        ],
        `${who}'s lines carry its own request id`,
      );
    }
  });

  it("keeps one call per instance by default", async () => {
    await deploy("alone", {});
    const [a, b] = await Promise.all([get("alone", "?sleep=800"), get("alone", "?sleep=800")]);
    assert.equal(a.status, 200, a.text);
    assert.equal(b.status, 200, b.text);
    // Whether the second call waits for the first's instance or gets its own, it never shares one.
    assert.equal(a.json().most, 1);
    assert.equal(b.json().most, 1);
  });

  it("answers the other call in the instance when one runs past its deadline, then replaces the instance", async () => {
    await deploy("late", { concurrency: 2, timeoutMs: 3000 });
    const before = await get("late", "");
    assert.equal(before.status, 200, before.text);
    const slow = get("late", "?sleep=20000");
    await sleep(1500);
    // In flight from 1.5 s to 3.5 s: across the slow call's deadline at 3 s, within its own at 4.5 s.
    const other = await get("late", "?sleep=2000");
    const timedOut = await slow;
    assert.equal(timedOut.status, 504, timedOut.text);
    assert.match(timedOut.text, /deadline of 3000 ms/);
    assert.equal(other.status, 200, other.text);
    assert.equal(other.json().boot, before.json().boot, "the other call ran in the same instance");
    assert.equal(other.json().most, 2);
    const after = await get("late", "");
    assert.equal(after.status, 200, after.text);
    assert.notEqual(after.json().boot, before.json().boot, "the instance was replaced once its calls ended");
  });

  it("fails every call in flight with 502 when the instance dies, and replaces it", async () => {
    await deploy("fragile", { concurrency: 3 });
    const first = await get("fragile", "");
    assert.equal(first.status, 200, first.text);
    const calls = await Promise.all([
      get("fragile", "?sleep=10000"),
      get("fragile", "?sleep=10000"),
      get("fragile", "?crash=300&sleep=10000"),
    ]);
    for (const c of calls) {
      assert.equal(c.status, 502, c.text);
      assert.match(c.text, /exit|code 3/);
    }
    const after = await get("fragile", "");
    assert.equal(after.status, 200, after.text);
    assert.notEqual(after.json().boot, first.json().boot, "a new instance serves the next call");
  });

  it("refuses a concurrency outside 1 to 100, naming the setting", async () => {
    for (const bad of [0, 101, 1.5, "4"]) {
      const res = await agent.admin(
        "PATCH",
        "/v1/functions/shared/config",
        Buffer.from(JSON.stringify({ concurrency: bad })),
        { "content-type": "application/json" },
      );
      assert.equal(res.status, 400, JSON.stringify(res.json));
      assert.match(JSON.stringify(res.json), /concurrency must be a whole number of calls from 1 to 100/);
    }
  });
});
