/**
 * A deploy's native addons against its base: every `.node` file in the unpacked code is read and each
 * one that cannot load on the base is named, with why and what the base allows, before an instance tries
 * (a wrong addon would otherwise fail only when the code first requires it, maybe mid-call).
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import {
  AddonFormatError,
  addonProblem,
  type NativeAddonAbi,
  readAddon,
} from "../../contracts/native-addons.ts";
import { someOf } from "../errors.ts";
import { BundleError } from "./bundle.ts";

/** Relative paths of the `.node` files under `root` (symlinks are not followed: the bundle checks those). */
export async function findNativeAddons(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const item of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${item.name}` : item.name;
      if (item.isDirectory()) await walk(child);
      else if (item.isFile() && item.name.endsWith(".node")) out.push(child);
    }
  };
  await walk("");
  return out.sort();
}

/** Throws a BundleError naming every addon in `codeDir` that cannot load on a base with `abi`. */
export async function checkNativeAddons(codeDir: string, abi: NativeAddonAbi): Promise<void> {
  const problems: string[] = [];
  for (const file of await findNativeAddons(codeDir)) {
    try {
      const problem = addonProblem(file, readAddon(await readFile(path.join(codeDir, file))), abi);
      if (problem) problems.push(problem);
    } catch (err) {
      if (!(err instanceof AddonFormatError)) throw err;
      problems.push(`${file} is not a native addon this base can load: ${err.message}`);
    }
  }
  if (problems.length === 0) return;
  throw new BundleError(`native addons that cannot load on this base: ${someOf(problems)}`);
}
