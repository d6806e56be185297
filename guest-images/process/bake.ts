/**
 * The process sandbox's bake: the guest runtime bundle, its V8 startup snapshot and a read-only root the
 * jail binds as "/" (the node binary, the shared libraries it links, the runtime, empty mount points).
 * The node is the base's pinned release (../bake/pins.ts, fetched by ../node/pinned-node.ts), not the
 * host's: jails run it and it builds the snapshot, while the agent keeps running on the host's node.
 * The base version is a hash of the inputs (node binary, runtime bundle, libraries): same inputs, same
 * version, nothing rebuilt.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, link, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { type NativeAddonAbi, readAddon } from "../../contracts/native-addons.ts";
import {
  PROCESS_BASE_INFO_FILE,
  PROCESS_BASE_ROOT,
  type ProcessBase,
  type ProcessBaseInfo,
} from "../../contracts/process-base.ts";
import { NODE_MAJOR_FOR_BASE, type NodeMajor } from "../bake/pins.ts";
import { sha256File } from "../hash.ts";
import { pinnedNodeOfMajor } from "../node/pinned-node.ts";
import { buildStartupSnapshot, bundleStampedRuntime } from "../runtime/build.ts";

/**
 * Libraries beyond node's own that native addons commonly link (zlib; glibc's librt, libutil, libresolv;
 * libatomic, which gcc adds for 64-bit atomics on some targets): copied from this host when it has them,
 * so an addon that links them loads in the jail. The base lists what it carries (base.json nativeAddons).
 */
export const ADDON_LIBRARIES = [
  "libz.so.1",
  "librt.so.1",
  "libutil.so.1",
  "libresolv.so.2",
  "libatomic.so.1",
];

/** Where this host's dynamic loader finds each of `sonames` (ldconfig's cache); missing ones are left out. */
async function hostLibraries(sonames: readonly string[]): Promise<string[]> {
  const { stdout } = await execa("ldconfig", ["-p"], { reject: false });
  const wantArch = process.arch === "arm64" ? "AArch64" : "x86-64";
  const found = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const m = /^\s*(\S+) \(([^)]*)\) => (\/\S+)$/.exec(line);
    if (m && sonames.includes(m[1]!) && m[2]!.includes(wantArch) && !found.has(m[1]!))
      found.set(m[1]!, m[3]!);
  }
  return [...found.values()];
}

/** What native addons this base can load: its node's ABI, its platform, its glibc and libraries. */
async function addonAbi(nodeBinary: string, libs: readonly string[]): Promise<NativeAddonAbi> {
  const { stdout } = await execa(nodeBinary, [
    "-p",
    "process.versions.node + ' ' + process.versions.modules",
  ]);
  const [nodeVersion, modules] = stdout.trim().split(" ");
  const libc = libs.find((l) => path.basename(l) === "libc.so.6");
  const glibcVersion = libc ? (readAddon(await readFile(libc)).glibcDefined ?? "0") : "0";
  return {
    nodeVersion: nodeVersion!,
    nodeModuleVersion: Number(modules),
    machine: process.arch === "arm64" ? 183 : 62,
    glibcVersion,
    libraries: [...new Set(libs.map((l) => path.basename(l)))].sort(),
  };
}

const MOUNT_POINTS = ["code", "tmp", "proc", "dev", "run/faas", "runtime"];

/**
 * sha256 of a file, remembered by (path, device, inode, size, mtime) in `cacheFile`: the node binary is
 * ~100 MB, and rereading it on every agent start would cost seconds on a cold disk.
 */
async function cachedSha256(file: string, cacheFile: string): Promise<string> {
  const st = await stat(file);
  const key = `${file}:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  let cache: Record<string, string> = {};
  try {
    cache = JSON.parse(await readFile(cacheFile, "utf8")) as Record<string, string>;
  } catch {
    // No cache yet.
  }
  const known = cache[key];
  if (known) return known;
  const hash = await sha256File(file);
  await writeFile(cacheFile, JSON.stringify({ ...cache, [key]: hash }));
  return hash;
}

/** The shared libraries (and loader) a dynamically linked binary needs, from ldd. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await execa("ldd", [binary], { reject: false });
  if (/not a dynamic executable|statically linked/.test(stdout)) return [];
  const libs = new Set<string>();
  for (const line of stdout.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.add(m[1]);
  }
  return [...libs].sort();
}

async function placeFile(src: string, dest: string, mode: number): Promise<void> {
  await mkdir(path.dirname(dest), { recursive: true });
  await copyFile(src, dest);
  await chmod(dest, mode);
}

/**
 * The pinned node into the base: a hard link when the cache is on the same file system (no second
 * 120 MB copy per base), a copy otherwise. The cached release is never written to, so sharing the inode
 * is safe; the jail binds the base read-only either way.
 */
async function placeNode(src: string, dest: string): Promise<void> {
  await mkdir(path.dirname(dest), { recursive: true });
  try {
    await link(src, dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV" && (err as NodeJS.ErrnoException).code !== "EPERM")
      throw err;
    await copyFile(src, dest);
  }
  await chmod(dest, 0o555);
}

/** The node a process base is baked with: the pinned release of `nodeMajor` (default: the process base's). */
export async function processBaseNode(
  nodeMajor: NodeMajor = NODE_MAJOR_FOR_BASE.process,
  log?: (line: string) => void,
): Promise<string> {
  return (await pinnedNodeOfMajor(nodeMajor, log ? { log } : {})).binary;
}

/** Reads a baked base from its folder, or undefined when it is not there (or incomplete). */
export async function readProcessBase(dir: string): Promise<ProcessBase | undefined> {
  const infoFile = path.join(dir, PROCESS_BASE_INFO_FILE);
  if (!existsSync(infoFile)) return undefined;
  const info = JSON.parse(await readFile(infoFile, "utf8")) as ProcessBaseInfo;
  return {
    version: info.version,
    driver: "process",
    dir,
    rootDir: path.join(dir, PROCESS_BASE_ROOT),
    runtimeBuild: info.runtimeBuild,
    nodeVersion: info.nodeVersion,
    ...(info.nativeAddons ? { nativeAddons: info.nativeAddons } : {}),
  };
}

/**
 * Bakes the process base under `outRoot/<version>/` and returns it; returns the existing one when a base
 * with the same inputs is already there. `nodeMajor` picks the pinned Node (NODE_PINS); `runtimeVariant`
 * stamps a different runtime build (for tests of base upgrades); leave it empty otherwise.
 */
export async function bakeProcessBase(
  outRoot: string,
  options: { nodeMajor?: NodeMajor; runtimeVariant?: string; log?: (line: string) => void } = {},
): Promise<ProcessBase> {
  const nodeBinary = await processBaseNode(options.nodeMajor, options.log);
  await mkdir(outRoot, { recursive: true });
  const staging = path.join(outRoot, `.staging-${process.pid}-${Date.now()}`);
  await mkdir(staging, { recursive: true });
  try {
    const root = path.join(staging, PROCESS_BASE_ROOT);
    for (const d of MOUNT_POINTS) await mkdir(path.join(root, d), { recursive: true });
    const runtime = await bundleStampedRuntime(path.join(root, "runtime"), options.runtimeVariant);
    const nodeLibs = await sharedLibraries(nodeBinary);
    const libs = [...new Set([...nodeLibs, ...(await hostLibraries(ADDON_LIBRARIES))])].sort();
    const inputs: Record<string, string> = {
      node: await cachedSha256(nodeBinary, path.join(outRoot, ".file-hashes.json")),
      runtime: runtime.bundleHash,
    };
    for (const lib of libs) inputs[lib] = await sha256File(lib);
    const version = createHash("sha256")
      .update(JSON.stringify(Object.entries(inputs).sort()))
      .digest("hex")
      .slice(0, 24);
    const finalDir = path.join(outRoot, version);
    const existing = await readProcessBase(finalDir);
    if (existing) return existing;

    const snapshotPath = await buildStartupSnapshot(runtime.bundlePath, nodeBinary);
    await placeNode(nodeBinary, path.join(root, "node"));
    // Executable: the kernel refuses an ELF interpreter (ld-linux) without the x bit.
    for (const lib of libs) await placeFile(lib, path.join(root, lib), 0o555);
    await chmod(runtime.bundlePath, 0o444);
    await chmod(snapshotPath, 0o444);
    const info: ProcessBaseInfo = {
      version,
      driver: "process",
      nodeVersion: (await execa(nodeBinary, ["--version"])).stdout.trim(),
      runtimeBuild: runtime.buildId,
      nativeAddons: await addonAbi(nodeBinary, libs),
      inputs,
      createdAt: new Date().toISOString(),
    };
    await writeFile(path.join(staging, PROCESS_BASE_INFO_FILE), `${JSON.stringify(info, null, 2)}\n`);
    await rename(staging, finalDir).catch(async (err: NodeJS.ErrnoException) => {
      // A concurrent bake of the same inputs finished first: keep theirs.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
    return (await readProcessBase(finalDir))!;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
