import { chmod, lstat, mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  type Artifact,
  computeBaseVersion,
  cpuModelOf,
  MANIFEST_FILE,
  type Manifest,
  ManifestSchema,
} from "../../contracts/base-manifest.ts";
import { sha256File } from "../hash.ts";
import { readCpuInfo } from "./cpu-model.ts";
import type { GuestNetwork } from "./firecracker-plan.ts";
import { BaseImageError, verifyBaseImage } from "./verify.ts";

/** One bake, whatever the driver: what goes in, and how to build the artifacts into a directory. */
export interface BakeJob {
  readonly driver: Manifest["driver"];
  readonly guest: Manifest["guest"];
  /** Input name -> sha256. The base version is computed from these alone. */
  readonly inputs: Readonly<Record<string, string>>;
  readonly kernelArgs: string;
  readonly firecrackerVersion?: string;
  /** The VMM the snapshot is taken on (firecracker driver); recorded so a host on the other one refuses it. */
  readonly vmm?: Manifest["vmm"];
  readonly network?: GuestNetwork;
  /** The VM shape the snapshot fixes (firecracker only); a release must ask for exactly this. */
  readonly machine?: Manifest["machine"];
  /** Fills dir (empty, private to this bake) with the artifacts; every regular file becomes one. */
  build(dir: string): Promise<void>;
}

export interface BakeResult {
  readonly dir: string;
  readonly manifest: Manifest;
  /** True when an earlier bake of the same inputs was found intact and nothing was built. */
  readonly reused: boolean;
}

export interface BakeOptions {
  readonly log?: (line: string) => void;
  /** Clock for createdAt (tests pin it). */
  readonly now?: () => Date;
}

/**
 * Recipe inputs -> base version -> (build unless OUT/<version> already verifies) -> manifest.
 * The image appears at OUT/<version>/ in one rename, manifest.json inside it, so a reader never sees
 * a half-written base image; a broken earlier one is rebuilt.
 */
export async function bakeBaseImage(
  outRoot: string,
  job: BakeJob,
  options: BakeOptions = {},
): Promise<BakeResult> {
  const log = options.log ?? (() => {});
  const version = computeBaseVersion(job.inputs);
  const finalDir = path.join(outRoot, version);
  await mkdir(outRoot, { recursive: true });

  const existing = await lstat(path.join(finalDir, MANIFEST_FILE)).catch(() => undefined);
  if (existing) {
    try {
      const verified = await verifyBaseImage(finalDir, {
        expectedVersion: version,
        ...(job.firecrackerVersion ? { hostFirecrackerVersion: job.firecrackerVersion } : {}),
        ...(job.vmm ? { hostVmm: job.vmm } : {}),
      });
      log(`base ${version}: already baked and intact, nothing rebuilt`);
      return { dir: finalDir, manifest: verified.manifest, reused: true };
    } catch (error) {
      if (!(error instanceof BaseImageError)) throw error;
      log(`base ${version}: earlier bake is broken (${error.message}); baking again`);
    }
  }

  // Unique per bake, even for two bakes in one process.
  const partial = await mkdtemp(path.join(outRoot, `.${version}.partial-`));
  // mkdtemp makes 0700; jailed uids must traverse the base directory to reach its root.
  await chmod(partial, 0o755);
  try {
    log(`base ${version}: building ${job.driver}/${job.guest}`);
    await job.build(partial);
    const artifacts = await describeArtifacts(partial);
    const manifest = ManifestSchema.parse({
      version,
      driver: job.driver,
      guest: job.guest,
      inputs: job.inputs,
      artifacts,
      ...(job.firecrackerVersion ? { firecrackerVersion: job.firecrackerVersion } : {}),
      ...(job.vmm ? { vmm: job.vmm } : {}),
      ...(job.machine ? { machine: job.machine } : {}),
      cpuModel: cpuModelOf(await readCpuInfo()),
      kernelArgs: job.kernelArgs,
      ...(job.network
        ? {
            network: {
              tapName: job.network.tapName,
              guestIp: job.network.guestIp,
              hostIp: job.network.hostIp,
              guestMac: job.network.guestMac,
            },
          }
        : {}),
      createdAt: (options.now?.() ?? new Date()).toISOString(),
    } satisfies Manifest);
    await writeFile(path.join(partial, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    // A concurrent bake of the same inputs may have finished first: keep its image (readers may use it).
    const theirs = await verifyBaseImage(finalDir, {
      expectedVersion: version,
      ...(job.firecrackerVersion ? { hostFirecrackerVersion: job.firecrackerVersion } : {}),
      ...(job.vmm ? { hostVmm: job.vmm } : {}),
    }).catch(() => undefined);
    if (theirs) {
      await rm(partial, { recursive: true, force: true });
      log(`base ${version}: a concurrent bake finished first, keeping its image`);
      return { dir: finalDir, manifest: theirs.manifest, reused: true };
    }
    await rm(finalDir, { recursive: true, force: true });
    await rename(partial, finalDir);
    log(`base ${version}: ${artifacts.length} artifacts and ${MANIFEST_FILE} in ${finalDir}`);
    return { dir: finalDir, manifest, reused: false };
  } catch (error) {
    await rm(partial, { recursive: true, force: true });
    throw error;
  }
}

/** Every regular file below dir as {name, sha256, bytes}; anything else is refused (no symlinks in a base). */
async function describeArtifacts(dir: string): Promise<Artifact[]> {
  const out: Artifact[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name);
      const name = path.relative(dir, full).split(path.sep).join("/");
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) {
        out.push({ name, sha256: await sha256File(full), bytes: (await stat(full)).size });
      } else {
        throw new BaseImageError(`bake produced ${name}, which is not a regular file or directory`);
      }
    }
  };
  await walk(dir);
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The CPU the bake ran on (a snapshot restores safely only on the same model). */
export async function cpuModel(): Promise<string> {
  return cpuModelOf(await readCpuInfo());
}
