/**
 * The README's microVM quick start, run as written: `FAAS_DRIVER=firecracker FAAS_VMM=qemu faas start`
 * as a child process bakes a Linux base on the QEMU backend (TCG) from the cached guest image, starts
 * the agent on restored microVMs and deploys examples/*; hello-world answers through the data plane
 * from a restored microVM, and SIGINT (Ctrl-C) leaves no QEMU, network namespace or jail behind.
 * Needs root, qemu-system-x86_64 and the cached Linux image (`npm run guest:linux`).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { request } from "undici";
import { localVmHostNames } from "../../host-agent/cli/local-vm-base.ts";
import { makeTempDir, removeDir } from "../firecracker/helpers.ts";
import { linuxImageOrSkip, requireQemu } from "../firecracker/qemu-helpers.ts";
import { freePorts } from "../helpers/child-agent.ts";

const REPO = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
const HELLO = JSON.stringify({ jsonrpc: "2.0", method: "HelloWorldService.helloWorld", params: [], id: 1 });
const CGROUP_HIERARCHIES = ["", "memory", "cpu", "pids"];

async function localNetns(netnsPrefix: string): Promise<string[]> {
  const { stdout } = await execa("ip", ["netns", "list"]);
  return stdout
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(`${netnsPrefix}-`));
}

async function cgroupsLeft(parentCgroup: string): Promise<string[]> {
  const left: string[] = [];
  for (const h of CGROUP_HIERARCHIES) {
    const dir = join("/sys/fs/cgroup", h, parentCgroup);
    if (await stat(dir).catch(() => undefined)) left.push(dir);
  }
  return left;
}

/** QEMU processes whose command line names this test's state dir (their jails live under it). */
async function qemusUnder(stateDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.startsWith("/usr/bin/qemu-system") && cmdline.includes(stateDir)) pids.push(Number(entry));
  }
  return pids;
}

describe("faas start on restored microVMs (QEMU/TCG, Linux guest)", function () {
  this.timeout(900_000);
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let names: ReturnType<typeof localVmHostNames> | undefined;

  before(async function () {
    requireQemu(this, true);
    await linuxImageOrSkip(this);
    dir = await makeTempDir("local-vm-start");
    await execa("chmod", ["0755", dir]);
    names = localVmHostNames(join(dir, "state"));
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (names)
      for (const cgroup of await cgroupsLeft(names.parentCgroup)) await rmdir(cgroup).catch(() => undefined);
    await removeDir(dir);
  });

  /** `faas start` as the README runs it, until it says it is running (or fails the test). */
  async function startFaas(stateDir: string) {
    const [port, adminPort] = await freePorts(2);
    const started = spawn(process.execPath, [join(REPO, "host-agent/cli/faas.js"), "start"], {
      cwd: REPO,
      env: {
        ...process.env,
        FAAS_DRIVER: "firecracker",
        FAAS_VMM: "qemu",
        FAAS_STATE_DIR: stateDir,
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        FAAS_LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = started;
    const run = { child: started, output: "" };
    started.stdout!.on("data", (d: Buffer) => {
      run.output += d.toString();
    });
    started.stderr!.on("data", (d: Buffer) => {
      run.output += d.toString();
    });
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      started.once("exit", (code, signal) => resolve({ code, signal })),
    );
    const t0 = Date.now();
    const running = /faas is running: data plane (\S+), admin API \S+ \(base ([0-9a-f]{64})\)/;
    while (!running.test(run.output)) {
      if (started.exitCode !== null)
        assert.fail(`faas start exited with ${started.exitCode}:\n${run.output}`);
      if (Date.now() - t0 > 600_000) assert.fail(`faas start did not come up in 10 min:\n${run.output}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const [, dataUrl, baseVersion] = running.exec(run.output)!;
    // The same object: its output keeps growing with what faas start prints later.
    return Object.assign(run, {
      exited,
      dataUrl: dataUrl!,
      baseVersion: baseVersion!,
      seconds: (Date.now() - t0) / 1000,
    });
  }

  it("bakes, serves hello-world from a restored microVM with the base's version, and cleans up on SIGINT", async () => {
    const stateDir = join(dir!, "state");
    // An earlier local bake: the new one replaces it.
    const stale = join(stateDir, "local-vm", "bases", "e".repeat(64));
    await mkdir(stale, { recursive: true });
    await writeFile(join(stale, "memory"), "old");
    const first = await startFaas(stateDir);
    console.log(`      faas start (bake + agent + deploys) in ${first.seconds.toFixed(1)} s`);
    const { exited, dataUrl, baseVersion } = first;
    assert.match(first.output, /deployed: .*hello-world/);
    const manifest = JSON.parse(
      await readFile(join(stateDir, "local-vm", "bases", baseVersion, "manifest.json"), "utf8"),
    ) as { version: string; driver: string; guest: string };
    assert.deepEqual(
      [manifest.version, manifest.driver, manifest.guest],
      [baseVersion, "firecracker", "linux"],
    );
    assert.ok((await qemusUnder(stateDir)).length > 0, "the warm pool runs QEMU microVMs");
    assert.deepEqual(
      await readdir(join(stateDir, "local-vm", "bases")),
      [baseVersion],
      "the earlier bake is gone",
    );

    const res = await request(`${dataUrl}/hello-world`, { method: "POST", body: HELLO });
    const body = await res.body.text();
    assert.equal(res.statusCode, 200, body);
    assert.deepEqual(JSON.parse(body), { jsonrpc: "2.0", result: "Hello world!", error: null, id: 1 });
    assert.match(
      String(res.headers["x-faas-base-version"]),
      new RegExp(`^${baseVersion}; runtime=[0-9a-f]+$`),
    );

    first.child.kill("SIGINT");
    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, first.output);
    assert.deepEqual(await qemusUnder(stateDir), [], "no QEMU is left");
    assert.deepEqual(
      await localNetns(names!.netnsPrefix),
      [],
      "the driver's close removed its network namespaces",
    );
    assert.deepEqual(await cgroupsLeft(names!.parentCgroup), [], "the driver's close removed its cgroups");
    const jails = join(stateDir, "local-vm", "jails", "firecracker");
    assert.deepEqual(await readdir(jails).catch(() => []), [], "no jail is left");
  });

  it("SIGKILL of faas start takes its microVMs with it, and the next start reclaims its slots and cgroups", async () => {
    const stateDir = join(dir!, "state");
    const killed = await startFaas(stateDir);
    const qemus = await qemusUnder(stateDir);
    assert.ok(qemus.length > 0, "the warm pool runs QEMU microVMs");
    killed.child.kill("SIGKILL");
    await killed.exited;
    // Each QEMU runs in a PID namespace whose init dies with the agent: gone within a bounded wait (a
    // zombie has no command line, so it counts as gone).
    const deadline = Date.now() + 15_000;
    while ((await qemusUnder(stateDir)).length > 0) {
      if (Date.now() > deadline)
        assert.fail(`QEMU outlived its killed agent: ${(await qemusUnder(stateDir)).join(", ")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok((await cgroupsLeft(names!.parentCgroup)).length > 0, "the killed agent left its cgroups");

    const next = await startFaas(stateDir);
    const res = await request(`${next.dataUrl}/hello-world`, { method: "POST", body: HELLO });
    assert.equal(res.statusCode, 200, await res.body.text());
    const jails = await readdir(join(stateDir, "local-vm", "jails", "firecracker"));
    const vmCgroups = await cgroupsLeft(names!.parentCgroup).then(async (parents) =>
      (await Promise.all(parents.map((p) => readdir(p, { withFileTypes: true })))).flatMap((entries) =>
        entries.filter((e) => e.isDirectory()).map((e) => e.name),
      ),
    );
    for (const id of vmCgroups) assert.ok(jails.includes(id), `cgroup ${id} belongs to a live jail`);
    next.child.kill("SIGINT");
    assert.deepEqual(await next.exited, { code: 0, signal: null }, next.output);
    assert.deepEqual(await qemusUnder(stateDir), [], "no QEMU is left");
    assert.deepEqual(await localNetns(names!.netnsPrefix), [], "no network namespace is left");
    assert.deepEqual(await cgroupsLeft(names!.parentCgroup), [], "no cgroup is left");
  });
});
