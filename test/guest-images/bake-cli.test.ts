import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { firecrackerBaseVersion } from "../../guest-images/bake/firecracker-job.ts";
import { main } from "../../guest-images/bake/main.ts";

const REPO = fileURLToPath(new URL("../..", import.meta.url));

/** Runs the CLI in-process and returns its exit code and what it printed. */
async function runBake(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  const write = process.stdout.write.bind(process.stdout);
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  process.stdout.write = ((chunk: string) => out.push(String(chunk)) > 0) as typeof process.stdout.write;
  try {
    return { code: await main(argv), out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
    process.stdout.write = write;
  }
}

describe("npm run bake: the stack's flags", function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "bake-cli-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const base = () => ["--driver", "firecracker", "--guest", "linux", "--out", dir];

  it("prints, in a dry run, the very version the stack computes for the same guest, VM shape and AMI", async () => {
    const { code, out } = await runBake([
      ...base(),
      "--vcpus",
      "2",
      "--memory-mib",
      "512",
      "--host-ami",
      "ami-0abc1234def567890",
      "--dry-run",
    ]);
    assert.equal(code, 0);
    const version = await firecrackerBaseVersion({
      guest: "linux",
      repoDir: REPO,
      machine: { vcpus: 2, memMiB: 512 },
      hostAmi: "ami-0abc1234def567890",
    });
    assert.ok(out.startsWith(`# base version ${version}\n`), out.slice(0, 200));
    assert.ok(out.includes(`--work ${dir}.work`) || out.includes(`${dir}.work`), "work folder outside OUT");
  });

  it("refuses bad machine and AMI flags with a line naming the flag", async () => {
    for (const [argv, message] of [
      [["--vcpus", "two", "--memory-mib", "512"], "--vcpus must be a positive integer"],
      [["--vcpus", "2"], "give --vcpus and --memory-mib together"],
      [["--host-ami", "ami-XYZ"], "--host-ami must be an AMI id"],
      [["--dry-run", "--rehearse"], "--dry-run and --rehearse exclude each other"],
    ] as const) {
      const { code, err } = await runBake([...base(), ...argv]);
      assert.equal(code, 64, argv.join(" "));
      assert.ok(err.startsWith(message), err);
    }
  });
});
