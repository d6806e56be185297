/**
 * The Linux guest image (kernel + root filesystem) built on this machine, for the QEMU/TCG lane and
 * anything else that boots the real guest without a builder host: the same recipe scripts as the
 * bake (build-kernel.sh, build-rootfs.sh), cached outside the repository under
 * `${SNAPFAAS_CACHE_DIR:-$HOME/.cache/snapfaas}`, keyed by the hash of every input, so a cached
 * artifact is only reused when nothing it was built from changed.
 *
 *   linux-kernel/<key>/vmlinux      key: Debian source package pin + Firecracker config + fragment + script
 *   linux-kernel/work/              the unpacked, built tree (a config change rebuilds only what it touches)
 *   linux-kernel/downloads/         the linux-source-6.1 .deb
 *   linux-kernel/logs/<key>.log     the build log
 *   linux-rootfs/<key>/rootfs.img   key: node + its headers and libraries + busybox + runtime bundle +
 *                                   init scripts + the native helper's source + g++ and mksquashfs versions
 * The guest's node is the Linux base's pinned release (NODE_PINS[NODE_MAJOR_FOR_BASE.linux], guest-images/node/pinned-node.ts).
 */
import { spawn } from "node:child_process";
import { closeSync, constants, existsSync, openSync } from "node:fs";
import {
  access,
  mkdir,
  mkdtemp,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { canonicalJson } from "../../contracts/canonical-json.ts";
import { parseFirecrackerDriverConfig } from "../../contracts/firecracker-driver-config.ts";
import { FIRECRACKER_PIN } from "../../contracts/firecracker-release.ts";
import { type GuestNetwork, guestNetworkOf } from "../bake/firecracker-plan.ts";
import { LINUX_KERNEL_PIN, NODE_MAJOR_FOR_BASE, NODE_PINS } from "../bake/pins.ts";
import { listFiles, sha256File, sha256Files, sha256Text } from "../hash.ts";
import { snapfaasCacheDir } from "../node/cache-dir.ts";
import { pinnedNode } from "../node/pinned-node.ts";
import { sharedLibraries } from "../process/bake.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import { linuxKernelArgs } from "./recipe.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const KERNEL_SCRIPT = path.join(HERE, "build-kernel.sh");
const KERNEL_FRAGMENT = path.join(HERE, "kernel.config");
/** Files build-rootfs.sh copies or runs besides node and busybox (the native helper is compiled from source). */
const ROOTFS_SOURCES = [
  "linux/build-rootfs.sh",
  "linux/init.sh",
  "linux/remount-code.sh",
  "runtime/native/build-native.sh",
  "runtime/native/guest-native.cc",
].map((f) => path.join(HERE, "..", f));
const BUSYBOX = "/bin/busybox";
/** Roughly what `make vmlinux` compiles with this config (6.1.192: 2,3xx), for progress lines. */
const KERNEL_BUILD_FILES = 2300;

/** Something the image needs is not on this machine; the message says what and how to get it. */
export class LinuxImageUnavailable extends Error {
  override readonly name = "LinuxImageUnavailable";
}

/** A build step failed; the message names the step and its log. */
export class LinuxImageBuildError extends Error {
  override readonly name = "LinuxImageBuildError";
}

export interface LinuxGuestImage {
  /** Uncompressed vmlinux (PVH ELF): what Firecracker boots and QEMU boots with -kernel. */
  readonly kernel: string;
  /** Read-only squashfs root (/dev/vda). */
  readonly rootfs: string;
  /** The recipe's own kernel arguments for the driver's default network (no TCG additions). */
  readonly bootArgs: string;
  /** What the runtime in this rootfs answers as `runtimeBuild` on /_faas/health. */
  readonly runtimeBuild: string;
  /** `node --version` of the guest's node. */
  readonly nodeVersion: string;
  readonly kernelKey: string;
  readonly rootfsKey: string;
}

export interface LinuxImageOptions {
  /** The guest's node binary. Default: guestNodeBinary(). */
  readonly nodeBinary?: string;
  /** The network the boot arguments configure. Default: the firecracker driver's default slots. */
  readonly network?: GuestNetwork;
  /** Where SNAPFAAS_CACHE_DIR (the cache root, else ~/.cache/snapfaas) and FIRECRACKER_GUEST_CONFIG come from. */
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (line: string) => void;
}

const cacheRoot = snapfaasCacheDir;

/** The node put into the guest: the Linux base's pinned release (fetched from the npm registry once). */
export async function guestNodeBinary(
  env: NodeJS.ProcessEnv = process.env,
  log?: (line: string) => void,
): Promise<string> {
  return (
    await pinnedNode(NODE_PINS[NODE_MAJOR_FOR_BASE.linux], {
      cacheRoot: cacheRoot(env),
      ...(log ? { log } : {}),
    })
  ).binary;
}

/**
 * Firecracker's 6.1 guest config at the pinned tag: FIRECRACKER_GUEST_CONFIG, else the vendored copy
 * in ../shared/vendor beside the checkout (builds here and in CI cannot reach GitHub). Undefined when
 * neither exists.
 */
export function firecrackerGuestConfig(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.FIRECRACKER_GUEST_CONFIG) return path.resolve(env.FIRECRACKER_GUEST_CONFIG);
  const vendored = path.resolve(
    REPO,
    "..",
    "shared",
    "vendor",
    LINUX_KERNEL_PIN.firecrackerConfigFile(FIRECRACKER_PIN.version),
  );
  return existsSync(vendored) ? vendored : undefined;
}

function requireFirecrackerConfig(env: NodeJS.ProcessEnv): string {
  const config = firecrackerGuestConfig(env);
  if (config && !existsSync(config)) {
    throw new LinuxImageUnavailable(`FIRECRACKER_GUEST_CONFIG names no file: ${config}`);
  }
  if (!config) {
    throw new LinuxImageUnavailable(
      `no Firecracker guest kernel config: set FIRECRACKER_GUEST_CONFIG to ${LINUX_KERNEL_PIN.firecrackerConfigFile(FIRECRACKER_PIN.version)} (${LINUX_KERNEL_PIN.firecrackerConfig(FIRECRACKER_PIN.version)}) or put it in ../shared/vendor/`,
    );
  }
  return config;
}

/** Cache key of the kernel: every input of build-kernel.sh, so a cached vmlinux is never stale. */
export async function kernelKey(firecrackerConfig: string): Promise<string> {
  return sha256Text(
    canonicalJson({
      source: {
        package: LINUX_KERNEL_PIN.package,
        version: LINUX_KERNEL_PIN.version,
        sha256: LINUX_KERNEL_PIN.debSha256,
      },
      firecrackerConfig: await sha256File(firecrackerConfig),
      fragment: await sha256File(KERNEL_FRAGMENT),
      script: await sha256File(KERNEL_SCRIPT),
    }),
  ).slice(0, 16);
}

const fileExists = (file: string) =>
  access(file, constants.R_OK).then(
    () => true,
    () => false,
  );

/** The pinned linux-source .deb: the cache's copy, apt's archive cache, or `apt-get download`. */
async function kernelSourceDeb(cache: string, log: (line: string) => void): Promise<string> {
  const name = `${LINUX_KERNEL_PIN.package}_${LINUX_KERNEL_PIN.version}_all.deb`;
  const downloads = path.join(cache, "linux-kernel", "downloads");
  for (const candidate of [path.join(downloads, name), path.join("/var/cache/apt/archives", name)]) {
    if ((await fileExists(candidate)) && (await sha256File(candidate)) === LINUX_KERNEL_PIN.debSha256)
      return candidate;
  }
  await mkdir(downloads, { recursive: true });
  log(`kernel: apt-get download ${LINUX_KERNEL_PIN.package}=${LINUX_KERNEL_PIN.version}`);
  const got = await execa(
    "apt-get",
    ["download", `${LINUX_KERNEL_PIN.package}=${LINUX_KERNEL_PIN.version}`],
    {
      cwd: downloads,
      reject: false,
      all: true,
    },
  );
  if (got.exitCode !== 0) {
    throw new LinuxImageUnavailable(
      `cannot download ${LINUX_KERNEL_PIN.label} (${String(got.all ?? got.message)
        .trim()
        .split("\n")
        .at(-1)}); ` +
        `run apt-get update, and if Debian no longer serves it (apt-cache madison ${LINUX_KERNEL_PIN.package}) update LINUX_KERNEL_PIN in guest-images/bake/pins.ts`,
    );
  }
  return path.join(downloads, name);
}

/** Holds an exclusive lock file for the shared kernel work tree; a lock left by a dead process is taken over. */
export async function withLock<T>(lockFile: string, what: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      const fd = openSync(lockFile, "wx");
      closeSync(fd);
      await writeFile(lockFile, `${process.pid}\n`);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) throw err;
      const holder = Number((await readFile(lockFile, "utf8").catch(() => "")).trim());
      if (holder > 0 && isAlive(holder))
        throw new LinuxImageBuildError(`${what} is already being built by pid ${holder} (lock ${lockFile})`);
      await unlink(lockFile).catch(() => {});
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lockFile).catch(() => {});
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Runs a command (this process's environment plus `env`) with stdout and stderr appended to a log file. */
export function runLogged(argv: string[], logFile: string, env: NodeJS.ProcessEnv): Promise<number> {
  const fd = openSync(logFile, "a");
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ["ignore", fd, fd],
      env: { ...process.env, ...env },
    });
    child.on("error", (err) => {
      closeSync(fd);
      reject(err);
    });
    child.on("exit", (code, signal) => {
      closeSync(fd);
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

/**
 * Every minute of a long compile, one line: `<label>: N min, M of about <total> files compiled`, M
 * counted from the build log's compile lines (`  CC ...` and the like). Returns what stops it.
 */
export function compileProgress(options: {
  readonly logFile: string;
  readonly label: string;
  /** The kinds of compile lines to count, e.g. ["CC", "AS"]. */
  readonly kinds: readonly string[];
  readonly total: number;
  readonly started: number;
  readonly log: (line: string) => void;
}): () => void {
  const compileLine = new RegExp(`^ {2}(${options.kinds.join("|")})\\s`, "gm");
  const timer = setInterval(() => {
    void readFile(options.logFile, "utf8")
      .then((text) => {
        const compiled = (text.match(compileLine) ?? []).length;
        const minutes = ((Date.now() - options.started) / 60_000).toFixed(0);
        options.log(`${options.label}: ${minutes} min, ${compiled} of about ${options.total} files compiled`);
      })
      .catch(() => {});
  }, 60_000);
  return () => clearInterval(timer);
}

export async function lastLines(file: string, n: number): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

/** The cached vmlinux for the current inputs, or undefined. */
export async function cachedKernel(options: LinuxImageOptions = {}): Promise<string | undefined> {
  const env = options.env ?? process.env;
  const config = firecrackerGuestConfig(env);
  if (!config) return undefined;
  const vmlinux = path.join(cacheRoot(env), "linux-kernel", await kernelKey(config), "vmlinux");
  return (await fileExists(vmlinux)) ? vmlinux : undefined;
}

/** The kernel for the current inputs, built (about 12 minutes on 2 cores) when not cached. */
export async function ensureLinuxKernel(
  options: LinuxImageOptions = {},
): Promise<{ path: string; key: string }> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const config = requireFirecrackerConfig(env);
  const key = await kernelKey(config);
  const root = path.join(cacheRoot(env), "linux-kernel");
  const vmlinux = path.join(root, key, "vmlinux");
  if (await fileExists(vmlinux)) {
    log(`kernel: cached ${vmlinux} (${LINUX_KERNEL_PIN.label})`);
    return { path: vmlinux, key };
  }
  await mkdir(path.join(root, "logs"), { recursive: true });
  return withLock(path.join(root, "work.lock"), "the Linux guest kernel", async () => {
    const deb = await kernelSourceDeb(cacheRoot(env), log);
    const logFile = path.join(root, "logs", `${key}.log`);
    await rm(logFile, { force: true });
    log(`kernel: building ${LINUX_KERNEL_PIN.label} (about 12 min on 2 cores), log at ${logFile}`);
    const started = Date.now();
    const stopProgress = compileProgress({
      logFile,
      label: "kernel",
      kinds: ["CC", "AS"],
      total: KERNEL_BUILD_FILES,
      started,
      log,
    });
    let code: number;
    try {
      code = await runLogged(
        [
          "nice",
          "-n",
          "19",
          "bash",
          KERNEL_SCRIPT,
          deb,
          LINUX_KERNEL_PIN.debSha256,
          config,
          LINUX_KERNEL_PIN.firecrackerConfigSha256,
          KERNEL_FRAGMENT,
          path.join(root, "work"),
          vmlinux,
        ],
        logFile,
        env,
      );
    } finally {
      stopProgress();
    }
    if (code !== 0) {
      throw new LinuxImageBuildError(
        `build-kernel.sh failed (exit ${code}); log at ${logFile}:\n${await lastLines(logFile, 15)}`,
      );
    }
    const seconds = Math.round((Date.now() - started) / 1000);
    await writeFile(
      path.join(root, key, "kernel.json"),
      `${JSON.stringify({ source: LINUX_KERNEL_PIN.label, buildSeconds: seconds }, null, 2)}\n`,
    );
    log(`kernel: built in ${(seconds / 60).toFixed(1)} min: ${vmlinux}`);
    return { path: vmlinux, key };
  });
}

interface RootfsInputs {
  readonly key: string;
  readonly bundlePath: string;
  readonly buildId: string;
  readonly nodeVersion: string;
  readonly scratch: string;
}

/** Bundles the runtime (into a scratch folder the caller removes) and hashes every rootfs input. */
async function rootfsInputs(nodeBinary: string, env: NodeJS.ProcessEnv): Promise<RootfsInputs> {
  const scratch = await mkdtemp(path.join(tmpdir(), "snapfaas-rootfs-"));
  try {
    const bundle = await bundleStampedRuntime(scratch);
    const node = await realBinary(nodeBinary);
    const nodeIncludes = path.join(path.dirname(node), "..", "include", "node");
    const nodeVersion = (await execa(node, ["--version"])).stdout.trim();
    const libs: Record<string, string> = {};
    // The objects ldd reports are what build-rootfs.sh copies into the root.
    for (const lib of await sharedLibraries(node)) libs[lib] = await sha256File(lib);
    const firstLine = async (cmd: string, args: string[]) =>
      (await execa(cmd, args, { reject: false })).stdout.split("\n")[0] ?? "";
    const key = sha256Text(
      canonicalJson({
        node: await sha256File(node),
        libs,
        busybox: await sha256File(BUSYBOX),
        runtime: bundle.bundleHash,
        sources: await sha256Files(path.join(HERE, ".."), ROOTFS_SOURCES),
        // The native helper is compiled against node's own headers (hashed with node's release).
        nodeHeaders: await sha256Files(nodeIncludes, await listFiles(nodeIncludes).catch(() => [])),
        gxx: await firstLine("g++", ["--version"]),
        mksquashfs: await firstLine("mksquashfs", ["-version"]),
        nameserver: env.GUEST_NAMESERVER ?? "",
      }),
    ).slice(0, 16);
    return { key, bundlePath: bundle.bundlePath, buildId: bundle.buildId, nodeVersion, scratch };
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

async function realBinary(file: string): Promise<string> {
  if (!(await fileExists(file))) throw new LinuxImageUnavailable(`guest node binary ${file} does not exist`);
  // build-rootfs.sh resolves it the same way (and finds the headers beside the real file).
  return realpath(file);
}

interface RootfsRecord {
  readonly runtimeBuild: string;
  readonly nodeVersion: string;
}

/** The root filesystem for the current inputs, built (seconds) when not cached. */
export async function ensureLinuxRootfs(
  options: LinuxImageOptions & { build?: boolean } = {},
): Promise<({ path: string; key: string } & RootfsRecord) | undefined> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const nodeBinary = options.nodeBinary ?? (await guestNodeBinary(env, options.log));
  const inputs = await rootfsInputs(nodeBinary, env);
  try {
    const root = path.join(cacheRoot(env), "linux-rootfs");
    const dir = path.join(root, inputs.key);
    const image = path.join(dir, "rootfs.img");
    const record: RootfsRecord = { runtimeBuild: inputs.buildId, nodeVersion: inputs.nodeVersion };
    if (await fileExists(image)) {
      log(`rootfs: cached ${image} (node ${inputs.nodeVersion}, runtime ${inputs.buildId})`);
      return { path: image, key: inputs.key, ...record };
    }
    if (options.build === false) return undefined;
    await mkdir(root, { recursive: true });
    const tmp = await mkdtemp(path.join(root, `.${inputs.key}-`));
    try {
      const logFile = path.join(tmp, "build.log");
      const started = Date.now();
      log(
        `rootfs: building (node ${inputs.nodeVersion} and the runtime on busybox; under a minute), log at ${logFile}`,
      );
      const code = await runLogged(
        [
          "nice",
          "-n",
          "19",
          "bash",
          path.join(HERE, "build-rootfs.sh"),
          nodeBinary,
          inputs.bundlePath,
          BUSYBOX,
          path.join(tmp, "rootfs.img"),
        ],
        logFile,
        env,
      );
      if (code !== 0) {
        throw new LinuxImageBuildError(
          `build-rootfs.sh failed (exit ${code}):\n${await lastLines(logFile, 15)}`,
        );
      }
      const seconds = (Date.now() - started) / 1000;
      await writeFile(
        path.join(tmp, "rootfs.json"),
        `${JSON.stringify({ ...record, buildSeconds: seconds }, null, 2)}\n`,
      );
      // A whole folder appears under its key or nothing does (another build may have won the race).
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
      });
      const size = (await stat(image)).size;
      log(
        `rootfs: built in ${seconds.toFixed(1)} s: ${image} (${(size / 2 ** 20).toFixed(1)} MiB, node ${inputs.nodeVersion}, runtime ${inputs.buildId})`,
      );
      return { path: image, key: inputs.key, ...record };
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  } finally {
    await rm(inputs.scratch, { recursive: true, force: true });
  }
}

function defaultNetwork(): GuestNetwork {
  return guestNetworkOf(parseFirecrackerDriverConfig({}));
}

/**
 * The built Linux guest image for the current sources. `build`: "all" builds what is missing (the
 * kernel takes about 12 minutes on 2 cores), "rootfs" only the root filesystem (seconds: it follows
 * every runtime change), "none" (the default) builds nothing. A missing part is a
 * LinuxImageUnavailable whose message says to run `npm run guest:linux`.
 */
export async function linuxGuestImage(
  options: LinuxImageOptions & { build?: "none" | "rootfs" | "all" } = {},
): Promise<LinuxGuestImage> {
  const env = options.env ?? process.env;
  const build = options.build ?? "none";
  let kernel: { path: string; key: string };
  if (build === "all") {
    kernel = await ensureLinuxKernel(options);
  } else {
    const config = requireFirecrackerConfig(env);
    const key = await kernelKey(config);
    const vmlinux = path.join(cacheRoot(env), "linux-kernel", key, "vmlinux");
    if (!(await fileExists(vmlinux)))
      throw new LinuxImageUnavailable(
        `no Linux guest kernel built for the current recipe (npm run guest:linux builds it)`,
      );
    kernel = { path: vmlinux, key };
  }
  const rootfs = await ensureLinuxRootfs({ ...options, build: build !== "none" });
  if (!rootfs)
    throw new LinuxImageUnavailable(
      `no Linux guest rootfs built for the current sources (npm run guest:linux builds it)`,
    );
  return {
    kernel: kernel.path,
    rootfs: rootfs.path,
    bootArgs: linuxKernelArgs(options.network ?? defaultNetwork()),
    runtimeBuild: rootfs.runtimeBuild,
    nodeVersion: rootfs.nodeVersion,
    kernelKey: kernel.key,
    rootfsKey: rootfs.key,
  };
}
