/**
 * Builds one code disk from the command line (the bake uses it for the empty placeholder disk):
 *   node --import tsx guest-images/code-disk/cli.ts --format rofs|squashfs (--src DIR | --empty) --out FILE
 *        [--gen-rofs-manifest FILE]
 * Prints the image's sha256 and size. --gen-rofs-manifest also writes the tree as an OSv manifest for
 * gen-rofs-img.py (osv/check-rofs-writer.sh compares the two images).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { buildCodeDisk } from "./build.ts";
import { genRofsManifest } from "./rofs.ts";
import { readCodeTree } from "./tree.ts";

const { values } = parseArgs({
  options: {
    format: { type: "string" },
    src: { type: "string" },
    empty: { type: "boolean" },
    out: { type: "string" },
    "gen-rofs-manifest": { type: "string" },
  },
});
const format = values.format;
if (
  (format !== "rofs" && format !== "squashfs") ||
  !values.out ||
  (values.empty ? values.src : !values.src)
) {
  console.error("usage: cli.ts --format rofs|squashfs (--src DIR | --empty) --out FILE");
  process.exit(64);
}
const emptyDir = values.empty ? await mkdtemp(path.join(tmpdir(), "code-disk-empty-")) : undefined;
try {
  const disk = await buildCodeDisk(emptyDir ?? values.src ?? "", path.resolve(values.out), { format });
  console.log(`${disk.sha256}  ${disk.file} (${disk.bytes} bytes, ${disk.format})`);
  const manifestOut = values["gen-rofs-manifest"];
  if (manifestOut && values.src) {
    const src = path.resolve(values.src);
    await writeFile(manifestOut, genRofsManifest(await readCodeTree(src), src));
  }
} finally {
  if (emptyDir) await rm(emptyDir, { recursive: true, force: true });
}
