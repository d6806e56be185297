/**
 * The parts of the project (the Pulumi components, the guest images and their bake, the guest runtime,
 * the host agent) agree through contracts (contracts/), not through each other's internals. This test
 * reads every import of the shipped code and fails when a part reaches into another in a way not
 * listed below. Two lists, both checked both ways (an entry that no longer occurs fails too):
 * TOOLING names the crossings that are one part running another's code on purpose, each with why;
 * KNOWN_CROSSINGS is the debt, contracts that still live inside one part. It may only shrink.
 */
import assert from "node:assert/strict";
import { crossings, relativeImports } from "../helpers/import-graph.ts";

/**
 * `importer -> imported` (a trailing "/" takes a whole folder) that is tooling, not a shared rule: code
 * with I/O that one part runs from another so the two cannot drift apart. A contract never goes here.
 */
const TOOLING: readonly { readonly crossing: string; readonly why: string }[] = [
  {
    crossing: "components/bake-sources.ts -> guest-images/bake/sources.ts",
    why: "the stack ships the files the bake's own import graph says it reads",
  },
  {
    crossing: "components/stack-program.ts -> guest-images/bake/firecracker-job.ts",
    why: "the stack's base version is a dry run of the bake's own job, so the two cannot differ",
  },
  {
    crossing: "host-agent/agent.ts -> guest-images/bake/verify.ts",
    why: "the agent checks a base with the verifier the bake ends with (it hashes every artifact)",
  },
  {
    crossing: "host-agent/agent.ts -> guest-images/process/bake.ts",
    why: "the local agent bakes its process base at start when it is given none",
  },
  {
    crossing: "host-agent/cli/ -> guest-images/",
    why: "the faas CLI is the developer's tool: it builds and bakes local bases",
  },
  {
    crossing: "host-agent/registry/code-disks.ts -> guest-images/code-disk/build.ts",
    why: "the agent builds each function's code disk with the builder that makes the bake's placeholder",
  },
];

function isTooling(actual: string, rule: string): boolean {
  const [from, to] = rule.split(" -> ") as [string, string];
  const [actualFrom, actualTo] = actual.split(" -> ") as [string, string];
  const matches = (file: string, pattern: string) =>
    pattern.endsWith("/") ? file.startsWith(pattern) : file === pattern;
  return matches(actualFrom, from) && matches(actualTo, to);
}

/** `importer -> imported`, repository-relative, one per line of debt. */
const KNOWN_CROSSINGS: readonly string[] = [];

describe("import graph: parts meet through contracts", () => {
  it("finds relative imports of every form the code uses", () => {
    const found = relativeImports(
      'import a from "./a.ts";\nexport { b } from "../b.ts";\nimport type { C } from "../../c.ts";\nconst d = await import("./d.ts");\nimport e from "node:fs";',
    );
    assert.deepEqual(found.sort(), ["../../c.ts", "../b.ts", "./a.ts", "./d.ts"]);
  });

  it("no part reaches into another beyond the tooling and the listed debt, and neither list holds a settled entry", async () => {
    const all = await crossings();
    const unusedTooling = TOOLING.filter((t) => !all.some((c) => isTooling(c, t.crossing))).map(
      (t) => t.crossing,
    );
    assert.deepEqual(unusedTooling, [], "a TOOLING entry no crossing uses: delete it");
    const actual = all.filter((c) => !TOOLING.some((t) => isTooling(c, t.crossing)));
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
