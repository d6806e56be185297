/** faas build: the base's Node major is chosen with --node, and only a pinned major is accepted. */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { NODE_PINS } from "../../guest-images/bake/pins.ts";
import { main } from "../../host-agent/cli/cli.ts";
import { requirePinnedNode } from "../helpers/pinned-node.ts";

async function faas(argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...args: unknown[]) => out.push(args.join(" "));
  console.error = (...args: unknown[]) => err.push(args.join(" "));
  try {
    return { code: await main(argv), out, err };
  } finally {
    console.log = log;
    console.error = error;
  }
}

describe("faas build --node", function () {
  this.timeout(120_000);
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "faas-build-"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("refuses a major that is not pinned, naming the pinned ones", async () => {
    const res = await faas(["build", "--node", "20", "--out", work]);
    assert.equal(res.code, 1);
    assert.deepEqual(res.err, ['faas: --node: node major "20" is not pinned: choose one of 22, 24']);
    const bare = await faas(["build", "--out", work, "--node"]);
    // A line that cannot be read is a usage error (exit 2), with the command's usage line.
    assert.equal(bare.code, 2);
    assert.deepEqual(bare.err, [
      "faas build: --node needs a value",
      "usage: faas build [--out <dir>] [--node <major>] [--runtime-variant <name>] [--json] (faas build --help for more)",
    ]);
  });

  it("bakes a base whose node is the chosen pin", async function () {
    await requirePinnedNode(this, 22);
    const res = await faas(["build", "--node", "22", "--out", work]);
    assert.equal(res.code, 0, res.err.join("\n"));
    const m = /^base (\w+) \(node (v[\d.]+), runtime \w+\) in (\S+)$/.exec(res.out.at(-1) ?? "");
    assert.ok(m, `last line: ${res.out.at(-1)}`);
    assert.equal(m[2], `v${NODE_PINS[22].version}`);
    const { stdout } = await execa(path.join(m[3]!, "root", "node"), ["--version"]);
    assert.equal(stdout, `v${NODE_PINS[22].version}`);
  });
});
