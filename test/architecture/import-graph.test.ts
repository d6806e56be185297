/**
 * The parts of the project (the Pulumi components, the guest images and their bake, the guest runtime,
 * the host agent) agree through contracts, not through each other's internals. This test reads every
 * import of the shipped code and fails when a part reaches into another in a way not listed below.
 * The list is the known debt: each entry is a contract that still lives inside one part instead of in
 * a module of its own that both sides import. It may only shrink: an entry that no longer occurs fails
 * too, so a move that settles one is recorded by deleting its line.
 */
import assert from "node:assert/strict";
import { crossings, relativeImports } from "../helpers/import-graph.ts";

/** `importer -> imported`, repository-relative, one per line of debt. */
const KNOWN_CROSSINGS: readonly string[] = [
  "components/bake-sources.ts -> guest-images/bake/sources.ts",
  "components/config.ts -> guest-images/bake/host-ami.ts",
  "components/config.ts -> guest-images/bake/pins.ts",
  "components/config.ts -> host-agent/release/host-manifest.ts",
  "components/stack-program.ts -> guest-images/bake/firecracker-job.ts",
  "components/user-data.ts -> host-agent/config.ts",
  "components/user-data.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/bake/firecracker-job.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/bake/firecracker-plan.ts -> host-agent/sandbox/firecracker/base-layout.ts",
  "guest-images/bake/firecracker-plan.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/bake/verify.ts -> host-agent/sandbox/driver.ts",
  "guest-images/bake/verify.ts -> host-agent/sandbox/firecracker/base-layout.ts",
  "guest-images/linux/local-image.ts -> host-agent/sandbox/firecracker/config.ts",
  "guest-images/process/bake.ts -> host-agent/sandbox/driver.ts",
  "host-agent/agent.ts -> guest-images/bake/cpu-model.ts",
  "host-agent/agent.ts -> guest-images/bake/verify.ts",
  "host-agent/agent.ts -> guest-images/process/bake.ts",
  "host-agent/cli/cli.ts -> guest-images/node/pinned-node.ts",
  "host-agent/cli/cli.ts -> guest-images/process/bake.ts",
  "host-agent/cli/local-vm-base.ts -> guest-images/linux/local-base.ts",
  "host-agent/registry/code-disks.ts -> guest-images/bake/manifest.ts",
  "host-agent/registry/code-disks.ts -> guest-images/code-disk/build.ts",
  "host-agent/registry/code-disks.ts -> guest-images/code-disk/size.ts",
  "host-agent/registry/code-disks.ts -> guest-images/code-disk/tree.ts",
  "host-agent/release/base-check.ts -> guest-images/process/bake.ts",
];

describe("import graph: parts meet through contracts", () => {
  it("finds relative imports of every form the code uses", () => {
    const found = relativeImports(
      'import a from "./a.ts";\nexport { b } from "../b.ts";\nimport type { C } from "../../c.ts";\nconst d = await import("./d.ts");\nimport e from "node:fs";',
    );
    assert.deepEqual(found.sort(), ["../../c.ts", "../b.ts", "./a.ts", "./d.ts"]);
  });

  it("no part reaches into another beyond the listed debt, and the list holds no settled entry", async () => {
    const actual = await crossings();
    const known = new Set(KNOWN_CROSSINGS);
    const added = actual.filter((c) => !known.has(c));
    const settled = KNOWN_CROSSINGS.filter((c) => !actual.includes(c));
    assert.deepEqual(
      { added, settled },
      { added: [], settled: [] },
      "added: import from a contract module (contracts/) instead of another part's internals; settled: delete the line from KNOWN_CROSSINGS",
    );
  });
});
