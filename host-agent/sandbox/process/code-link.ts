import type { Dirent } from "node:fs";
import { link, lstat, mkdir, readdir, readlink, symlink } from "node:fs/promises";
import path from "node:path";

/**
 * Makes `src` (a function's read-only code) appear in `dest` (an instance's code folder, bound read-only
 * into the jail) by hard links: constant memory, no copy, and the files stay read-only to the guest.
 * Both folders live in the agent's state dir, so they share a filesystem. The entries of a folder are
 * linked BATCH at a time: each is a round trip to libuv's thread pool, and one after the other they made
 * a big node_modules take 0.1 to 1 s under load.
 */
export async function linkCodeTree(src: string, dest: string): Promise<number> {
  let count = 0;
  const one = async (from: string, to: string, item: Dirent): Promise<void> => {
    const s = path.join(from, item.name);
    const d = path.join(to, item.name);
    if (item.isDirectory()) {
      await mkdir(d);
      await walk(s, d);
    } else if (item.isSymbolicLink()) {
      await symlink(await readlink(s), d);
    } else if (item.isFile()) {
      await link(s, d);
    } else {
      throw new Error(`${s}: ${(await lstat(s)).mode.toString(8)} is not a file, folder or symlink`);
    }
    count++;
  };
  const walk = async (from: string, to: string): Promise<void> => {
    const items = await readdir(from, { withFileTypes: true });
    for (let i = 0; i < items.length; i += BATCH)
      await Promise.all(items.slice(i, i + BATCH).map((item) => one(from, to, item)));
  };
  await walk(src, dest);
  return count;
}

/** Entries of one folder in flight at once (libuv's pool has 4 threads; more keeps them all busy). */
const BATCH = 32;
