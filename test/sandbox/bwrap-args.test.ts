import assert from "node:assert/strict";
import { BOUND_TO_AGENT_SCRIPT } from "../../host-agent/sandbox/bound-to-agent.ts";
import { preflightLines } from "../../host-agent/sandbox/preflight-report.ts";
import { jailCommand } from "../../host-agent/sandbox/process/bwrap-args.ts";
import { detectCgroups, ownCgroupPaths } from "../../host-agent/sandbox/process/cgroups.ts";
import {
  bwrapDisablesUserns,
  firstUnsearchableAncestor,
  processSandboxProblems,
} from "../../host-agent/sandbox/process/preflight.ts";

const LIMITS = { memoryMiB: 256, cpuPercent: 50, pids: 64, tmpMiB: 32, openFiles: 512, fileSizeMiB: 8 };
const input = {
  rootDir: "/s/base/v1/root",
  codeDir: "/s/run/instances/i1/code",
  runDir: "/s/run/instances/i1/run",
  baseVersion: "v1",
  limits: LIMITS,
  hostId: 200_001,
  agentPid: 4242,
  cgroupProcs: ["/sys/fs/cgroup/memory/faas/i1/cgroup.procs", "/sys/fs/cgroup/pids/faas/i1/cgroup.procs"],
};

/** The argv after `name` up to the next `--`. */
function segment(args: string[], name: string): string[] {
  const i = args.indexOf(name);
  assert.ok(i >= 0, `${name} is in the command`);
  return args.slice(i + 1, args.indexOf("--", i));
}

describe("process sandbox jail command", () => {
  const cmd = jailCommand(input);

  it("joins the cgroups before anything else runs (sh writes its pid, then execs)", () => {
    assert.equal(cmd.file, "/bin/sh");
    assert.match(cmd.args[1]!, /echo \$\$ > "\$f" \|\| exit 97.*exec "\$@"/);
    assert.equal(cmd.env.FAAS_CGROUP_PROCS, input.cgroupProcs.join(":"));
    assert.equal(cmd.args[3], "prlimit");
  });

  it("sets rlimits for open files and file size, and no core dumps", () => {
    assert.deepEqual(segment(cmd.args, "prlimit"), [
      "--nofile=512:512",
      `--fsize=${8 * 1024 * 1024}:${8 * 1024 * 1024}`,
      "--core=0:0",
    ]);
  });

  it("drops to the instance's unprivileged uid/gid with no capabilities and no_new_privs", () => {
    assert.deepEqual(segment(cmd.args, "setpriv"), [
      "--reuid=200001",
      "--regid=200001",
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--pdeathsig=KILL",
    ]);
  });

  it("after the uid drop, runs bwrap only while the agent is still the jail's parent", () => {
    const after = cmd.args.slice(cmd.args.indexOf("--pdeathsig=KILL") + 2, cmd.args.indexOf("bwrap"));
    assert.deepEqual(after, ["/bin/sh", "-c", BOUND_TO_AGENT_SCRIPT, "faas-jail-bound"]);
    assert.equal(cmd.env.FAAS_AGENT_PID, "4242");
  });

  it("unshares every namespace, binds only the root, the code (read-only) and the socket folder", () => {
    const bwrap = segment(cmd.args, "bwrap");
    for (const flag of [
      "--unshare-all",
      "--unshare-user",
      "--disable-userns",
      "--die-with-parent",
      "--new-session",
      "--clearenv",
    ]) {
      assert.ok(bwrap.includes(flag), flag);
    }
    assert.ok(!bwrap.includes("--share-net"), "no network");
    const binds: string[][] = [];
    for (let i = 0; i < bwrap.length; i++) {
      if (["--ro-bind", "--bind", "--dev-bind"].includes(bwrap[i]!)) binds.push(bwrap.slice(i, i + 3));
    }
    assert.deepEqual(binds, [
      ["--ro-bind", input.rootDir, "/"],
      ["--ro-bind", input.codeDir, "/code"],
      ["--bind", input.runDir, "/run/faas"],
    ]);
    const size = bwrap.indexOf("--size");
    assert.deepEqual(bwrap.slice(size, size + 4), ["--size", String(32 * 1024 * 1024), "--tmpfs", "/tmp"]);
    assert.deepEqual(bwrap.slice(bwrap.indexOf("--cap-drop"), bwrap.indexOf("--cap-drop") + 2), [
      "--cap-drop",
      "ALL",
    ]);
  });

  it("runs node from the runtime's startup snapshot with no V8 flags that would invalidate it", () => {
    const tail = cmd.args.slice(cmd.args.lastIndexOf("/node"));
    assert.deepEqual(tail.slice(0, 4), ["/node", "--snapshot-blob", "/runtime/runtime.blob", "--"]);
    assert.ok(tail.includes("unix:/run/faas/guest.sock"));
    assert.equal(tail.filter((a) => a.startsWith("--max")).length, 0);
  });

  it("tells the runtime to skip its warm-up only for a start a call waits for", () => {
    const runtimeArgs = (c: ReturnType<typeof jailCommand>) => c.args.slice(c.args.lastIndexOf("/node"));
    assert.ok(runtimeArgs(jailCommand({ ...input, warmUp: false })).includes("--no-warm-up"));
    assert.ok(!runtimeArgs(jailCommand({ ...input, warmUp: true })).includes("--no-warm-up"));
    assert.ok(!runtimeArgs(cmd).includes("--no-warm-up"), "a generic instance warms up by default");
  });

  it("without root: no setpriv (user namespaces only)", () => {
    assert.ok(!jailCommand({ ...input, hostId: null }).args.includes("setpriv"));
  });

  it("leaves out --disable-userns only for a bwrap that predates it", () => {
    assert.ok(!jailCommand({ ...input, disableUserns: false }).args.includes("--disable-userns"));
    assert.ok(jailCommand({ ...input, disableUserns: true }).args.includes("--disable-userns"));
  });

  it("opens the seccomp filter on fd 3 in sh (as root, before the uid drop) for bwrap to load", () => {
    assert.ok(!cmd.args.includes("--seccomp"), "no filter given, none loaded");
    const filtered = jailCommand({ ...input, seccompFile: "/s/run/seccomp.bpf" });
    assert.equal(filtered.env.FAAS_SECCOMP_FILE, "/s/run/seccomp.bpf");
    assert.match(filtered.args[1]!, /unset FAAS_SECCOMP_FILE; exec "\$@" 3<"\$s"$/);
    const bwrapArgs = segment(filtered.args, "bwrap");
    assert.deepEqual(bwrapArgs.slice(bwrapArgs.indexOf("--seccomp"), bwrapArgs.indexOf("--seccomp") + 2), [
      "--seccomp",
      "3",
    ]);
  });
});

describe("cgroup detection", () => {
  const SELF = "8:pids:/\n4:memory:/svc/agent\n1:cpu,cpuacct:/\n0::/system.slice/faas.service\n";

  it("reads the agent's own cgroup per controller", () => {
    const own = ownCgroupPaths(SELF);
    assert.equal(own.get("memory"), "/svc/agent");
    assert.equal(own.get("cpuacct"), "/");
    assert.equal(own.get(""), "/system.slice/faas.service");
  });

  it("uses v1 controllers, nested under the agent's own cgroups, when v2 has none", () => {
    const mounts = [
      "cgroup2 /sys/fs/cgroup/unified-does-not-exist cgroup2 rw 0 0",
      "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0",
      "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0",
      "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0",
    ].join("\n");
    assert.deepEqual(detectCgroups(mounts, SELF), {
      version: 1,
      mounts: {
        memory: "/sys/fs/cgroup/memory/svc/agent",
        cpu: "/sys/fs/cgroup/cpu",
        pids: "/sys/fs/cgroup/pids",
      },
    });
  });

  it("reports why there are none", () => {
    const mode = detectCgroups("proc /proc proc rw 0 0", SELF);
    assert.equal(mode.version, 0);
  });
});

describe("process sandbox preflight", () => {
  it("names the exact install command for each missing tool", () => {
    const problems = processSandboxProblems({
      isRoot: true,
      cgroups: { version: 1, mounts: { memory: "m", cpu: "c", pids: "p" } },
      has: (t) => t !== "bwrap",
    });
    assert.deepEqual(problems, [
      {
        what: "bubblewrap (bwrap) is not installed",
        fix: "apt-get install -y bubblewrap",
        fatal: true,
        packages: ["bubblewrap"],
      },
    ]);
  });

  it("folds every missing Debian package into one install command, sudo only when not root", () => {
    const problems = processSandboxProblems({
      isRoot: false,
      cgroups: { version: 0, why: "x" },
      has: (t) => t === "prlimit",
    });
    assert.deepEqual(
      preflightLines(
        problems.filter((p) => p.fatal),
        false,
      ),
      [
        "bubblewrap (bwrap) is not installed; setpriv (util-linux) is not installed. Install them all with: sudo apt-get install -y bubblewrap util-linux",
      ],
    );
    const asRoot = processSandboxProblems({
      isRoot: true,
      cgroups: { version: 0, why: "x" },
      has: () => false,
    });
    assert.deepEqual(
      preflightLines(
        asRoot.filter((p) => p.fatal),
        true,
      )
        .at(0)
        ?.split(": ")
        .at(-1),
      "apt-get install -y bubblewrap util-linux",
    );
    // Problems no package fixes keep their own line and fix.
    assert.deepEqual(preflightLines([{ what: "no kvm", fix: "use a metal host", fatal: true }], true), [
      "no kvm. Fix: use a metal host",
    ]);
  });

  it("refuses, as root, a state or base folder below a folder other users cannot search", () => {
    const modes: Record<string, number> = {
      "/": 0o755,
      "/tmp": 0o1777,
      "/tmp/tmp.x": 0o700,
      "/srv/b": 0o700,
    };
    const modeOf = (d: string) => modes[d];
    const blockedAt = firstUnsearchableAncestor("/tmp/tmp.x/state/deeper", modeOf);
    assert.equal(blockedAt, "/tmp/tmp.x", "missing folders are skipped: the agent creates them searchable");
    assert.equal(firstUnsearchableAncestor("/tmp/ok/state", modeOf), undefined);
    // The state folder itself the agent makes 0711; a base folder must be searchable itself.
    assert.equal(firstUnsearchableAncestor("/srv/b", modeOf), undefined);
    assert.equal(firstUnsearchableAncestor("/srv/b", modeOf, true), "/srv/b");
    const facts = { cgroups: { version: 0 as const, why: "x" }, has: () => true };
    const jailFolders = [
      { what: "state folder", variable: "FAAS_STATE_DIR", dir: "/tmp/tmp.x/state", blockedAt },
      { what: "base folder", variable: "FAAS_BASE_DIR", dir: "/srv/b", blockedAt: "/srv/b" },
    ] as const;
    const problems = processSandboxProblems({ ...facts, isRoot: true, jailFolders }).filter((p) => p.fatal);
    assert.deepEqual(problems, [
      {
        what: "the jails cannot reach the state folder /tmp/tmp.x/state: /tmp/tmp.x is not searchable by other users",
        fix: "chmod o+x /tmp/tmp.x, or set FAAS_STATE_DIR to a folder under /var/lib",
        fatal: true,
      },
      {
        what: "the jails cannot reach the base folder /srv/b: /srv/b is not searchable by other users",
        fix: "chmod o+x /srv/b, or set FAAS_BASE_DIR to a folder under /var/lib",
        fatal: true,
      },
    ]);
    // Without root every jail runs as the agent's own uid, which reaches what the agent reaches.
    assert.deepEqual(
      processSandboxProblems({ ...facts, isRoot: false, jailFolders }).filter((p) => p.fatal),
      [],
    );
  });

  it("warns, without failing, when not root", () => {
    const problems = processSandboxProblems({
      isRoot: false,
      cgroups: { version: 0, why: "x" },
      has: () => true,
    });
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.fatal, false);
    assert.match(problems[0]!.what, /not running as root/);
  });

  it("warns, without failing, when bwrap cannot disable nested user namespaces", () => {
    const problems = processSandboxProblems({
      isRoot: true,
      cgroups: { version: 1, mounts: { memory: "m", cpu: "c", pids: "p" } },
      has: () => true,
      bwrapDisablesUserns: false,
    });
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.fatal, false);
    assert.match(problems[0]!.what, /older than 0\.8/);
    assert.equal(bwrapDisablesUserns("    --disable-userns             Disable further use"), true);
    assert.equal(bwrapDisablesUserns("usage: bwrap [OPTIONS...]"), false);
  });
});
