/**
 * Per-function egress through a running agent (process sandbox): a function without it has no network;
 * a function with it reaches an "outside" through NAT and resolves names through DNS, and reaches
 * nothing on the host (its loopback, the agent's ports on every host address), no other jail and no
 * 169.254.169.254. The "outside" is test/helpers/egress-outside.ts: a namespace the agent is told is
 * its uplink, with an HTTP server, a metadata address and a DNS server, and no route back to the jails.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { request } from "undici";
import { startAgent } from "../../host-agent/agent.ts";
import { deployConfigHeaders } from "../../host-agent/cli/admin-client.ts";
import { loadAgentConfig } from "../../host-agent/config.ts";
import { createLogger } from "../../host-agent/log.ts";
import { egressNames } from "../../host-agent/sandbox/process/egress.ts";
import { findOnPath } from "../../host-agent/sandbox/process/preflight.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { runCli } from "../helpers/cli.ts";
import {
  METADATA_ADDRESS,
  OUTSIDE_DNS,
  OUTSIDE_NAME,
  OUTSIDE_SERVER,
  type Outside,
  startOutside,
  UPLINK_ADDRESS,
} from "../helpers/egress-outside.ts";
import { FakeDriver } from "../helpers/fake-driver.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const HANDLER = `
const net = require("node:net");
const http = require("node:http");
const dns = require("node:dns");
const os = require("node:os");
const boot = require("node:crypto").randomUUID();
let server;
const connect = (host, port, ms) => new Promise((resolve) => {
  const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); resolve("ETIMEDOUT"); }, Number(ms || 1500));
  s.on("connect", () => { clearTimeout(t); s.destroy(); resolve("connected"); });
  s.on("error", (e) => { clearTimeout(t); resolve(e.code || e.message); });
});
const get = (url) => new Promise((resolve) => {
  const req = http.get(url, { timeout: 3000 }, (res) => {
    let body = ""; res.on("data", (c) => (body += c)); res.on("end", () => resolve({ status: res.statusCode, body }));
  });
  req.on("timeout", () => req.destroy(new Error("ETIMEDOUT")));
  req.on("error", (e) => resolve({ error: e.code || e.message }));
});
exports.handler = async (event) => {
  const q = event.queryStringParameters || {};
  if (q.op === "connect") return { boot, result: await connect(q.host, q.port, q.ms) };
  if (q.op === "get") return { boot, ...(await get(q.url)) };
  if (q.op === "lookup") return { boot, ...(await dns.promises.lookup(q.name, 4).catch((e) => ({ error: e.code }))) };
  if (q.op === "listen") {
    server ??= await new Promise((r) => { const s = net.createServer((c) => c.end("hi")); s.listen(Number(q.port), "0.0.0.0", () => r(s)); });
    return { boot, listening: true };
  }
  const addrs = Object.entries(os.networkInterfaces()).flatMap(([n, l]) => l.filter((a) => a.family === "IPv4").map((a) => n + "=" + a.address));
  const v6 = (os.networkInterfaces().eth0 || []).filter((a) => a.family === "IPv6").map((a) => a.address);
  return { boot, addrs, v6 };
};
`;

const SERVER = OUTSIDE_SERVER;
const METADATA = METADATA_ADDRESS;
const NAME = OUTSIDE_NAME;

async function sh(file: string, args: string[], input?: string) {
  return execa(file, args, { input, timeout: 20_000 });
}

describe("per-function egress (process sandbox)", function () {
  this.timeout(180_000);
  // The test chooses the agent's /24 (FAAS_EGRESS_SUBNET), so the outside's route can name it.
  const subnet = `10.207.${200 + (randomBytes(1)[0]! % 50)}.0/24`;
  let agent: TestAgent | undefined;
  let outside: Outside | undefined;
  let dataPort = 0;
  let adminPort = 0;

  before(async function () {
    requireJailHost(this);
    const missing = ["ip", "nft", "nsenter"].filter((t) => findOnPath(t) === undefined);
    if (missing.length > 0) {
      console.log(
        `      skipped: ${missing.join(", ")} not installed (apt-get install -y iproute2 nftables)`,
      );
      this.skip();
    }
    outside = await startOutside();
    await outside.route(subnet);
    agent = await startTestAgent({
      // On every address: the test proves the jails cannot reach the agent's ports on any of them.
      HOST: "0.0.0.0",
      ADMIN_HOST: "0.0.0.0",
      FAAS_EGRESS_UPLINK: outside.uplink,
      FAAS_EGRESS_DNS: OUTSIDE_DNS,
      FAAS_EGRESS_SUBNET: subnet,
      FAAS_CALL_TIMEOUT_MS: "10000",
    });
    dataPort = Number(new URL(agent.dataUrl).port);
    adminPort = Number(new URL(agent.adminUrl).port);
  });

  after(async () => {
    await agent?.close();
    await outside?.close();
  });

  const call = async (fn: string, query: Record<string, string | number>) => {
    const qs = new URLSearchParams(Object.entries(query).map(([k, v]): [string, string] => [k, String(v)]));
    const res = await agent!.call(fn, undefined, { method: "GET", path: `/${fn}?${qs}` });
    assert.equal(res.status, 200, res.text);
    return res.json();
  };
  const deploy = async (name: string, egress: boolean) => {
    const dir = path.join(agent!.stateDir, `src-${name}`);
    const { mkdir } = await import("node:fs/promises");
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "index.js"), HANDLER);
    return runCli(agent, ["deploy", dir, "--name", name, ...(egress ? ["--egress"] : [])]);
  };
  const hostPorts = () => [dataPort, adminPort];

  it("refuses egress at deploy with one line naming what the host lacks (ip_forward off)", async () => {
    await writeFile("/proc/sys/net/ipv4/ip_forward", "0");
    const run = await deploy("early", true);
    assert.equal(run.code, 1);
    assert.match(
      run.errors.join("\n"),
      /\(409\): egress is not available on this host: net\.ipv4\.ip_forward is off \(sysctl -w net\.ipv4\.ip_forward=1\)/,
    );
    const listed = await agent!.admin("GET", "/v1/functions/early");
    assert.equal(listed.status, 404, "nothing was deployed");
    await writeFile("/proc/sys/net/ipv4/ip_forward", "1");
  });

  it("without egress a function reaches nothing: no interface but lo, no route out", async () => {
    const run = await deploy("closed", false);
    assert.equal(run.code, 0, run.errors.join("\n"));
    assert.deepEqual((await call("closed", { op: "addrs" })).addrs, ["lo=127.0.0.1"]);
    assert.equal((await call("closed", { op: "connect", host: SERVER, port: 80 })).result, "ENETUNREACH");
    assert.equal((await call("closed", { op: "lookup", name: NAME })).error !== undefined, true);
    const fns = await agent!.admin("GET", "/v1/functions");
    const closed = (fns.json.functions as Array<{ name: string; config: { egress: boolean } }>).find(
      (f) => f.name === "closed",
    );
    assert.equal(closed?.config.egress, false, "GET lists egress off");
  });

  let jailAddress = "";
  it("with egress a function reaches the outside through NAT and resolves names through DNS", async () => {
    const run = await deploy("open", true);
    assert.equal(run.code, 0, run.errors.join("\n"));
    const { addrs, v6 } = await call("open", { op: "addrs" });
    assert.deepEqual(v6, [], "no IPv6 on the link (no link-local way to the host)");
    const eth0 = (addrs as string[]).find((a) => a.startsWith("eth0="));
    assert.ok(eth0, `the jail has a link out: ${addrs}`);
    jailAddress = eth0.slice(5);
    assert.ok(jailAddress.startsWith(subnet.slice(0, -4)), jailAddress);
    const got = await call("open", { op: "get", url: `http://${SERVER}/` });
    assert.equal(got.status, 200, JSON.stringify(got));
    // The outside saw the host's uplink address, not the jail's: the host masqueraded the call.
    assert.deepEqual(JSON.parse(got.body), { from: UPLINK_ADDRESS, to: SERVER });
    assert.deepEqual(await call("open", { op: "lookup", name: NAME }), {
      boot: got.boot,
      address: SERVER,
      family: 4,
    });
    const byName = await call("open", { op: "get", url: `http://${NAME}/` });
    assert.equal(JSON.parse(byName.body).to, SERVER, "a call by name reaches the server DNS named");
    assert.equal((await call("open", { op: "lookup", name: "nope.example.test" })).error, "ENOTFOUND");
    const fns = await agent!.admin("GET", "/v1/functions");
    const open = (fns.json.functions as Array<{ name: string; config: { egress: boolean } }>).find(
      (f) => f.name === "open",
    );
    assert.equal(open?.config.egress, true, "GET lists egress on");
  });

  it("with egress nothing on the host is reachable: its loopback, the agent's ports on any address", async () => {
    const { stdout } = await sh("ip", ["-o", "-4", "addr", "show"]);
    const hostAddresses = [...stdout.matchAll(/inet (\d+\.\d+\.\d+\.\d+)\//g)].map((m) => m[1]!);
    assert.ok(hostAddresses.includes(UPLINK_ADDRESS));
    for (const port of hostPorts()) {
      // The control: from the host itself, the port answers on these addresses.
      assert.equal(await connectFromHost(UPLINK_ADDRESS, port), "connected");
      for (const address of hostAddresses) {
        const { result } = await call("open", { op: "connect", host: address, port, ms: 800 });
        // 127.0.0.1 is the jail's own loopback (refused); every other host address is dropped.
        assert.equal(result, address.startsWith("127.") ? "ECONNREFUSED" : "ETIMEDOUT", `${address}:${port}`);
      }
    }
    // The host end of the jail's own link is a host address too.
    const gateway = jailAddress.replace(/\.\d+$/, (m) => `.${Number(m.slice(1)) - 1}`);
    assert.equal(
      (await call("open", { op: "connect", host: gateway, port: dataPort, ms: 800 })).result,
      "ETIMEDOUT",
    );
  });

  it("with egress no other jail and no metadata address is reachable", async () => {
    const run = await deploy("other", true);
    assert.equal(run.code, 0, run.errors.join("\n"));
    const other = ((await call("other", { op: "addrs" })).addrs as string[])
      .find((a) => a.startsWith("eth0="))!
      .slice(5);
    assert.deepEqual((await call("other", { op: "listen", port: 8099 })).listening, true);
    assert.equal(
      (await call("other", { op: "connect", host: other, port: 8099 })).result,
      "connected",
      "the control",
    );
    assert.equal(
      (await call("open", { op: "connect", host: other, port: 8099, ms: 800 })).result,
      "ETIMEDOUT",
    );
    // The jails' route to the metadata address leads to the outside, where a server answers on it.
    const names = egressNames(agent!.stateDir, subnet);
    const route = await sh("ip", [
      "-o",
      "route",
      "get",
      METADATA,
      "from",
      jailAddress,
      "iif",
      `${names.vethPrefix}-0`,
    ]);
    assert.match(route.stdout, new RegExp(`dev ${outside!.uplink}`));
    const got = await call("open", { op: "get", url: `http://${METADATA}/` });
    assert.equal(got.error, "ETIMEDOUT", JSON.stringify(got));
  });

  it("faas config --egress off/on replaces the function's instances", async () => {
    const before = await call("open", { op: "connect", host: SERVER, port: 80 });
    assert.equal(before.result, "connected");
    const off = await runCli(agent, ["config", "open", "--egress", "off", "--json"]);
    assert.equal(off.code, 0, off.errors.join("\n"));
    assert.equal(JSON.parse(off.printed.join("\n")).function.config.egress, false);
    const closed = await call("open", { op: "connect", host: SERVER, port: 80 });
    assert.notEqual(closed.boot, before.boot, "a new instance");
    assert.equal(closed.result, "ENETUNREACH");
    const bad = await runCli(agent, ["config", "open", "--egress", "maybe"]);
    assert.match(bad.errors.join("\n"), /--egress takes on or off, not maybe/);
    const on = await runCli(agent, ["config", "open", "--egress", "on"]);
    assert.equal(on.code, 0, on.errors.join("\n"));
    const opened = await call("open", { op: "connect", host: SERVER, port: 80 });
    assert.notEqual(opened.boot, closed.boot);
    assert.equal(opened.result, "connected");
  });

  it("leaves no link and no table behind when the agent stops", async () => {
    const names = egressNames(agent!.stateDir, subnet);
    const links = async () => (await sh("ip", ["-o", "link", "show"])).stdout;
    assert.match(await links(), new RegExp(`${names.vethPrefix}-\\d+`), "links exist while the agent runs");
    await agent!.close();
    agent = undefined;
    assert.doesNotMatch(await links(), new RegExp(names.vethPrefix));
    assert.doesNotMatch((await sh("nft", ["list", "tables"])).stdout, new RegExp(names.table));
  });

  it("reclaims the links and table a crashed agent left, at the next start on the same state folder", async () => {
    const stateDir = await mkdtemp(path.join(tmpdir(), "faas-egress-"));
    const names = egressNames(stateDir, subnet);
    // What a killed agent leaves: its table, and a link whose jail end never got its namespace.
    await sh("nft", ["add", "table", "inet", names.table]);
    await sh("ip", [
      "link",
      "add",
      `${names.vethPrefix}-7`,
      "type",
      "veth",
      "peer",
      "name",
      `${names.vethPrefix}p`,
    ]);
    agent = await startTestAgent({ FAAS_EGRESS_SUBNET: subnet }, { stateDir });
    assert.doesNotMatch((await sh("ip", ["-o", "link", "show"])).stdout, new RegExp(names.vethPrefix));
    assert.doesNotMatch((await sh("nft", ["list", "tables"])).stdout, new RegExp(names.table));
    await agent.close();
    agent = undefined;
  });
});

function connectFromHost(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port }, () => {
      s.destroy();
      resolve("connected");
    });
    s.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe("per-function egress on a sandbox without it", () => {
  it("refuses a deploy asking for egress with a 409 naming why, and stores nothing", async () => {
    const stateDir = await mkdtemp(path.join(tmpdir(), "faas-noegress-"));
    const agent = await startAgent(
      loadAgentConfig({ PORT: "0", ADMIN_PORT: "0", FAAS_STATE_DIR: stateDir, FAAS_POOL_GENERIC: "0" }),
      {
        driver: new FakeDriver(),
        base: { version: "v1", driver: "process", dir: "/bases/v1" },
        log: createLogger("silent"),
      },
    );
    try {
      const put = (headers: Record<string, string>) =>
        request(`${agent.adminUrl}/v1/functions/f`, {
          method: "PUT",
          headers: {
            authorization: `Bearer ${agent.adminToken}`,
            "content-type": "application/gzip",
            ...headers,
          },
          body: tarGz([{ name: "index.js", data: "exports.handler = async () => 1;" }]),
        });
      const refused = await put(deployConfigHeaders({ egress: true }));
      const body = (await refused.body.json()) as { error: { code: string; message: string } };
      assert.equal(refused.statusCode, 409);
      assert.deepEqual(body.error.code, "egress_unavailable");
      assert.match(
        body.error.message,
        /^egress is not available on this host: this sandbox driver has no per-function egress/,
      );
      const listed = await request(`${agent.adminUrl}/v1/functions/f`, {
        headers: { authorization: `Bearer ${agent.adminToken}` },
      });
      await listed.body.dump();
      assert.equal(listed.statusCode, 404, "nothing was deployed");
    } finally {
      await agent.stop();
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
