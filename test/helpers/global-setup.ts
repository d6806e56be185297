/**
 * Mocha global setup (.mocharc.json "require"): fetches the process base's pinned node before any test,
 * outside every test's timeout. Many suites bake a process base in a 30 s hook; on a cold cache the
 * first fetch and unpack (about 50 MB) can take longer than that. Reused from the cache afterwards.
 */
import { NODE_MAJOR_FOR_BASE } from "../../guest-images/bake/pins.ts";
import { pinnedNodeOfMajor } from "../../guest-images/node/pinned-node.ts";

export async function mochaGlobalSetup(): Promise<void> {
  try {
    await pinnedNodeOfMajor(NODE_MAJOR_FOR_BASE.process, { log: (line) => console.log(`  ${line}`) });
  } catch (err) {
    console.log(
      `  the process base's pinned node is not available (${(err as Error).message}): suites that bake a base will fail`,
    );
  }
}
