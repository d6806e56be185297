/** The QMP client against a real QEMU started paused with no kernel: it answers QMP and nothing else runs. */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { QmpClient, QmpConnectionError, QmpError } from "../../host-agent/sandbox/firecracker/qemu-qmp.ts";
import { makeTempDir, removeDir } from "./helpers.ts";
import { requireQemu } from "./qemu-helpers.ts";

describe("QMP client on a real QEMU (microvm, TCG, -S, no kernel)", function () {
  this.timeout(60_000);
  let dir: string;
  let child: ChildProcess | undefined;
  let socketPath: string;

  before(async function () {
    const qemu = requireQemu(this, false);
    dir = await makeTempDir("qmp");
    socketPath = join(dir, "qmp.sock");
    child = spawn(
      qemu,
      ["-M", "microvm", "-accel", "tcg", "-S", "-nodefaults", "-no-user-config", "-display", "none"].concat([
        "-qmp",
        `unix:${socketPath},server=on,wait=off`,
      ]),
      { stdio: "ignore" },
    );
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await new Promise((resolve) => child!.once("close", resolve));
    }
    await removeDir(dir);
  });

  it("connects (retrying until QEMU listens), runs commands in order, reports QEMU's errors and events", async () => {
    const qmp = await QmpClient.connect(socketPath, 20_000);
    const status = await qmp.execute<{ status: string; running: boolean }>("query-status");
    assert.deepEqual([status.status, status.running], ["prelaunch", false]);
    // Several commands at once still get their own answers, in order.
    const [a, b] = await Promise.all([
      qmp.execute("stop"),
      qmp.execute<{ running: boolean }>("query-status"),
    ]);
    assert.deepEqual(a, {});
    assert.equal(b.running, false);
    await assert.rejects(
      qmp.execute("blockdev-del", { "node-name": "nope" }),
      (err: unknown) => err instanceof QmpError && err.errorClass === "GenericError" && /nope/.test(err.desc),
    );
    await assert.rejects(
      qmp.execute("no-such-command"),
      (err: unknown) => err instanceof QmpError && err.errorClass === "CommandNotFound",
    );
    await qmp.execute("cont");
    assert.equal((await qmp.execute<{ running: boolean }>("query-status")).running, true);
    assert.equal((await qmp.waitForEvent((e) => e.event === "RESUME", 10_000)).event, "RESUME");
    await qmp.execute("quit");
    await qmp.closed;
    await assert.rejects(qmp.execute("query-status"), QmpConnectionError);
  });

  it("names the socket when nothing listens", async () => {
    await assert.rejects(
      QmpClient.connect(join(dir, "absent.sock"), 100),
      /cannot connect to QMP at .*absent\.sock/,
    );
  });
});
