import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";
import { buildJailerArgs, jailPaths } from "../../host-agent/sandbox/firecracker/jailer-args.ts";
import { isAlive, jailerSpawner, watchPid } from "../../host-agent/sandbox/firecracker/jailer-spawner.ts";
import type { VmmProcess } from "../../host-agent/sandbox/firecracker/vmm-process.ts";
import { waitFor } from "../helpers/wait.ts";
import { makeTempDir, removeDir } from "./helpers.ts";

/** What both jailer doubles do first, as the jailer does: find the jail from the arguments, and make it. */
const MAKE_JAIL_FROM_ARGS = `while [ $# -gt 0 ]; do
  case "$1" in
    --id) id=$2; shift;;
    --chroot-base-dir) base=$2; shift;;
    --exec-file) exe=$(basename "$2"); shift;;
    --) break;;
  esac
  shift
done
root="$base/$exe/$id/root"
mkdir -p "$root"
`;

/**
 * TEST DOUBLE for the jailer: finds the jail from its own arguments, starts a long `sleep` standing in
 * for Firecracker, writes its pid where the jailer writes Firecracker's, and returns (as --daemonize does).
 */
const FAKE_JAILER = `#!/bin/sh
${MAKE_JAIL_FROM_ARGS}sleep 60 </dev/null >/dev/null 2>&1 &
echo $! > "$root/$exe.pid"
`;

/**
 * TEST DOUBLE for a jailer without --daemonize: it execs into the stand-in, which stays our child. The
 * stand-in floods stdout (the guest's serial console) and stderr, then says it got through.
 */
const FOREGROUND_JAILER = `#!/bin/sh
${MAKE_JAIL_FROM_ARGS}echo $$ > "$root/$exe.pid"
exec sh -c 'head -c 134217728 /dev/zero; head -c 200000 /dev/zero | tr "\\0" e >&2; echo >&2; echo "last words" >&2; echo through > "$1/progress"; [ -f "$1/exit" ] && exit 3; exec sleep 60' stand-in "$root"
`;

const FAILING_JAILER = `#!/bin/sh
echo "Failed to create cgroup: no such controller: io" >&2
exit 1
`;

describe("jailer spawner (with a stand-in jailer script)", () => {
  let dir: string;
  const started: VmmProcess[] = [];

  beforeEach(async () => {
    dir = await makeTempDir("spawner");
    await writeFile(join(dir, "jailer"), FAKE_JAILER);
    await writeFile(join(dir, "failing-jailer"), FAILING_JAILER);
    await writeFile(join(dir, "foreground-jailer"), FOREGROUND_JAILER);
    await chmod(join(dir, "foreground-jailer"), 0o755);
    await chmod(join(dir, "jailer"), 0o755);
    await chmod(join(dir, "failing-jailer"), 0o755);
  });
  afterEach(async () => {
    for (const vmm of started.splice(0)) await vmm.kill();
    await removeDir(dir);
  });

  function request(id: string) {
    const paths = jailPaths(join(dir, "jails"), "/usr/local/bin/firecracker", id);
    const jailerArgv = buildJailerArgs({
      id,
      execFile: "/usr/local/bin/firecracker",
      uid: 900_200,
      gid: 900_200,
      chrootBase: join(dir, "jails"),
      newPidNs: true,
      daemonize: true,
      parentCgroup: "snapfaas",
      cgroups: [],
      resourceLimits: [],
      apiSocket: "/run/firecracker.socket",
    });
    return {
      id,
      jailerArgv,
      jailRoot: paths.root,
      apiSocketPath: paths.apiSocket,
      pidFilePath: paths.pidFile,
    };
  }

  it("follows the daemonized process by the pid the jailer wrote, and kills it", async () => {
    const vmm = await jailerSpawner({ jailerPath: join(dir, "jailer"), pollIntervalMs: 10 })(request("vm-1"));
    started.push(vmm);
    assert.ok(vmm.pid && vmm.pid > 1);
    assert.equal(isAlive(vmm.pid), true);
    await vmm.kill();
    const exit = await vmm.exited;
    assert.equal(exit.signal, "SIGKILL");
    assert.equal(isAlive(vmm.pid), false, "gone (or a zombie awaiting a reaping init)");
  });

  // protection: jailerSpawner does not buffer a foreground Firecracker's output: stdout ignored, stderr a
  // bounded tail (a chatty guest must neither stall on a full pipe nor grow the agent)
  it("without --daemonize: a flood of console output neither stalls the VMM nor is kept, and stderr's tail explains the exit", async () => {
    const foreground = (id: string) => {
      const req = request(id);
      return { ...req, jailerArgv: req.jailerArgv.filter((a) => a !== "--daemonize") };
    };
    const spawn = jailerSpawner({ jailerPath: join(dir, "foreground-jailer") });
    const first = foreground("vm-fg1");
    const vmm = await spawn(first);
    started.push(vmm);
    const progress = join(first.jailRoot, "progress");
    await waitFor("the stand-in's progress file", () => existsSync(progress), 5000);
    assert.ok(
      existsSync(progress),
      "the stand-in wrote 128 MiB to stdout and 200 KB to stderr, and was not stopped",
    );
    await vmm.kill();
    assert.match((await vmm.exited).description, /firecracker exited/);

    const second = foreground("vm-fg2");
    await mkdir(second.jailRoot, { recursive: true });
    await writeFile(join(second.jailRoot, "exit"), "");
    const dying = await spawn(second);
    const exit = await dying.exited;
    assert.equal(exit.code, 3);
    assert.match(exit.description, /last words$/);
    assert.ok(exit.description.length < 400, `a bounded tail (${exit.description.length} characters)`);
  });

  it("reports a failing jailer with its stderr", async () => {
    await assert.rejects(
      jailerSpawner({ jailerPath: join(dir, "failing-jailer") })(request("vm-2")),
      /jailer exited with 1: Failed to create cgroup: no such controller: io/,
    );
  });

  it("notices a process that ends on its own", async () => {
    const child = execa("sleep", ["0.2"]);
    const vmm = watchPid(child.pid!, "/nonexistent.sock", 10);
    started.push(vmm);
    await child;
    const exit = await vmm.exited;
    assert.equal(exit.signal, null);
    assert.match(exit.description, /is gone/);
  });
});
