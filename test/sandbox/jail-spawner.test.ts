import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type JailProcess, JailSpawner } from "../../host-agent/sandbox/process/jail-spawner.ts";

const ENV = { PATH: "/usr/bin:/bin" };

function collect(proc: JailProcess): { out: string; err: string; ends: number } {
  const got = { out: "", err: "", ends: 0 };
  proc.stdout.on("data", (d: Buffer) => {
    got.out += d.toString();
  });
  proc.stderr.on("data", (d: Buffer) => {
    got.err += d.toString();
  });
  proc.stdout.on("end", () => got.ends++);
  proc.stderr.on("end", () => got.ends++);
  return got;
}

describe("jail spawner (forks from a worker thread)", () => {
  const spawner = new JailSpawner();
  after(() => spawner.close());

  it("relays stdout and stderr apart, then the exit code, after all output", async () => {
    const proc = spawner.spawn("/bin/sh", ["-c", "echo to-out; echo to-err >&2; exit 3"], ENV);
    const got = collect(proc);
    const exit = await proc.exited;
    assert.deepEqual(exit, { exitCode: 3, signal: null });
    assert.equal(proc.exitCode, 3);
    assert.equal(got.out, "to-out\n");
    assert.equal(got.err, "to-err\n");
    assert.equal(got.ends, 2, "each stream ended once, before the exit resolved");
  });

  it("starts the process as a child of the agent's own process, with exactly the environment given", async () => {
    const proc = spawner.spawn("/bin/sh", ["-c", 'echo "$PPID $HOME"; exec sleep 60'], ENV);
    const got = collect(proc);
    const deadline = Date.now() + 5_000;
    while (!got.out.includes("\n") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(got.out, `${process.pid} \n`, "its parent is this process, HOME was not inherited");
    assert.ok(proc.pid !== undefined);
    const stat = readFileSync(`/proc/${proc.pid}/stat`, "utf8");
    assert.equal(Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]), process.pid);
    proc.kill("SIGKILL");
    assert.deepEqual(await proc.exited, { exitCode: null, signal: "SIGKILL" });
  });

  it("reports a command that cannot be run as an exit with the reason", async () => {
    const proc = spawner.spawn("/nonexistent/jail", [], ENV);
    const got = collect(proc);
    const exit = await proc.exited;
    assert.equal(exit.exitCode, null);
    assert.match(exit.error ?? "", /ENOENT/);
    assert.equal(proc.pid, undefined);
    assert.equal(got.ends, 2);
  });
});
