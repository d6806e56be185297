/**
 * Checks that a release's base folder is a usable base before any instance is started from it, and then
 * that one instance started from it really reports that base version. Kept behind two small function
 * types so a stricter verifier (a signed manifest, per-file hashes) can replace the folder check later.
 */
import { constants } from "node:fs";
import { access, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { parseNativeAddonAbi } from "../../contracts/native-addons.ts";
import { PROCESS_BASE_INFO_FILE, PROCESS_BASE_ROOT, type ProcessBase } from "../../contracts/process-base.ts";
import { GuestClient } from "../guest/client.ts";
import type { BaseImage, SandboxDriver, SandboxInstance, SandboxLimits } from "../sandbox/driver.ts";
import { assertTraversable } from "../sandbox/process/driver.ts";
import { type Release, ReleaseError } from "./release.ts";

/** Turns a release into the base image it names, or throws ReleaseError naming the field at fault. */
export type BaseChecker = (release: Release) => Promise<BaseImage>;

/** Starts one instance of `base` and proves it serves that base version; throws when it does not. */
export type BaseProbe = (base: BaseImage) => Promise<void>;

/** Files the process sandbox's root must hold for the jail to start the runtime from its snapshot. */
const PROCESS_ROOT_FILES = ["node", "runtime/runtime.js", "runtime/runtime.blob"];

/** The process driver's folder check (contracts/process-base.ts): base.json parses, names the release's version, root has its files. */
export const checkProcessBase: BaseChecker = async (release) => {
  const dir = path.resolve(release.baseDir);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new ReleaseError("baseDir", `${dir} is not a folder`);
  const infoFile = path.join(dir, PROCESS_BASE_INFO_FILE);
  let text: string;
  try {
    text = await readFile(infoFile, "utf8");
  } catch {
    throw new ReleaseError("baseDir", `${infoFile} is missing: is ${dir} a baked base (faas build)?`);
  }
  let info: {
    version?: unknown;
    driver?: unknown;
    runtimeBuild?: unknown;
    nodeVersion?: unknown;
    nativeAddons?: unknown;
  };
  try {
    info = JSON.parse(text) as typeof info;
  } catch (err) {
    throw new ReleaseError("baseDir", `${infoFile} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof info !== "object" || info === null || typeof info.version !== "string") {
    throw new ReleaseError("baseDir", `${infoFile} has no "version" string`);
  }
  if (info.driver !== "process") {
    throw new ReleaseError(
      "baseDir",
      `${infoFile} is a ${String(info.driver)} base; this agent runs process`,
    );
  }
  if (info.version !== release.baseVersion) {
    throw new ReleaseError(
      "baseVersion",
      `is ${release.baseVersion} but ${infoFile} says the folder holds base ${info.version}`,
    );
  }
  const rootDir = path.join(dir, PROCESS_BASE_ROOT);
  for (const file of PROCESS_ROOT_FILES) {
    const full = path.join(rootDir, file);
    const fst = await stat(full).catch(() => undefined);
    if (!fst?.isFile() || fst.size === 0) {
      throw new ReleaseError("baseDir", `${full} is missing or empty: the base is incomplete`);
    }
  }
  await access(path.join(rootDir, "node"), constants.X_OK).catch(() => {
    throw new ReleaseError("baseDir", `${path.join(rootDir, "node")} is not executable`);
  });
  // As root every instance runs as its own uid, which must be able to reach the root it binds.
  if (process.getuid?.() === 0) {
    await assertTraversable(path.join(rootDir, "node")).catch((err: Error) => {
      throw new ReleaseError("baseDir", err.message);
    });
  }
  // What addons the base loads: a roll checks the deployed functions' against it.
  const nativeAddons = info.nativeAddons === undefined ? undefined : parseNativeAddonAbi(info.nativeAddons);
  if (typeof nativeAddons === "string")
    throw new ReleaseError("baseDir", `${infoFile}: "nativeAddons" ${nativeAddons}`);
  const base: ProcessBase = {
    version: info.version,
    driver: "process",
    dir,
    rootDir,
    runtimeBuild: typeof info.runtimeBuild === "string" ? info.runtimeBuild : "unknown",
    nodeVersion: typeof info.nodeVersion === "string" ? info.nodeVersion : "unknown",
    ...(nativeAddons ? { nativeAddons } : {}),
  };
  return base;
};

/** The real probe: one instance from the driver, its /_faas/health, then gone. */
export function driverProbe(deps: {
  driver: SandboxDriver;
  limits: SandboxLimits;
  newInstanceId: () => string;
  clientFor?: (sandbox: SandboxInstance) => GuestClient;
  timeoutMs?: number;
}): BaseProbe {
  return async (base) => {
    const sandbox = await deps.driver.start({ id: deps.newInstanceId(), base, limits: deps.limits });
    const client = deps.clientFor?.(sandbox) ?? new GuestClient(sandbox.endpoint);
    try {
      const health = await client.health(AbortSignal.timeout(deps.timeoutMs ?? 5000));
      if (health.baseVersion !== base.version) {
        throw new Error(
          `an instance of the new base reports base ${health.baseVersion}, not ${base.version} (runtime ${health.runtimeBuild})`,
        );
      }
    } finally {
      await client.close();
      await sandbox.destroy("base probe done");
    }
  };
}
