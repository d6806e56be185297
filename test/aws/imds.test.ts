/** The IMDSv2 client against a local metadata service that refuses anything but token-carrying requests. */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ImdsClient, ImdsError } from "../../host-agent/aws/imds.ts";
import { FakeClock } from "../helpers/fake-clock.ts";
import { FakeImds, GROUP_NAME_PATH, INSTANCE_ID_PATH, TARGET_STATE_PATH } from "../helpers/fake-imds.ts";

describe("instance metadata client (IMDSv2)", () => {
  let imds: FakeImds;
  let clock: FakeClock;

  beforeEach(async () => {
    imds = await new FakeImds().start();
    imds.items.set(INSTANCE_ID_PATH, "i-0123456789abcdef0");
    imds.items.set(GROUP_NAME_PATH, "snapfaas-hosts-group");
    imds.items.set(TARGET_STATE_PATH, "InService");
    clock = new FakeClock();
  });

  afterEach(async () => {
    await imds.close();
  });

  it("reads the instance id, the group name tag and the target lifecycle state with one session token", async () => {
    const client = new ImdsClient({ baseUrl: imds.url, clock });
    assert.equal(await client.instanceId(), "i-0123456789abcdef0");
    assert.equal(await client.autoScalingGroupName(), "snapfaas-hosts-group");
    assert.equal(await client.targetLifecycleState(), "InService");

    const tokens = imds.tokenRequests();
    assert.equal(tokens.length, 1, "one token for the three reads");
    assert.equal(tokens[0]!.method, "PUT");
    assert.equal(tokens[0]!.ttl, "21600");
    const gets = imds.requests.filter((r) => r.method === "GET");
    assert.deepEqual(
      gets.map((r) => [r.path, r.token]),
      [
        [INSTANCE_ID_PATH, "token-1"],
        [GROUP_NAME_PATH, "token-1"],
        [TARGET_STATE_PATH, "token-1"],
      ],
    );
  });

  it("reads the target state fresh each time but the instance id and group name only once", async () => {
    const client = new ImdsClient({ baseUrl: imds.url, clock });
    await client.instanceId();
    await client.autoScalingGroupName();
    assert.equal(await client.targetLifecycleState(), "InService");
    imds.items.set(TARGET_STATE_PATH, "Terminated");
    assert.equal(await client.targetLifecycleState(), "Terminated");
    await client.instanceId();
    await client.autoScalingGroupName();
    assert.equal(imds.gets(TARGET_STATE_PATH).length, 2);
    assert.equal(imds.gets(INSTANCE_ID_PATH).length, 1);
    assert.equal(imds.gets(GROUP_NAME_PATH).length, 1);
  });

  it("keeps its token until shortly before it expires, then asks for a new one", async () => {
    // 120 s tokens are renewed a tenth of their life early: at 108 s.
    const client = new ImdsClient({ baseUrl: imds.url, clock, tokenTtlSeconds: 120 });
    await client.targetLifecycleState();
    assert.equal(imds.tokenRequests()[0]!.ttl, "120");
    clock.advance(107_000);
    await client.targetLifecycleState();
    assert.equal(imds.tokenRequests().length, 1, "still the first token at 107 s");
    clock.advance(1_000);
    await client.targetLifecycleState();
    assert.equal(imds.tokenRequests().length, 2, "a new token at 108 s");
    assert.equal(imds.gets(TARGET_STATE_PATH).at(-1)!.token, "token-2");
  });

  it("shares one token request between reads that start together", async () => {
    const client = new ImdsClient({ baseUrl: imds.url, clock });
    await Promise.all([client.instanceId(), client.autoScalingGroupName(), client.targetLifecycleState()]);
    assert.equal(imds.tokenRequests().length, 1);
  });

  it("gets a new token once when the service refuses the cached one", async () => {
    const client = new ImdsClient({ baseUrl: imds.url, clock });
    await client.targetLifecycleState();
    imds.revokeTokens();
    assert.equal(await client.targetLifecycleState(), "InService");
    assert.deepEqual(
      imds.gets(TARGET_STATE_PATH).map((r) => r.token),
      ["token-1", "token-1", "token-2"],
    );
  });

  it("throws ImdsError with the path and status for an item the service does not have", async () => {
    imds.items.delete(GROUP_NAME_PATH);
    const client = new ImdsClient({ baseUrl: imds.url, clock });
    await assert.rejects(client.autoScalingGroupName(), (err: unknown) => {
      assert.ok(err instanceof ImdsError);
      assert.equal(err.status, 404);
      assert.equal(err.path, GROUP_NAME_PATH);
      assert.match(err.message, /HTTP 404/);
      return true;
    });
    // A failed read is not cached: the tag appearing later is seen.
    imds.items.set(GROUP_NAME_PATH, "late-group");
    assert.equal(await client.autoScalingGroupName(), "late-group");
  });

  it("throws ImdsError when the token request is refused", async () => {
    const refusing = createServer((req, res) => {
      req.resume();
      res.writeHead(403);
      res.end();
    });
    await listen(refusing);
    try {
      const url = `http://127.0.0.1:${(refusing.address() as AddressInfo).port}`;
      const client = new ImdsClient({ baseUrl: url, clock });
      await assert.rejects(client.instanceId(), (err: unknown) => {
        assert.ok(err instanceof ImdsError);
        assert.equal(err.status, 403);
        assert.equal(err.path, "/latest/api/token");
        return true;
      });
    } finally {
      await close(refusing);
    }
  });

  it("throws ImdsError without a status when nothing listens, and when the service does not answer in time", async () => {
    // A port that was free a moment ago: nothing listens there now.
    const probe = createServer();
    await listen(probe);
    const port = (probe.address() as AddressInfo).port;
    await close(probe);
    const unreachable = new ImdsClient({ baseUrl: `http://127.0.0.1:${port}`, clock });
    await assert.rejects(unreachable.targetLifecycleState(), (err: unknown) => {
      assert.ok(err instanceof ImdsError);
      assert.equal(err.status, undefined);
      return true;
    });

    const silent = createServer(() => {
      // Never answers.
    });
    await listen(silent);
    try {
      const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const slow = new ImdsClient({ baseUrl: url, clock, timeoutMs: 200 });
      await assert.rejects(slow.targetLifecycleState(), (err: unknown) => {
        assert.ok(err instanceof ImdsError);
        assert.match(err.message, /no answer within 200 ms/);
        return true;
      });
    } finally {
      await close(silent);
    }
  });

  it("refuses a token lifetime IMDS would not grant", () => {
    assert.throws(() => new ImdsClient({ clock, tokenTtlSeconds: 0 }), RangeError);
    assert.throws(() => new ImdsClient({ clock, tokenTtlSeconds: 21_601 }), RangeError);
  });
});

function listen(server: Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
