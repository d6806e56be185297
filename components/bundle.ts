/**
 * esbuild bundling of a Node entry point into one ESM file, named by the SHA-256 of its bytes.
 * Kept apart from the component so it is tested on a small fixture without Pulumi.
 */
import { createHash } from "node:crypto";
import { build } from "esbuild";
import { HOST_NODE } from "./host-node.ts";

export interface NodeBundle {
  readonly entry: string;
  readonly text: string;
  readonly sha256: string;
  readonly bytes: number;
}

/** Lets CommonJS dependencies inside an ESM bundle call require() for Node built-ins. */
const REQUIRE_SHIM =
  'import { createRequire as __snapfaasCreateRequire } from "node:module";\nconst require = __snapfaasCreateRequire(import.meta.url);';

/** Bundles `entry` for the hosts' Node (components/host-node.ts) unless another esbuild target is given. */
export async function bundleNodeEntry(
  entry: string,
  target: string = HOST_NODE.esbuildTarget,
): Promise<NodeBundle> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: "node",
    format: "esm",
    target,
    write: false,
    minify: false,
    sourcemap: false,
    legalComments: "none",
    // No timestamps or absolute paths in the output, so the same sources give the same hash anywhere.
    banner: { js: REQUIRE_SHIM },
    logLevel: "silent",
  });
  const file = result.outputFiles[0];
  if (!file) throw new Error(`esbuild produced no output for ${entry}`);
  const text = file.text;
  return {
    entry,
    text,
    sha256: createHash("sha256").update(text).digest("hex"),
    bytes: Buffer.byteLength(text),
  };
}

/** Content-addressed key of a bundle in the artifact store. */
export function bundleObjectKey(kind: "host-agent" | "guest-runtime", sha256: string): string {
  return `releases/${kind}/${sha256}.mjs`;
}
