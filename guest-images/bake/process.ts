import { mkdtemp, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { listFiles, sha256File, sha256Files } from "../hash.ts";
import { bakeProcessBase as bakeProcessRoot, processBaseNode, sharedLibraries } from "../process/bake.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import { NODE_MAJOR_FOR_BASE, type NodeMajor } from "./pins.ts";
import { type BakeJob, bakeBaseImage } from "./pipeline.ts";
import { type VerifiedBaseImage, verifyBaseImage } from "./verify.ts";

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Where the runtime bundle sits in the process base (the jail binds root/ as "/"). */
export const PROCESS_RUNTIME_BUNDLE = "root/runtime/runtime.js";

/** What the process sandbox's bake provides to the pipeline. */
export interface ProcessBaseBaker {
  /** Input name -> sha256, known before anything is built (they decide the base version). */
  inputs(): Promise<Record<string, string>>;
  /** Writes the artifacts into outDir (empty); returns their paths relative to outDir. */
  bakeProcessBase(outDir: string): Promise<{ artifacts: string[] }>;
}

/**
 * The real process bake (guest-images/process, guest-images/runtime) behind the pipeline: the read-only
 * root with the base's pinned node, its libraries, the runtime bundle and its V8 startup snapshot, and
 * empty mount points. The pipeline's manifest replaces that bake's own base.json, so there is one base
 * version.
 */
export function processBaker(nodeMajor: NodeMajor = NODE_MAJOR_FOR_BASE.process): ProcessBaseBaker {
  return {
    async inputs() {
      const scratch = await mkdtemp(path.join(tmpdir(), "process-inputs-"));
      try {
        // esbuild output is deterministic: this hash is the bundle the bake will build below.
        const runtime = await bundleStampedRuntime(scratch);
        const node = await processBaseNode(nodeMajor);
        return {
          node: await sha256File(node),
          "node-libs": await sha256Files("/", await sharedLibraries(node)),
          runtime: runtime.bundleHash,
          recipe: await sha256Files(REPO_DIR, [
            path.join(REPO_DIR, "guest-images/process/bake.ts"),
            path.join(REPO_DIR, "guest-images/node/pinned-node.ts"),
            path.join(REPO_DIR, "guest-images/runtime/build.ts"),
            fileURLToPath(import.meta.url),
          ]),
        };
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    },
    async bakeProcessBase(outDir) {
      const scratch = path.join(outDir, ".process-bake");
      try {
        const base = await bakeProcessRoot(scratch, { nodeMajor });
        await rename(base.rootDir, path.join(outDir, "root"));
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
      const files = await listFiles(outDir);
      return { artifacts: files.map((f) => path.relative(outDir, f).split(path.sep).join("/")) };
    },
  };
}

/** The process baker with the process base's own Node major. */
export const PROCESS_BAKER: ProcessBaseBaker = processBaker();

/** The pipeline job for the process driver: no kernel, no Firecracker, guest "process". */
export async function processBakeJob(baker: ProcessBaseBaker = PROCESS_BAKER): Promise<BakeJob> {
  const inputs = await baker.inputs();
  return {
    driver: "process",
    guest: "process",
    inputs,
    kernelArgs: "",
    async build(dir) {
      await baker.bakeProcessBase(dir);
      const bundle = path.join(dir, PROCESS_RUNTIME_BUNDLE);
      const built = await sha256File(bundle).catch(() => "missing");
      if (inputs["runtime"] !== undefined && built !== inputs["runtime"]) {
        throw new Error(
          `the baked runtime bundle (${built}) is not the one the base version was computed from (${inputs["runtime"]})`,
        );
      }
    },
  };
}

/**
 * What the host agent can call at start instead of guest-images/process directly: bake (or reuse) the
 * process base under outRoot through the pipeline and return it verified, with the manifest's version.
 */
export async function processBaseForAgent(
  outRoot: string,
  log?: (line: string) => void,
): Promise<VerifiedBaseImage> {
  const baked = await bakeBaseImage(outRoot, await processBakeJob(), log ? { log } : {});
  return verifyBaseImage(baked.dir, { expectedVersion: baked.manifest.version });
}
