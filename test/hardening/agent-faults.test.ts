/**
 * Agent faults: the agent SIGKILLed under load and started again (as a child process, so the kill is
 * real), and a full disk under the state dir. Nothing deployed is lost, nothing the crash left behind
 * survives the restart, and calls are served again.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { request } from "undici";
import { cgroupScope, detectCgroups } from "../../host-agent/sandbox/process/cgroups.ts";
import { HELLO_CALL, startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { type ChildAgent, freePorts, startChildAgent } from "../helpers/child-agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { HELLO_MODULE, tarGz } from "../helpers/tar-builder.ts";
import { waitFor } from "../helpers/wait.ts";

const SLOW = `exports.Slow = class Slow {
  async nap(ms) { await new Promise((r) => setTimeout(r, ms)); return "rested"; }
};`;

/** Host pids whose command line mentions `needle` (the jails of one agent name its state dir). */
function processesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(needle)) found.push(Number(pid));
    } catch {
      // Gone while looking.
    }
  }
  return found;
}

/**
 * Whether `pid` still runs. A killed jail stays in /proc as a zombie until its new parent (pid 1 once
 * the agent is gone) reaps it, and some container inits take seconds to; a zombie holds no memory,
 * namespace or file, so it counts as gone.
 */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Instance cgroups (v1 pids hierarchy, or v2) of the agent whose state dir is `stateDir`. */
function instanceCgroups(stateDir: string): string[] {
  const mode = detectCgroups();
  const scopeDir =
    mode.version === 1
      ? path.join(mode.mounts.pids, "faas", cgroupScope(stateDir))
      : mode.version === 2
        ? path.join(mode.root, "faas", cgroupScope(stateDir))
        : undefined;
  if (!scopeDir || !existsSync(scopeDir)) return [];
  return readdirSync(scopeDir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name);
}

describe("hardening: agent faults", function () {
  this.timeout(120_000);

  describe("SIGKILL under load, then a restart", () => {
    const token = randomBytes(18).toString("base64url");
    let stateDir: string;
    let agent: ChildAgent | undefined;
    let ports: { port: number; adminPort: number };

    before(async function () {
      requireJailHost(this);
      stateDir = await mkdtemp(path.join(tmpdir(), "faas-crash-"));
      const [port, adminPort] = await freePorts(2);
      ports = { port: port!, adminPort: adminPort! };
    });

    after(async () => {
      if (agent && agent.child.exitCode === null && agent.child.signalCode === null) {
        agent.child.kill("SIGTERM");
        await Promise.race([agent.exited, new Promise((r) => setTimeout(r, 10_000))]);
        if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill("SIGKILL");
      }
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
    });

    const admin = async (method: string, route: string, body?: Buffer) => {
      const res = await request(`${agent!.adminUrl}${route}`, {
        method: method as "GET",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/gzip" },
        body,
      });
      return { status: res.statusCode, json: (await res.body.json()) as Record<string, unknown> };
    };
    const call = async (fn: string, body: unknown) => {
      const res = await request(`${agent!.dataUrl}/${fn}`, { method: "POST", body: JSON.stringify(body) });
      return { status: res.statusCode, text: await res.body.text() };
    };

    // protection: registry records are atomic files; bwrap --die-with-parent; ProcessDriver.init reclaims
    // instance folders and cgroups; Registry.init removes torn writes and uncommitted code
    it("loses no function, leaks no jail, folder, cgroup or temp file, and serves again", async () => {
      agent = await startChildAgent({ stateDir, token, ...ports, env: { FAAS_POOL_GENERIC: "2" } });
      for (const [name, code] of [
        ["hello", HELLO_MODULE],
        ["slow", SLOW],
      ] as const) {
        const res = await admin("PUT", `/v1/functions/${name}`, tarGz([{ name: "index.js", data: code }]));
        assert.equal(res.status, 201, JSON.stringify(res.json));
      }
      const before = (await admin("GET", "/v1/functions")).json.functions;

      // Load: calls of both functions in flight when the agent dies.
      let loading = true;
      const outcomes = { ok: 0, failed: 0 };
      const loader = async (fn: string, body: unknown) => {
        while (loading) {
          const res = await call(fn, body).catch(() => ({ status: 0, text: "" }));
          if (res.status === 200) outcomes.ok++;
          else outcomes.failed++;
        }
      };
      const loaders = [
        loader("hello", HELLO_CALL),
        loader("slow", { jsonrpc: "2.0", method: "Slow.nap", params: [300], id: 1 }),
        loader("slow", { jsonrpc: "2.0", method: "Slow.nap", params: [300], id: 2 }),
      ];
      await new Promise((r) => setTimeout(r, 1500));
      const jailsBefore = processesMentioning(stateDir);
      const cgroupsBefore = instanceCgroups(stateDir);
      assert.ok(jailsBefore.length > 0, "jails were running");
      assert.ok(outcomes.ok > 0, "calls were being served");

      agent.child.kill("SIGKILL");
      const exit = await agent.exited;
      assert.equal(exit.signal, "SIGKILL");
      loading = false;
      await Promise.all(loaders);

      // The jails die with their agent (setpriv --pdeathsig, then bwrap --die-with-parent; one whose agent
      // died before the signal was armed exits at its parent check); the restart's reclaim pass would
      // still kill any survivor through its cgroup (checked below).
      await waitFor(
        "the crashed agent's jails to die",
        () => processesMentioning(stateDir).length === 0,
        3000,
      ).catch(() => undefined);
      const survivors = processesMentioning(stateDir);
      if (detectCgroups().version !== 0) assert.ok(cgroupsBefore.length > 0, "instances had cgroups");

      // What a crash in the middle of a deploy leaves on disk.
      const tornRecord = path.join(stateDir, "registry", ".ghost.json.4242.1.tmp");
      const tornBundle = path.join(stateDir, "bundles", ".deadbeef.4242.1.tmp");
      const staging = path.join(stateDir, "code", "cafe.staging-4242-1");
      const uncommitted = path.join(stateDir, "code", "f".repeat(64));
      await writeFile(tornRecord, '{"name":"gho');
      await writeFile(tornBundle, "partial");
      await mkdir(staging, { recursive: true });
      await mkdir(uncommitted, { recursive: true });
      const oldInstances = await readdir(path.join(stateDir, "run", "instances"));
      assert.ok(oldInstances.length > 0, "the crash left instance folders behind");

      agent = await startChildAgent({ stateDir, token, ...ports, env: { FAAS_POOL_GENERIC: "2" } });
      assert.deepEqual((await admin("GET", "/v1/functions")).json.functions, before, "no function lost");
      assert.equal((await call("hello", HELLO_CALL)).status, 200);
      const nap = await call("slow", { jsonrpc: "2.0", method: "Slow.nap", params: [10], id: 3 });
      assert.equal(nap.status, 200, nap.text);

      const nowInstances = await readdir(path.join(stateDir, "run", "instances"));
      for (const id of oldInstances) assert.ok(!nowInstances.includes(id), `instance folder ${id} reclaimed`);
      const nowCgroups = instanceCgroups(stateDir);
      for (const id of cgroupsBefore) assert.ok(!nowCgroups.includes(id), `cgroup ${id} reclaimed`);
      for (const p of [tornRecord, tornBundle, staging, uncommitted])
        assert.ok(!existsSync(p), `${p} removed`);
      for (const pid of [...jailsBefore, ...survivors]) {
        assert.ok(!running(pid), `jail process ${pid} of the crashed agent is gone`);
      }
      assert.match(agent.output(), /reclaimed what a previous agent left behind/);
    });
  });

  describe("stopping while jails start", () => {
    before(function () {
      requireJailHost(this);
    });

    // protection: ProcessInstance.destroy kills the whole jail through its cgroup (bwrap's
    // --die-with-parent alone misses jails killed during their setup, which then hold the stop forever)
    it("leaves no jail process behind and does not hang, when stopped in the middle of starts", async () => {
      for (let round = 0; round < 6; round++) {
        const agent = await startTestAgent({ FAAS_POOL_GENERIC: "6", FAAS_POOL_MAX_STARTING: "6" });
        await new Promise((r) => setTimeout(r, 20 * round));
        const stopped = agent.stop().then(() => "stopped");
        const outcome = await Promise.race([
          stopped,
          new Promise((r) => setTimeout(() => r("hung"), 15_000)),
        ]);
        assert.equal(outcome, "stopped", `round ${round}: the stop finished`);
        await waitFor(
          `round ${round}: the jails to be gone`,
          () => processesMentioning(agent.stateDir).length === 0,
          3000,
        );
        await rm(agent.stateDir, { recursive: true, force: true });
      }
    });
  });

  describe("a full disk under the state dir", () => {
    let mountPoint: string;
    let mounted = false;
    let agent: TestAgent | undefined;

    before(async function () {
      requireJailHost(this);
      mountPoint = await mkdtemp(path.join(tmpdir(), "faas-full-"));
      await execa("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0711", "tmpfs", mountPoint]);
      mounted = true;
    });

    after(async () => {
      await agent?.stop();
      if (mounted) await execa("umount", [mountPoint], { reject: false });
      if (mountPoint) await rm(mountPoint, { recursive: true, force: true });
    });

    // protection: control-plane maps ENOSPC to 507; unpackBundle removes its staging folder; records are
    // written atomically (temp file + rename), so a failed write leaves the old state
    it("answers deploys that do not fit with 507, keeps every earlier function, and restarts cleanly", async () => {
      agent = await startTestAgent({ FAAS_POOL_GENERIC: "1" }, { stateDir: mountPoint });
      const res0 = await agent.admin(
        "PUT",
        "/v1/functions/hello",
        tarGz([{ name: "index.js", data: HELLO_MODULE }]),
      );
      assert.equal(res0.status, 201, JSON.stringify(res0.json));
      const statuses: number[] = [];
      let full: Awaited<ReturnType<TestAgent["admin"]>> | undefined;
      for (let i = 0; i < 12 && !full; i++) {
        const bundle = tarGz([
          { name: "index.js", data: HELLO_MODULE },
          { name: "noise.bin", data: randomBytes(300 * 1024) },
        ]);
        const res = await agent.admin("PUT", `/v1/functions/filler-${i}`, bundle);
        statuses.push(res.status);
        if (res.status !== 201) full = res;
      }
      assert.ok(full, `the disk filled up (${statuses.join(", ")})`);
      assert.equal(full.status, 507, JSON.stringify(full.json));
      assert.match((full.json.error as { message: string }).message, /state dir is full/);
      const deployed = statuses.filter((s) => s === 201).length;

      // Earlier functions keep serving, and every record on disk is whole JSON.
      assert.equal((await agent.call("hello", HELLO_CALL)).json().result, "Hello world!");
      const recordsDir = path.join(mountPoint, "registry");
      for (const file of await readdir(recordsDir)) {
        assert.ok(file.endsWith(".json") && !file.startsWith("."), `only records in the registry: ${file}`);
        JSON.parse(await readFile(path.join(recordsDir, file), "utf8"));
      }
      assert.deepEqual(
        (await readdir(path.join(mountPoint, "code"))).filter((n) => n.includes(".staging-")),
        [],
        "no half-unpacked folder left",
      );
      const listed = (await agent.admin("GET", "/v1/functions")).json.functions as unknown[];
      assert.equal(listed.length, deployed + 1);

      // The registry loads again after a restart on the full disk, and frees space on delete.
      await agent.stop();
      agent = await startTestAgent({ FAAS_POOL_GENERIC: "1" }, { stateDir: mountPoint });
      assert.deepEqual((await agent.admin("GET", "/v1/functions")).json.functions, listed);
      assert.equal((await agent.call("hello", HELLO_CALL)).json().result, "Hello world!");
    });
  });
});
