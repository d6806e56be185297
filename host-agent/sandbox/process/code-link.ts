import { link, lstat, mkdir, readdir, readlink, symlink } from "node:fs/promises";
import path from "node:path";

/**
 * Makes `src` (a function's read-only code) appear in `dest` (an instance's code folder, bound read-only
 * into the jail) by hard links: constant memory, no copy, and the files stay read-only to the guest.
 * Both folders live in the agent's state dir, so they share a filesystem.
 */
export async function linkCodeTree(src: string, dest: string): Promise<number> {
  let count = 0;
  const walk = async (from: string, to: string): Promise<void> => {
    for (const item of await readdir(from, { withFileTypes: true })) {
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
    }
  };
  await walk(src, dest);
  return count;
}
