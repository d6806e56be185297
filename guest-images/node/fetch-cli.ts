/**
 * The builder-host step that gives a guest recipe its pinned node: fetches (or reuses) the pin of a major
 * through pinned-node.ts and places it at <dest>/bin/node, where the Linux rootfs build and OSv's
 * node-from-host (which reads node from PATH) take it.
 *
 *   node --import tsx guest-images/node/fetch-cli.ts <major> <dest>
 */
import { copyFile, cp, link, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { parseNodeMajor, pinnedNodeOfMajor } from "./pinned-node.ts";

/** Where fetch-cli.ts puts the node binary under its destination folder. */
export function fetchedNodeBinary(dest: string): string {
  return path.join(dest, "bin", "node");
}

export async function fetchNodeInto(
  majorText: string,
  dest: string,
  log: (line: string) => void,
): Promise<string> {
  const node = await pinnedNodeOfMajor(parseNodeMajor(majorText), { log });
  const target = fetchedNodeBinary(dest);
  await mkdir(path.dirname(target), { recursive: true });
  await rm(target, { force: true });
  // A hard link when the cache shares the file system; the cached release is never written to.
  await link(node.binary, target).catch(() => copyFile(node.binary, target));
  // The headers go along: build-rootfs.sh compiles the runtime's native helper against this very node.
  const include = path.join(dest, "include");
  await rm(include, { recursive: true, force: true });
  await cp(path.join(node.dir, "include"), include, { recursive: true });
  return target;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [major, dest] = process.argv.slice(2);
  if (!major || !dest) {
    console.error("usage: fetch-cli.ts <node major> <dest dir>");
    process.exit(2);
  }
  fetchNodeInto(major, path.resolve(dest), (line) => console.log(line)).then(
    (target) => console.log(target),
    (err: Error) => {
      console.error(`fetch-cli: ${err.message}`);
      process.exit(1);
    },
  );
}
