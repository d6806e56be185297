/**
 * The process sandbox for real (root + bubblewrap): the jail's shape is checked from inside, by code
 * running in it, and the limits by the kernel's own accounting.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import { GuestClient } from "../../host-agent/guest/client.ts";
import type { SandboxInstance } from "../../host-agent/sandbox/driver.ts";
import {
  createInstanceCgroup,
  detectCgroups,
  STARTING_CPU_WEIGHT,
} from "../../host-agent/sandbox/process/cgroups.ts";
import { ProcessDriver } from "../../host-agent/sandbox/process/driver.ts";
import { testBase } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";

const LIMITS = { memoryMiB: 96, cpuPercent: 100, pids: 16, tmpMiB: 4, openFiles: 128, fileSizeMiB: 2 };

const PROBE = `
const fs = require("node:fs");
const cp = require("node:child_process");
const net = require("node:net");
function attempt(fn) { try { return { ok: true, value: fn() }; } catch (e) { return { ok: false, error: e.code || e.message }; } }
exports.Probe = class Probe {
  facts() {
    return {
      uid: process.getuid(), gid: process.getgid(),
      rootEntries: fs.readdirSync("/").sort(),
      shadow: attempt(() => fs.readFileSync("/etc/shadow", "utf8").length),
      writeCode: attempt(() => fs.writeFileSync("/code/index.js", "pwned")),
      writeRoot: attempt(() => fs.writeFileSync("/node", "pwned")),
      pids: fs.readdirSync("/proc").filter((p) => /^\\d+$/.test(p)).length,
      netIfaces: fs.readFileSync("/proc/net/dev", "utf8").split("\\n").slice(2).filter(Boolean).map((l) => l.split(":")[0].trim()),
      capEff: fs.readFileSync("/proc/self/status", "utf8").match(/CapEff:\\s+(\\w+)/)[1],
      noNewPrivs: fs.readFileSync("/proc/self/status", "utf8").match(/NoNewPrivs:\\s+(\\d)/)[1],
      seccomp: fs.readFileSync("/proc/self/status", "utf8").match(/Seccomp:\\s+(\\d)/)[1],
      fdTargets: fs.readdirSync("/proc/self/fd").map((fd) => attempt(() => fs.readlinkSync("/proc/self/fd/" + fd)).value),
      hostname: require("node:os").hostname(),
    };
  }
  async connect(port) {
    return new Promise((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => { s.destroy(); resolve("connected"); });
      s.on("error", (e) => resolve(e.code));
    });
  }
  fillTmp() { return attempt(() => fs.writeFileSync("/tmp/big", Buffer.alloc(8 * 1024 * 1024))); }
  async forkBomb() {
    let spawned = 0;
    for (let i = 0; i < 40; i++) {
      const child = cp.spawn("/node", ["-e", "setTimeout(()=>{},5000)"], { stdio: "ignore" });
      const ok = await new Promise((resolve) => { child.once("spawn", () => resolve(true)); child.once("error", () => resolve(false)); });
      if (!ok) return { spawned, stopped: true };
      spawned++;
    }
    return { spawned, stopped: false };
  }
  hog() { const keep = []; for (;;) keep.push(Buffer.alloc(8 * 1024 * 1024, 1)); }
};
`;

const LIMITS_FOR_WEIGHT = {
  memoryMiB: 64,
  cpuPercent: 50,
  pids: 16,
  tmpMiB: 4,
  openFiles: 64,
  fileSizeMiB: 4,
};

describe("process sandbox driver (real jails)", function () {
  this.timeout(60_000);
  let state: string;
  let driver: ProcessDriver;
  let code: string;
  const instances: SandboxInstance[] = [];

  before(async function () {
    requireJailHost(this);
    state = await mkdtemp(path.join(tmpdir(), "faas-drv-"));
    code = path.join(state, "fncode");
    await (await import("node:fs/promises")).mkdir(code);
    await writeFile(path.join(code, "index.js"), PROBE);
    driver = new ProcessDriver({
      stateDir: state,
      uidBase: 210_000,
      uidCount: 8,
      log: pino({ level: "silent" }),
    });
    await driver.init();
  });

  after(async () => {
    await driver?.close();
    if (state) await rm(state, { recursive: true, force: true });
  });

  async function probeInstance() {
    const inst = await driver.start({ id: `p${instances.length}`, base: await testBase(), limits: LIMITS });
    instances.push(inst);
    await inst.attachCode({ functionName: "probe", codeHash: "h", hostPath: code });
    const client = new GuestClient(inst.endpoint);
    await client.load({ functionName: "probe", entry: "index.js" });
    const call = async (method: string, params: unknown[] = []) => {
      const res = await client.forward({
        method: "POST",
        path: "/probe",
        headers: {},
        body: Buffer.from(JSON.stringify({ jsonrpc: "2.0", method: `Probe.${method}`, params, id: 1 })),
        signal: AbortSignal.timeout(20_000),
        maxResponseBytes: 1 << 20,
      });
      // biome-ignore lint/suspicious/noExplicitAny: the probe answers plain JSON.
      return JSON.parse(res.body.toString()) as { result: Record<string, any>; error?: { message: string } };
    };
    return { inst, client, call };
  }

  it("runs the guest as an unprivileged user with no capabilities, no network, its own pid namespace and a read-only root", async () => {
    const { call, client } = await probeInstance();
    const f = (await call("facts")).result;
    assert.equal(f.uid, 1000);
    assert.equal(f.capEff, "0000000000000000", "no effective capabilities");
    assert.equal(f.noNewPrivs, "1");
    assert.equal(f.seccomp, "2", "a seccomp filter is in force");
    assert.ok(
      !f.fdTargets.some((t: string | undefined) => t?.includes("seccomp")),
      `the filter's descriptor was closed (${f.fdTargets.join(", ")})`,
    );
    assert.deepEqual(f.rootEntries, ["code", "dev", "lib", "lib64", "node", "proc", "run", "runtime", "tmp"]);
    assert.deepEqual(f.shadow, { ok: false, error: "ENOENT" }, "host files are not there at all");
    assert.equal(f.writeCode.ok, false, "code is read-only");
    assert.equal(f.writeRoot.ok, false, "the root is read-only");
    assert.ok(f.pids <= 3, `sees only its own processes (${f.pids})`);
    assert.deepEqual(f.netIfaces, ["lo"], "no network interface but its own loopback");
    assert.equal(f.hostname, "faas");
    await client.close();
  });

  it("cannot reach the host's loopback (the admin port above all)", async () => {
    const { createServer } = await import("node:net");
    const server = createServer((s) => s.end()).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const port = (server.address() as { port: number }).port;
    try {
      const { call } = await probeInstance();
      assert.equal((await call("connect", [port])).result, "ECONNREFUSED");
    } finally {
      server.close();
    }
  });

  it("runs as a distinct host uid per instance and applies cgroup limits before the runtime starts", async function () {
    if (detectCgroups().version === 0) {
      console.log("      skipped: no usable cgroups on this host");
      this.skip();
    }
    const a = await probeInstance();
    const b = await probeInstance();
    const ps = async (inst: SandboxInstance) => {
      const status = await readFile(`/proc/${await hostPidOf(driver.cgroupPath, inst.id)}/status`, "utf8");
      return Number(/Uid:\s+(\d+)/.exec(status)![1]);
    };
    const [ua, ub] = [await ps(a.inst), await ps(b.inst)];
    assert.ok(ua >= 210_000 && ub >= 210_000 && ua !== ub, `host uids ${ua} and ${ub}`);
    const mode = detectCgroups();
    if (mode.version === 1) {
      const limit = await readFile(
        path.join(mode.mounts.memory, driver.cgroupPath, a.inst.id, "memory.limit_in_bytes"),
        "utf8",
      );
      assert.equal(Number(limit), 96 * 1024 * 1024);
      assert.equal(
        (
          await readFile(path.join(mode.mounts.pids, driver.cgroupPath, a.inst.id, "pids.max"), "utf8")
        ).trim(),
        "16",
      );
    }
  });

  it("starts a background jail at a small CPU share and gives it the full share once it serves", async function () {
    const mode = detectCgroups();
    if (mode.version === 0) {
      console.log("      skipped: no usable cgroups on this host");
      this.skip();
    }
    const weight = (id: string) =>
      mode.version === 2
        ? readFile(path.join(mode.root, driver.cgroupPath, id, "cpu.weight"), "utf8")
        : readFile(path.join(mode.mounts.cpu, driver.cgroupPath, id, "cpu.shares"), "utf8");
    const scope = driver.cgroupPath.slice("faas/".length);
    const starting = await createInstanceCgroup(mode, scope, "weight-probe", LIMITS_FOR_WEIGHT, true);
    try {
      assert.equal(Number(await weight("weight-probe")), mode.version === 2 ? STARTING_CPU_WEIGHT : 102);
    } finally {
      await starting.remove();
    }
    const inst = await driver.start({
      id: "bg-start",
      base: await testBase(),
      limits: LIMITS,
      background: true,
    });
    instances.push(inst);
    assert.equal(Number(await weight(inst.id)), mode.version === 2 ? 100 : 1024, "full share once it serves");
    const waited = await createInstanceCgroup(mode, scope, "weight-probe-2", LIMITS_FOR_WEIGHT);
    try {
      assert.equal(Number(await weight("weight-probe-2")), mode.version === 2 ? 100 : 1024, "a call waits");
    } finally {
      await waited.remove();
    }
  });

  it("caps /tmp, the number of processes, and memory (the instance dies, the host does not)", async function () {
    if (detectCgroups().version === 0) {
      console.log("      skipped: no usable cgroups on this host");
      this.skip();
    }
    const { call, inst } = await probeInstance();
    const tmp = (await call("fillTmp")).result;
    assert.equal(tmp.ok, false, "8 MiB does not fit in a 4 MiB /tmp");
    const bomb = (await call("forkBomb")).result;
    assert.equal(bomb.stopped, true, `the pids limit stopped the fork bomb (at ${bomb.spawned})`);
    assert.ok(bomb.spawned < 16);
    await call("hog").catch(() => undefined);
    const exit = await inst.exited;
    assert.equal(exit.cause, "exited");
    assert.match(exit.reason, /killed by the memory limit \(96 MiB\)/);
  });

  it("destroys an instance completely: process, cgroups and folder", async () => {
    const { inst } = await probeInstance();
    const dir = path.join(state, "run", "instances", inst.id);
    assert.ok(existsSync(dir));
    await inst.destroy("test over");
    const exit = await inst.exited;
    assert.deepEqual([exit.cause, exit.reason], ["destroyed", "stopped by the agent: test over"]);
    assert.ok(!existsSync(dir));
    const mode = detectCgroups();
    if (mode.version === 1) assert.ok(!existsSync(path.join(mode.mounts.pids, driver.cgroupPath, inst.id)));
  });

  it("reclaims what a crashed agent left behind", async () => {
    const leftover = path.join(state, "run", "instances", "ghost");
    await (await import("node:fs/promises")).mkdir(path.join(leftover, "code"), { recursive: true });
    const fresh = new ProcessDriver({
      stateDir: state,
      uidBase: 220_000,
      uidCount: 2,
      log: pino({ level: "silent" }),
    });
    await fresh.init();
    assert.ok(!(await readdir(path.join(state, "run", "instances"))).includes("ghost"));
  });

  // protection: ProcessDriver.close waits for starts in flight, and a start that sees the close removes
  // what it prepared instead of spawning
  it("closing while instances start leaves no folder behind and refuses later starts", async () => {
    const base = await testBase();
    for (const delayMs of [0, 5, 30, 120]) {
      const own = await mkdtemp(path.join(tmpdir(), "faas-drv-close-"));
      const closing = new ProcessDriver({
        stateDir: own,
        uidBase: 230_000,
        uidCount: 6,
        log: pino({ level: "silent" }),
      });
      await closing.init();
      const starts = Array.from({ length: 6 }, (_, i) =>
        closing.start({ id: `c${i}`, base, limits: LIMITS }).then(
          () => "started",
          (err: Error) => err.message,
        ),
      );
      await new Promise((r) => setTimeout(r, delayMs));
      await closing.close();
      const outcomes = await Promise.all(starts);
      assert.deepEqual(
        await readdir(path.join(own, "run", "instances")),
        [],
        `after a close ${delayMs} ms into the starts (${outcomes.join(", ")})`,
      );
      await assert.rejects(
        closing.start({ id: "late", base, limits: LIMITS }),
        /the process sandbox is shutting down/,
      );
      assert.deepEqual(await readdir(path.join(own, "run", "instances")), []);
      await rm(own, { recursive: true, force: true });
    }
  });
});

/** The host pid of the runtime whose in-namespace pid is known: find it through its cgroup's process list. */
async function hostPidOf(cgroupPath: string, instanceId: string): Promise<number> {
  const mode = detectCgroups();
  if (mode.version !== 1) throw new Error("needs v1 here");
  const procs = (await readFile(path.join(mode.mounts.pids, cgroupPath, instanceId, "cgroup.procs"), "utf8"))
    .split("\n")
    .filter(Boolean);
  for (const pid of procs) {
    const cmd = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.startsWith("/node")) return Number(pid);
  }
  throw new Error(`no runtime process in ${instanceId}'s cgroup`);
}
