import { chmod, copyFile, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { sha256File, sha256Files, sha256Text } from "../hash.ts";
import type { BakeJob } from "./pipeline.ts";

/**
 * What the process sandbox's own bake provides to the pipeline. guest-images/process (the lead's)
 * implements it for real; STAND_IN_PROCESS_BAKER below is used until it is wired in.
 */
export interface ProcessBaseBaker {
  /** Input name -> sha256, known before anything is built (they decide the base version). */
  inputs(): Promise<Record<string, string>>;
  /** Writes the artifacts into outDir (empty); returns their paths relative to outDir. */
  bakeProcessBase(outDir: string): Promise<{ artifacts: string[] }>;
}

/** The shared objects a binary loads, from `ldd` (absolute host paths; the vDSO has none). */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await execa("ldd", [binary]);
  const libs = new Set<string>();
  for (const line of stdout.split("\n")) {
    const match = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (match?.[1]) libs.add(match[1]);
  }
  return [...libs].sort();
}

/**
 * Copies node and its shared libraries into rootDir at the paths the dynamic loader expects, node
 * itself at /bin/node. Files, not symlinks, so the folder can be bound read-only as / anywhere.
 */
export async function populateNodeRoot(rootDir: string, nodeBinary = process.execPath): Promise<string[]> {
  const copied: string[] = [];
  const put = async (from: string, to: string): Promise<void> => {
    const target = path.join(rootDir, to);
    await mkdir(path.dirname(target), { recursive: true });
    await copyFile(from, target);
    copied.push(path.relative(rootDir, target));
  };
  await put(nodeBinary, "bin/node");
  await chmod(path.join(rootDir, "bin/node"), 0o755);
  for (const lib of await sharedLibraries(nodeBinary)) await put(lib, lib);
  // Empty mount points, so the sandbox can bind /proc, /dev, /tmp and the code over a read-only root.
  for (const dir of ["proc", "dev", "tmp", "code"]) await mkdir(path.join(rootDir, dir), { recursive: true });
  return copied;
}

// ---------------------------------------------------------------------------------------------------
// TEMPORARY STAND-IN until guest-images/process (the real runtime bundle + snapshot bake) is merged.
// It produces the same artifact layout with a placeholder runtime that only proves the V8 startup
// snapshot loads: runtime.cjs, snapshot.blob, root/ (node + ldd libraries).
// ---------------------------------------------------------------------------------------------------
const STAND_IN_RUNTIME = `"use strict";
// snapfaas STAND-IN runtime: replaced by the guest runtime bundle from guest-images/runtime.
const v8 = require("node:v8");
v8.startupSnapshot.setDeserializeMainFunction(() => {
  console.log("snapfaas stand-in runtime: started from the startup snapshot");
});
`;

export const STAND_IN_PROCESS_BAKER: ProcessBaseBaker = {
  async inputs() {
    const libs = await sharedLibraries(process.execPath);
    return {
      node: await sha256File(process.execPath),
      "node-libs": await sha256Files("/", libs),
      runtime: sha256Text(STAND_IN_RUNTIME),
      recipe: await sha256File(fileURLToPath(import.meta.url)),
    };
  },
  async bakeProcessBase(outDir) {
    await writeFile(path.join(outDir, "runtime.cjs"), STAND_IN_RUNTIME);
    await execa(process.execPath, ["--snapshot-blob", "snapshot.blob", "--build-snapshot", "runtime.cjs"], {
      cwd: outDir,
    });
    const root = await populateNodeRoot(path.join(outDir, "root"));
    return { artifacts: ["runtime.cjs", "snapshot.blob", ...root.map((p) => `root/${p}`)] };
  },
};

/** The pipeline job for the process driver: no kernel, no Firecracker, guest "process". */
export async function processBakeJob(baker: ProcessBaseBaker = STAND_IN_PROCESS_BAKER): Promise<BakeJob> {
  return {
    driver: "process",
    guest: "process",
    inputs: await baker.inputs(),
    kernelArgs: "",
    async build(dir) {
      await baker.bakeProcessBase(dir);
    },
  };
}
