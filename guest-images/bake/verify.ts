import { readFile, stat } from "node:fs/promises";
import path from "node:path";
import { type BaseImage, baseFiles } from "../../contracts/base-layout.ts";
import {
  computeBaseVersion,
  MANIFEST_FILE,
  type Manifest,
  ManifestError,
  normaliseFirecrackerVersion,
  parseManifest,
  type SnapshotVmm,
} from "../../contracts/base-manifest.ts";
import { sha256File } from "../hash.ts";

export interface VerifyOptions {
  /**
   * The Firecracker version this host runs (`firecracker --version` output or "1.16.1"). Required to
   * accept a firecracker base image: a snapshot restores only on the version that wrote it.
   */
  readonly hostFirecrackerVersion?: string;
  /**
   * The VMM this host restores with (the driver config's `vmm`). When set, a firecracker base whose
   * snapshot another VMM wrote is refused (a manifest without `vmm` was written by Firecracker).
   */
  readonly hostVmm?: SnapshotVmm;
  /** When set, the manifest must carry exactly this base version (the release the agent was told). */
  readonly expectedVersion?: string;
  /**
   * This host's CPU model (contracts/base-manifest.ts cpuModelOf of /proc/cpuinfo). When set, a firecracker base
   * baked on another model is refused: its snapshot may not restore, or restore subtly wrong.
   */
  readonly hostCpuModel?: string;
  /**
   * The VM shape the release asks for. When set, a firecracker base whose snapshot fixes another
   * shape is refused: a restore keeps the snapshot's machine, whatever the release says.
   */
  readonly expectedMachine?: { readonly vcpus: number; readonly memMiB: number };
}

export interface VerifiedBaseImage extends BaseImage {
  readonly manifest: Manifest;
}

/** Artifacts a base cannot start without, per driver: a manifest that lacks one is refused. */
export const REQUIRED_ARTIFACTS: Readonly<Record<BaseImage["driver"], readonly string[]>> = {
  firecracker: Object.values(baseFiles)
    .filter((f) => f.neededForRestore)
    .map((f) => f.name),
  process: ["root/node", "root/runtime/runtime.js", "root/runtime/runtime.blob"],
};

export class BaseImageError extends Error {
  override readonly name = "BaseImageError";
}

/**
 * Checks a baked base image directory before the host agent starts anything from it: the manifest
 * is valid, its version is the hash of its inputs, the Firecracker version matches this host's, and
 * every artifact exists with the recorded size and sha256. Throws a BaseImageError that names the
 * directory and the artifact or versions at fault.
 */
export async function verifyBaseImage(dir: string, options: VerifyOptions = {}): Promise<VerifiedBaseImage> {
  const manifestPath = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch {
    throw new BaseImageError(
      `base image ${dir}: no ${MANIFEST_FILE} (not baked, or the bake did not finish)`,
    );
  }
  let manifest: Manifest;
  try {
    manifest = parseManifest(JSON.parse(text), manifestPath);
  } catch (error) {
    const detail = error instanceof ManifestError ? error.message : `${manifestPath} is not JSON`;
    throw new BaseImageError(`base image ${dir}: ${detail}`, { cause: error });
  }

  const fromInputs = computeBaseVersion(manifest.inputs);
  if (manifest.version !== fromInputs) {
    throw new BaseImageError(
      `base image ${dir}: manifest version ${manifest.version} is not the hash of its inputs (${fromInputs}); the manifest was edited or written by another recipe`,
    );
  }
  if (options.expectedVersion !== undefined && options.expectedVersion !== manifest.version) {
    throw new BaseImageError(
      `base image ${dir}: holds base version ${manifest.version}, expected ${options.expectedVersion}`,
    );
  }
  if (manifest.driver === "firecracker" && options.hostVmm !== undefined) {
    const bakedOn = manifest.vmm ?? "firecracker";
    if (bakedOn !== options.hostVmm) {
      const name = (v: SnapshotVmm) => (v === "qemu" ? "QEMU" : "Firecracker");
      throw new BaseImageError(
        `base image ${manifest.version} was snapshotted by ${name(bakedOn)} (vmm "${bakedOn}") but this host restores with ${name(options.hostVmm)} (vmm "${options.hostVmm}"): a snapshot only restores on the VMM that wrote it; set vmm: "${bakedOn}" in the driver config or bake the base on ${name(options.hostVmm)}`,
      );
    }
  }
  if (manifest.driver === "firecracker") {
    const baked = manifest.firecrackerVersion ?? "";
    if (options.hostFirecrackerVersion === undefined) {
      throw new BaseImageError(
        `base image ${manifest.version} needs Firecracker ${baked}, but no host Firecracker version was given`,
      );
    }
    const host = normaliseFirecrackerVersion(options.hostFirecrackerVersion);
    if (host !== baked) {
      throw new BaseImageError(
        `base image ${manifest.version} was baked with Firecracker ${baked} but this host runs Firecracker ${host}: a snapshot only restores on the version that wrote it; install Firecracker ${baked} or bake the base again with ${host}`,
      );
    }
  }

  if (manifest.driver === "firecracker" && options.hostCpuModel !== undefined) {
    if (manifest.cpuModel !== options.hostCpuModel) {
      throw new BaseImageError(
        `base image ${manifest.version} was baked on CPU "${manifest.cpuModel}" but this host has "${options.hostCpuModel}": bake on the fleet's instance type (bake.builderInstanceType = fleet.instanceType)`,
      );
    }
  }
  if (manifest.driver === "firecracker" && options.expectedMachine !== undefined) {
    const want = options.expectedMachine;
    const have = manifest.machine;
    if (have === undefined || have.vcpus !== want.vcpus || have.memMiB !== want.memMiB) {
      const baked = have ? `${have.vcpus} vCPU / ${have.memMiB} MiB` : "an unrecorded machine";
      throw new BaseImageError(
        `base image ${manifest.version} fixes ${baked} but the release asks for ${want.vcpus} vCPU / ${want.memMiB} MiB: bake again with the release's vm settings`,
      );
    }
  }

  const listed = new Set(manifest.artifacts.map((a) => a.name));
  for (const name of REQUIRED_ARTIFACTS[manifest.driver]) {
    if (!listed.has(name)) {
      throw new BaseImageError(
        `base image ${manifest.version}: the manifest lists no ${name}, which a ${manifest.driver} base needs`,
      );
    }
  }

  for (const artifact of manifest.artifacts) {
    const file = path.join(dir, artifact.name);
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) {
      throw new BaseImageError(
        `base image ${manifest.version}: artifact ${artifact.name} is missing (${file})`,
      );
    }
    if (st.size !== artifact.bytes) {
      throw new BaseImageError(
        `base image ${manifest.version}: artifact ${artifact.name} has ${st.size} bytes, manifest says ${artifact.bytes}`,
      );
    }
    const actual = await sha256File(file);
    if (actual !== artifact.sha256) {
      throw new BaseImageError(
        `base image ${manifest.version}: artifact ${artifact.name} has sha256 ${actual}, manifest says ${artifact.sha256}`,
      );
    }
  }
  return { version: manifest.version, driver: manifest.driver, dir, manifest };
}
