/**
 * A tiny stand-in for the repository root, with the files the program reads: the agent and runtime entry
 * points (bundled by esbuild) and a recipe folder (hashed into the base image version). The real entry
 * points live in other parts of the project; the program's behaviour does not depend on their content.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface FixtureRepo {
  readonly root: string;
  remove(): Promise<void>;
}

export async function createFixtureRepo(): Promise<FixtureRepo> {
  const root = await mkdtemp(join(tmpdir(), "snapfaas-repo-"));
  await mkdir(join(root, "host-agent"), { recursive: true });
  await mkdir(join(root, "guest-images", "runtime"), { recursive: true });
  await mkdir(join(root, "guest-images", "osv"), { recursive: true });
  await writeFile(join(root, "host-agent", "main.ts"), 'console.log("host agent");\n');
  await writeFile(join(root, "guest-images", "runtime", "main.ts"), 'console.log("guest runtime");\n');
  await writeFile(join(root, "guest-images", "osv", "recipe.json"), '{"kernelArgs":"--nopci"}\n');
  await writeFile(join(root, "package.json"), '{"name":"fixture","private":true}\n');
  return { root, remove: () => rm(root, { recursive: true, force: true }) };
}
