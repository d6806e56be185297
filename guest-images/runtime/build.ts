/**
 * Builds the guest runtime: one CommonJS bundle (esbuild) and its V8 startup snapshot
 * (`node --build-snapshot`), the process sandbox's base snapshot. The snapshot is tied to the exact node
 * binary that built it, so it is built with the node that runs the agent.
 */
import { createHash } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { execa } from "execa";

export const RUNTIME_ENTRY = fileURLToPath(new URL("./main.ts", import.meta.url));

export interface RuntimeBuild {
  readonly bundlePath: string;
  readonly snapshotPath: string;
  /** sha256 of the stamped bundle. */
  readonly bundleHash: string;
  /** Short hash of the runtime's source bundle: what the runtime reports as its build. */
  readonly buildId: string;
}

/** Bundles the runtime; `buildId` is stamped into it (reported by /_faas/health and every answer). */
export async function bundleRuntime(outFile: string, buildId?: string): Promise<string> {
  const define: Record<string, string> = {};
  if (buildId !== undefined) define.__RUNTIME_BUILD__ = JSON.stringify(buildId);
  const result = await build({
    entryPoints: [RUNTIME_ENTRY],
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    write: false,
    legalComments: "none",
    define,
  });
  const code = result.outputFiles[0]!.contents;
  await mkdir(path.dirname(outFile), { recursive: true });
  await writeFile(`${outFile}.tmp`, code);
  await rename(`${outFile}.tmp`, outFile);
  return createHash("sha256").update(code).digest("hex");
}

/** Bundle (runtime.js) into `outDir`, stamped with its build id. */
export async function bundleStampedRuntime(
  outDir: string,
  variant = "",
): Promise<{ bundlePath: string; bundleHash: string; buildId: string }> {
  const bundlePath = path.join(outDir, "runtime.js");
  // The build id is the hash of the unstamped bundle, so it names the runtime source, not the stamp.
  const probe = path.join(outDir, "runtime.unstamped.js");
  const sourceHash = await bundleRuntime(probe);
  await rm(probe, { force: true });
  const buildId = variant ? `${sourceHash.slice(0, 16)}-${variant}` : sourceHash.slice(0, 16);
  const bundleHash = await bundleRuntime(bundlePath, buildId);
  return { bundlePath, bundleHash, buildId };
}

/** The V8 startup snapshot of a runtime bundle, made by (and only loadable by) `nodeBinary`. */
export async function buildStartupSnapshot(
  bundlePath: string,
  nodeBinary = process.execPath,
): Promise<string> {
  const snapshotPath = bundlePath.replace(/\.js$/, ".blob");
  await rm(snapshotPath, { force: true });
  await execa(nodeBinary, ["--snapshot-blob", snapshotPath, "--build-snapshot", bundlePath], {
    cwd: path.dirname(bundlePath),
  });
  return snapshotPath;
}

/** Bundle + startup snapshot into `outDir` (runtime.js, runtime.blob). */
export async function buildRuntime(
  outDir: string,
  nodeBinary = process.execPath,
  variant = "",
): Promise<RuntimeBuild> {
  const bundle = await bundleStampedRuntime(outDir, variant);
  const snapshotPath = await buildStartupSnapshot(bundle.bundlePath, nodeBinary);
  return { ...bundle, snapshotPath };
}
