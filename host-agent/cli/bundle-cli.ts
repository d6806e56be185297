/**
 * Bundles one function folder as `faas deploy` would, into a folder (the bake's hello-world code disk
 * is built from it):
 *   node --import tsx host-agent/cli/bundle-cli.ts <function dir> <out dir>
 */
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { bundleFunctionInto } from "./pack.ts";

const [src, out] = process.argv.slice(2);
if (!src || !out) {
  console.error("usage: bundle-cli.ts <function dir> <out dir>");
  process.exit(2);
}
await mkdir(path.resolve(out), { recursive: true });
await bundleFunctionInto(path.resolve(src), path.resolve(out)).catch((err: Error) => {
  console.error(`bundle-cli: ${err.message}`);
  process.exit(1);
});
console.log(path.join(path.resolve(out), "index.js"));
