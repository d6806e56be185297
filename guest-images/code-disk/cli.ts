/**
 * Builds one code disk from the command line (the bake uses it for the empty placeholder disk):
 *   node --import tsx guest-images/code-disk/cli.ts --format rofs|squashfs (--src DIR | --empty) --out FILE
 *        [--size-mib N | --exact] [--gen-rofs-manifest FILE]
 * The image is padded to the code disk size class (size.ts, 64 MiB unless --size-mib), the size every
 * disk swapped under a restored guest must share with the placeholder; --exact leaves it unpadded.
 * Prints the image's sha256 and size. --gen-rofs-manifest also writes the tree as an OSv manifest for
 * gen-rofs-img.py (osv/check-rofs-writer.sh compares the two images).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { CODE_DISK_SIZE_BYTES } from "../../contracts/code-disk.ts";
import { buildCodeDisk } from "./build.ts";
import { genRofsManifest } from "./rofs.ts";
import { readCodeTree } from "./tree.ts";

const { values } = parseArgs({
  options: {
    format: { type: "string" },
    src: { type: "string" },
    empty: { type: "boolean" },
    out: { type: "string" },
    "size-mib": { type: "string" },
    exact: { type: "boolean" },
    "gen-rofs-manifest": { type: "string" },
  },
});
const format = values.format;
if (
  (format !== "rofs" && format !== "squashfs") ||
  !values.out ||
  (values.empty ? values.src : !values.src)
) {
  console.error(
    "usage: cli.ts --format rofs|squashfs (--src DIR | --empty) --out FILE [--size-mib N | --exact]",
  );
  process.exit(64);
}
const sizeMiB = values["size-mib"];
if (sizeMiB !== undefined && (!/^[1-9]\d{0,5}$/.test(sizeMiB) || values.exact)) {
  console.error("--size-mib takes a whole number of MiB (1 to 999999) and cannot be used with --exact");
  process.exit(64);
}
const sizeBytes = values.exact
  ? undefined
  : sizeMiB === undefined
    ? CODE_DISK_SIZE_BYTES
    : Number(sizeMiB) * 1024 * 1024;
const emptyDir = values.empty ? await mkdtemp(path.join(tmpdir(), "code-disk-empty-")) : undefined;
try {
  const disk = await buildCodeDisk(emptyDir ?? values.src ?? "", path.resolve(values.out), {
    format,
    ...(sizeBytes === undefined ? {} : { sizeBytes }),
  });
  console.log(`${disk.sha256}  ${disk.file} (${disk.bytes} bytes, ${disk.format})`);
  const manifestOut = values["gen-rofs-manifest"];
  if (manifestOut && values.src) {
    const src = path.resolve(values.src);
    await writeFile(manifestOut, genRofsManifest(await readCodeTree(src), src));
  }
} finally {
  if (emptyDir) await rm(emptyDir, { recursive: true, force: true });
}
