/**
 * `faas start` (what `npm start` runs) on a host that is not ready: one line saying what to do, exit 3,
 * before anything is fetched or written. Run as the real command, the way a newcomer runs it.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { PROCESS_SANDBOX_TOOLS } from "../../host-agent/sandbox/process/preflight.ts";
import { isRoot } from "../helpers/host.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FAAS = path.join(REPO, "host-agent/cli/faas.js");

function run(file: string, args: string[], env: Record<string, string>) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
    const child = spawn(file, args, { env: { ...process.env, PORT: "0", ADMIN_PORT: "0", ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c;
    });
    child.stderr.on("data", (c: Buffer) => {
      err += c;
    });
    child.on("error", reject);
    // A start that got past its checks would serve until stopped: never let it outlive the test.
    const timer = setTimeout(() => child.kill("SIGTERM"), 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe("faas start on a host that is not ready", function () {
  this.timeout(90_000);
  let work: string;
  before(async function () {
    if (!isRoot) {
      console.log("      skipped: needs root (without root every jail runs as the agent's own uid)");
      this.skip();
    }
    work = await mkdtemp(path.join(tmpdir(), "faas-start-"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("refuses a state or base folder the jails cannot reach in one line (a mktemp -d parent), creating nothing", async () => {
    // mktemp -d makes its folder 0700: no jail uid can walk through it.
    const parent = path.join(work, "private");
    await execa("mkdir", ["-m", "0700", parent]);
    const stateDir = path.join(parent, "x");
    const res = await run(process.execPath, [FAAS, "start"], { FAAS_STATE_DIR: stateDir });
    assert.equal(res.code, 3, res.err);
    const lines = res.err.trim().split("\n");
    const expected = `faas: the jails cannot reach the state folder ${stateDir}: ${parent} is not searchable by other users. Fix: chmod o+x ${parent}, or set FAAS_STATE_DIR to a folder under /var/lib`;
    assert.ok(lines.includes(expected), res.err);
    assert.ok(!/^\s+at /m.test(res.err), `no stack trace:\n${res.err}`);
    assert.equal(res.out, "", "nothing fetched or baked");
    assert.equal(existsSync(stateDir), false);

    // The same for a base folder of its own (FAAS_BASE_DIR): the jails read the base's root there.
    await chmod(work, 0o711);
    const baseDir = path.join(parent, "bases");
    const base = await run(process.execPath, [FAAS, "start"], {
      FAAS_STATE_DIR: path.join(work, "state-ok"),
      FAAS_BASE_DIR: baseDir,
    });
    assert.equal(base.code, 3, base.err);
    assert.ok(
      base.err.includes(
        `faas: the jails cannot reach the base folder ${baseDir}: ${parent} is not searchable by other users. Fix: chmod o+x ${parent}, or set FAAS_BASE_DIR to a folder under /var/lib\n`,
      ),
      base.err,
    );
    assert.equal(existsSync(baseDir), false);
  });

  it("without bubblewrap, prints the one command that installs every missing package, and exits", async function () {
    // bwrap hidden in a private mount namespace: this host's packages stay as they are.
    const probe = await execa("unshare", ["-m", "--propagation", "private", "true"], { reject: false });
    if (probe.exitCode !== 0) {
      console.log("      skipped: cannot make a private mount namespace (unshare -m) to hide bwrap");
      this.skip();
    }
    const bwrap = (await execa("sh", ["-c", "command -v bwrap"], { reject: false })).stdout.trim();
    if (!bwrap) {
      console.log("      skipped: bubblewrap is not installed here, so there is nothing to hide");
      this.skip();
    }
    const empty = path.join(work, "not-bwrap");
    await writeFile(empty, "");
    await chmod(empty, 0o644);
    const stateDir = path.join(work, "state");
    await chmod(work, 0o711);
    const res = await run(
      "unshare",
      [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        `mount --bind "$0" "$1" && exec "$2" "$3" start`,
        empty,
        bwrap,
        process.execPath,
        FAAS,
      ],
      { FAAS_STATE_DIR: stateDir },
    );
    assert.equal(res.code, 3, res.err);
    assert.deepEqual(res.err.trim().split("\n"), [
      "faas: bubblewrap (bwrap) is not installed. Install them all with: apt-get install -y bubblewrap",
    ]);
    assert.equal(res.out, "");
  });
});

describe("the README's quick start", () => {
  it("installs exactly the Debian packages the process sandbox's preflight asks for, then starts", async () => {
    const readme = await readFile(path.join(REPO, "README.md"), "utf8");
    const quickStart = readme.slice(readme.indexOf("## Quick start"));
    const first = /```sh\n([^\n]+)\n```/.exec(quickStart)?.[1];
    const packages = [...new Set(PROCESS_SANDBOX_TOOLS.map((t) => t.debianPackage))];
    assert.equal(first, `apt-get install -y ${packages.join(" ")} && npm ci && npm start`);
  });
});
