import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { AGENT_GONE_EXIT } from "../../host-agent/sandbox/bound-to-agent.ts";
import { jailCommand } from "../../host-agent/sandbox/process/bwrap-args.ts";
import { requireJailHost } from "../helpers/host.ts";

const LIMITS = { memoryMiB: 256, cpuPercent: 50, pids: 64, tmpMiB: 32, openFiles: 512, fileSizeMiB: 8 };

/** The jail's own command from setpriv up to bwrap, with `tail` run in bwrap's place. */
function chainUpToBwrap(agentPid: number, tail: string[]): { args: string[]; env: Record<string, string> } {
  const cmd = jailCommand({
    rootDir: "/r",
    codeDir: "/c",
    runDir: "/x",
    baseVersion: "v1",
    limits: LIMITS,
    hostId: 65_534,
    agentPid,
    cgroupProcs: [],
  });
  const args = cmd.args.slice(cmd.args.indexOf("setpriv"), cmd.args.indexOf("bwrap"));
  return { args: [...args, ...tail], env: { PATH: cmd.env.PATH!, FAAS_AGENT_PID: cmd.env.FAAS_AGENT_PID! } };
}

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !"ZX".includes(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
  } catch {
    return false;
  }
}

describe("a jail's life is bound to its agent's", () => {
  before(function () {
    requireJailHost(this);
  });

  it("does not run when the agent is no longer its parent by the time it could bind to it", () => {
    // The agent died before setpriv armed the parent-death signal: the jail's parent is now someone else.
    const { args, env } = chainUpToBwrap(process.pid + 1_000_000, ["/bin/echo", "jail ran"]);
    const r = spawnSync(args[0]!, args.slice(1), { env, encoding: "utf8" });
    assert.equal(r.status, AGENT_GONE_EXIT, r.stderr);
    assert.equal(r.stdout, "", "nothing after the check ran");
  });

  it("runs under a live agent, and is killed when that agent is SIGKILLed after the uid drop", async () => {
    // A stand-in agent: a shell that starts the jail's chain as its own child, with its own pid.
    const agent = spawn(
      "/bin/sh",
      ["-c", 'FAAS_AGENT_PID=$$ "$@" & echo $!; wait', "agent", ...chainUpToBwrap(0, ["sleep", "60"]).args],
      { env: { PATH: process.env.PATH ?? "/usr/bin:/bin" }, stdio: ["ignore", "pipe", "inherit"] },
    );
    const jailPid = Number(
      await new Promise<string>((resolve) =>
        agent.stdout!.once("data", (d: Buffer) => resolve(d.toString())),
      ),
    );
    // The jail got past the check and runs its payload as the unprivileged uid.
    const deadline = Date.now() + 5_000;
    while (!readFileSync(`/proc/${jailPid}/cmdline`, "utf8").startsWith("sleep") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.ok(readFileSync(`/proc/${jailPid}/cmdline`, "utf8").startsWith("sleep"), "the jail ran");
    assert.match(readFileSync(`/proc/${jailPid}/status`, "utf8"), /^Uid:\s+65534\b/m);
    agent.kill("SIGKILL");
    const gone = Date.now() + 3_000;
    while (running(jailPid) && Date.now() < gone) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!running(jailPid), `jail ${jailPid} died with its agent`);
  });
});
