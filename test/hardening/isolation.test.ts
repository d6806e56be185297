/**
 * Isolation, from function code trying to escape, through a real agent: every attempt is denied. The
 * probe runs as a deployed function, so it sees exactly what any user's code sees.
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { cgroupScope, detectCgroups } from "../../host-agent/sandbox/process/cgroups.ts";
import { startTestAgent, type TestAgent } from "../helpers/agent.ts";
import { requireJailHost } from "../helpers/host.ts";
import { tarGz } from "../helpers/tar-builder.ts";

const PROBE = `
const fs = require("node:fs");
const net = require("node:net");
function attempt(fn) { try { return { ok: true, value: fn() }; } catch (e) { return { ok: false, error: e.code || e.message }; } }
function setuidFiles(dir, found) {
  for (const item of attempt(() => fs.readdirSync(dir, { withFileTypes: true })).value || []) {
    const p = dir === "/" ? "/" + item.name : dir + "/" + item.name;
    if (p === "/proc" || p === "/dev") continue;
    if (item.isDirectory()) setuidFiles(p, found);
    else if (item.isFile()) { const st = attempt(() => fs.statSync(p)).value; if (st && (st.mode & 0o6000)) found.push(p); }
  }
  return found;
}
exports.Probe = class Probe {
  read(p) { return attempt(() => fs.readFileSync(p, "utf8").length); }
  list(p) { return attempt(() => fs.readdirSync(p)); }
  write(p) { return attempt(() => fs.writeFileSync(p, "pwned")); }
  chmod(p) { return attempt(() => fs.chmodSync(p, 0o777)); }
  processes() {
    return fs.readdirSync("/proc").filter((p) => /^\\d+$/.test(p))
      .map((pid) => attempt(() => fs.readFileSync("/proc/" + pid + "/cmdline", "utf8").replace(/\\0/g, " ").trim()).value || "?");
  }
  connect(port) {
    return new Promise((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => { s.destroy(); resolve("connected"); });
      s.on("error", (e) => resolve(e.code));
    });
  }
  interfaces() { return Object.keys(require("node:os").networkInterfaces()); }
  privileges() {
    const status = fs.readFileSync("/proc/self/status", "utf8");
    const field = (k) => status.match(new RegExp(k + ":\\\\s+(\\\\S+)"))[1];
    return {
      setuid: attempt(() => process.setuid(0)),
      setgid: attempt(() => process.setgid(0)),
      setgroups: attempt(() => process.setgroups([0])),
      capEff: field("CapEff"), capPrm: field("CapPrm"), capBnd: field("CapBnd"),
      noNewPrivs: field("NoNewPrivs"),
      setuidFiles: setuidFiles("/", []),
    };
  }
  limits() { return fs.readFileSync("/proc/self/limits", "utf8"); }
  burn(ms) {
    const wall0 = Date.now();
    const cpu0 = process.cpuUsage();
    while (Date.now() - wall0 < ms) {}
    const cpu = process.cpuUsage(cpu0);
    return { wallMs: Date.now() - wall0, cpuMs: (cpu.user + cpu.system) / 1000 };
  }
};
`;

const OTHER = "exports.Other = class Other { secret() { return 'the other function'; } };";

const rpc = (method: string, params: unknown[] = []) => ({ jsonrpc: "2.0", method, params, id: 1 });

describe("hardening: isolation from inside a function", function () {
  this.timeout(60_000);
  let agent: TestAgent;
  let otherCodePath: string;

  before(async function () {
    requireJailHost(this);
    agent = await startTestAgent({
      FAAS_INSTANCE_CPU_PERCENT: "25",
      FAAS_INSTANCE_OPEN_FILES: "200",
      FAAS_INSTANCE_FILE_SIZE_MIB: "3",
    });
    for (const [name, code] of [
      ["probe", PROBE],
      ["other", OTHER],
    ] as const) {
      const res = await agent.admin(
        "PUT",
        `/v1/functions/${name}`,
        tarGz([{ name: "index.js", data: code }]),
      );
      assert.equal(res.status, 201, JSON.stringify(res.json));
    }
    const other = (await agent.admin("GET", "/v1/functions/other")).json.function as { codeHash: string };
    otherCodePath = agent.registry.codePath(other.codeHash);
  });

  after(async () => {
    await agent?.close();
  });

  // biome-ignore lint/suspicious/noExplicitAny: the probe answers plain JSON.
  async function probe(method: string, ...params: unknown[]): Promise<any> {
    const res = await agent.call("probe", rpc(`Probe.${method}`, params));
    assert.equal(res.status, 200, res.text);
    return res.json().result;
  }

  // protection: bwrap binds only the baked root: host files are not in the jail at all
  it("cannot read /etc/shadow or /etc/passwd", async () => {
    assert.deepEqual(await probe("read", "/etc/shadow"), { ok: false, error: "ENOENT" });
    assert.deepEqual(await probe("read", "/etc/passwd"), { ok: false, error: "ENOENT" });
  });

  // protection: the state dir is never bound into the jail (only the instance's code and run folders)
  it("cannot see the agent's state dir, its admin token or the registry", async () => {
    const tokenFile = path.join(agent.stateDir, "admin-token");
    await readFile(tokenFile, "utf8").catch(() => undefined);
    for (const p of [
      agent.stateDir,
      tokenFile,
      path.join(agent.stateDir, "registry", "probe.json"),
      path.join(agent.stateDir, "bundles"),
    ]) {
      const res = (await probe("read", p)) as { ok: boolean; error: string };
      assert.deepEqual(res, { ok: false, error: "ENOENT" }, p);
    }
    assert.equal((await probe("list", agent.stateDir)).error, "ENOENT");
  });

  // protection: each instance's /code holds only its own function's files (hard links into its own folder)
  it("cannot read another function's code", async () => {
    assert.deepEqual(await probe("read", path.join(otherCodePath, "index.js")), {
      ok: false,
      error: "ENOENT",
    });
    assert.deepEqual((await probe("list", "/code")).value, ["index.js"]);
    assert.deepEqual(await probe("list", "/run/faas"), { ok: true, value: ["guest.sock"] });
  });

  // protection: bwrap --unshare-pid: only the jail's own processes are visible
  it("sees only its own processes, none of the host's", async () => {
    const procs = (await probe("processes")) as string[];
    assert.ok(procs.length <= 3, `sees ${procs.length} processes: ${procs.join(" | ")}`);
    for (const cmd of procs) assert.match(cmd, /^(bwrap|\/node)\b/, cmd);
  });

  // protection: bwrap --unshare-net: the jail's loopback is its own, the agent's ports are not on it
  it("cannot reach the agent's admin port or data port, and has no network interface but lo", async () => {
    const adminPort = Number(new URL(agent.adminUrl).port);
    const dataPort = Number(new URL(agent.dataUrl).port);
    assert.equal(await probe("connect", adminPort), "ECONNREFUSED", "admin port");
    assert.equal(await probe("connect", dataPort), "ECONNREFUSED", "data port");
    assert.deepEqual(await probe("interfaces"), ["lo"]);
  });

  // protection: code bound read-only (--ro-bind) and sealed 0444/0555 by bundle.ts
  it("cannot write to or chmod its own code, or write the root", async () => {
    for (const p of ["/code/index.js", "/code/new.js", "/node", "/runtime/x"]) {
      assert.equal((await probe("write", p)).ok, false, p);
    }
    assert.equal((await probe("chmod", "/code/index.js")).ok, false);
  });

  // protection: setpriv (own uid, no caps, no_new_privs), bwrap --cap-drop ALL and --disable-userns
  it("cannot gain privileges: setuid/setgid fail, no capabilities, no setuid files (ptrace: no host process is even visible, see above)", async () => {
    const p = await probe("privileges");
    // EINVAL: uid 0 is not even mapped in the jail's user namespace; EPERM: no CAP_SETUID.
    assert.equal(p.setuid.ok, false);
    assert.match(p.setuid.error, /^(EPERM|EINVAL)$/);
    assert.match(p.setgid.error, /^(EPERM|EINVAL)$/);
    assert.equal(p.setgroups.ok, false);
    assert.equal(p.capEff, "0000000000000000");
    assert.equal(p.capPrm, "0000000000000000");
    assert.equal(p.capBnd, "0000000000000000");
    assert.equal(p.noNewPrivs, "1");
    assert.deepEqual(p.setuidFiles, [], "no setuid or setgid file in the jail");
  });

  // protection: bwrap --disable-userns (a native addon could otherwise unshare a user namespace and hold
  // capabilities in it). Node has no unshare(2), so the host enters the jail's namespaces as the jail's own
  // uid and tries what the function's code would.
  it("cannot create a nested user namespace", async function () {
    const mode = detectCgroups();
    if (mode.version !== 1) {
      console.log("      skipped: this check finds the jail through cgroup v1");
      this.skip();
    }
    await probe("read", "/code/index.js");
    const scope = path.join(mode.mounts.pids, "faas", cgroupScope(agent.stateDir));
    let pid: string | undefined;
    for (const item of await readdir(scope, { withFileTypes: true })) {
      if (!item.isDirectory()) continue;
      const id = item.name;
      for (const p of (await readFile(path.join(scope, id, "cgroup.procs"), "utf8"))
        .split("\n")
        .filter(Boolean)) {
        if ((await readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "")).startsWith("/node")) pid = p;
      }
    }
    assert.ok(pid, "found a jailed runtime");
    const uid = Number(/Uid:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, "utf8"))![1]);
    const tryUnshare = await execa(
      "setpriv",
      [
        `--reuid=${uid}`,
        `--regid=${uid}`,
        "--clear-groups",
        "nsenter",
        "-t",
        pid!,
        "-U",
        "--preserve-credentials",
        "unshare",
        "-U",
        "true",
      ],
      { reject: false },
    );
    assert.notEqual(tryUnshare.exitCode, 0, "unshare -U inside the jail's user namespace must fail");
    assert.match(
      tryUnshare.stderr,
      /unshare failed|No space left|Operation not permitted/,
      tryUnshare.stderr,
    );
  });

  // protection: prlimit --nofile and --fsize from FAAS_INSTANCE_OPEN_FILES and _FILE_SIZE_MIB
  it("runs with the configured rlimits", async () => {
    const limits = (await probe("limits")) as string;
    assert.match(limits, /Max open files\s+200\s+200/);
    assert.match(limits, new RegExp(`Max file size\\s+${3 * 1024 * 1024}\\s+${3 * 1024 * 1024}`));
    assert.match(limits, /Max core file size\s+0\s+0/);
  });

  // protection: cgroup cpu quota (cfs_quota_us / cpu.max) from FAAS_INSTANCE_CPU_PERCENT=25
  it("gets about its CPU quota (25% of a core) in a busy loop", async () => {
    const r = (await probe("burn", 1500)) as { wallMs: number; cpuMs: number };
    const share = r.cpuMs / r.wallMs;
    assert.ok(share < 0.4, `used ${(share * 100).toFixed(0)}% of a core (quota 25%)`);
    assert.ok(share > 0.1, `but did run (${(share * 100).toFixed(0)}%)`);
  });
});
