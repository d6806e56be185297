/**
 * A tiny stand-in for the repository root, with the files the program reads: the agent and runtime entry
 * points (bundled by esbuild), stand-ins whose content the program's behaviour does not depend on, and
 * a copy of the real bake sources (guest-images/bake/sources.ts): the program computes the base version
 * from them with the bake's own rule and packs them for the builder.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { bakeSourceFiles } from "../../guest-images/bake/sources.ts";

const REPO = join(import.meta.dirname, "..", "..");

export interface FixtureRepo {
  readonly root: string;
  remove(): Promise<void>;
}

export async function createFixtureRepo(): Promise<FixtureRepo> {
  const root = await mkdtemp(join(tmpdir(), "snapfaas-repo-"));
  for (const file of await bakeSourceFiles(REPO)) {
    await mkdir(dirname(join(root, file)), { recursive: true });
    await copyFile(join(REPO, file), join(root, file));
  }
  await mkdir(join(root, "host-agent"), { recursive: true });
  await mkdir(join(root, "guest-images", "runtime"), { recursive: true });
  await mkdir(join(root, "guest-images", "osv"), { recursive: true });
  await writeFile(join(root, "host-agent", "main.ts"), 'console.log("host agent");\n');
  return { root, remove: () => rm(root, { recursive: true, force: true }) };
}
