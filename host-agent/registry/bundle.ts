/**
 * Bundles: a tar.gz or zip of a function's folder. Every entry is checked before anything is trusted:
 * paths stay inside the bundle, only files, folders and in-bundle symlinks, no setuid/setgid bits,
 * limits on compressed size, unpacked size, file count and depth. A bundle that breaks a rule is refused
 * whole with a message that names the entry and the rule.
 */
import { createHash } from "node:crypto";
import { lstat, mkdir, readdir, realpath, rename, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { gunzip } from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import yauzl from "yauzl";

export interface BundleLimits {
  readonly maxBundleBytes: number;
  readonly maxUnpackedBytes: number;
  readonly maxFiles: number;
}

export const MAX_PATH_DEPTH = 32;
export const MAX_PATH_LENGTH = 1024;

export class BundleError extends Error {
  override readonly name = "BundleError";
  constructor(
    message: string,
    /** 413 for size limits, 400 for everything else. */
    readonly status: 400 | 413 = 400,
  ) {
    super(message);
  }
}

export type BundleFormat = "tar.gz" | "zip";

export interface UnpackedBundle {
  readonly format: BundleFormat;
  readonly codeHash: string;
  readonly unpackedBytes: number;
  readonly fileCount: number;
}

type BundleEntry =
  | { kind: "file"; path: string; data: Buffer; executable: boolean }
  | { kind: "dir"; path: string }
  | { kind: "symlink"; path: string; target: string };

export function sniffFormat(bytes: Buffer): BundleFormat {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) return "tar.gz";
  if (bytes.length >= 4 && bytes.readUInt32LE(0) === 0x04034b50) return "zip";
  if (bytes.length >= 4 && bytes.readUInt32LE(0) === 0x06054b50)
    throw new BundleError("the zip archive is empty");
  throw new BundleError(
    "the body is neither a tar.gz nor a zip archive (send the bundle's bytes as the request body)",
  );
}

export function hashBundle(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Normalises an entry's path, or refuses it. Returns null for the bundle root itself ("./"). */
export function safeEntryPath(raw: string): string | null {
  if (raw.includes("\0")) throw new BundleError(`entry ${JSON.stringify(raw)}: NUL byte in path`);
  if (raw.length > MAX_PATH_LENGTH)
    throw new BundleError(`entry path longer than ${MAX_PATH_LENGTH} characters`);
  const unified = raw.replace(/\\/g, "/");
  if (unified.startsWith("/") || /^[A-Za-z]:/.test(unified)) {
    throw new BundleError(`entry ${JSON.stringify(raw)}: absolute paths are not allowed`);
  }
  const parts = unified.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes(".."))
    throw new BundleError(`entry ${JSON.stringify(raw)}: ".." is not allowed in paths`);
  if (parts.length > MAX_PATH_DEPTH) {
    throw new BundleError(`entry ${JSON.stringify(raw)}: nested deeper than ${MAX_PATH_DEPTH} levels`);
  }
  return parts.length === 0 ? null : parts.join("/");
}

function checkSymlinkTarget(linkPath: string, target: string): void {
  if (target.length === 0 || target.startsWith("/")) {
    throw new BundleError(
      `symlink ${linkPath} -> ${target}: link targets must be relative paths inside the bundle`,
    );
  }
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(linkPath), target));
  if (resolved === ".." || resolved.startsWith("../")) {
    throw new BundleError(`symlink ${linkPath} -> ${target}: points outside the bundle`);
  }
}

const SPECIAL_BITS = 0o7000;

class EntryCollector {
  readonly entries: BundleEntry[] = [];
  private bytes = 0;
  private files = 0;
  constructor(private readonly limits: BundleLimits) {}

  count(declaredBytes: number): void {
    this.files += 1;
    if (this.files > this.limits.maxFiles) {
      throw new BundleError(`the bundle has more than ${this.limits.maxFiles} entries (the limit)`, 413);
    }
    this.addBytes(declaredBytes);
  }

  addBytes(n: number): void {
    this.bytes += n;
    if (this.bytes > this.limits.maxUnpackedBytes) {
      throw new BundleError(
        `the bundle unpacks to more than ${this.limits.maxUnpackedBytes} bytes (the limit)`,
        413,
      );
    }
  }

  get unpackedBytes(): number {
    return this.bytes;
  }
}

function checkMode(entryPath: string, mode: number): void {
  if ((mode & SPECIAL_BITS) !== 0) {
    throw new BundleError(
      `entry ${entryPath}: setuid, setgid and sticky bits are not allowed (mode ${mode.toString(8)})`,
    );
  }
}

const gunzipAsync = promisify(gunzip);

/**
 * Inflates a tar.gz off the event loop (zlib's thread pool), refusing past what the limits allow: the
 * unpacked bytes plus a tar header and padding per entry. tar's own streaming inflate runs on the event
 * loop and, past its end-of-archive marker, copies what follows quadratically: a 1 MB gzip of zeros
 * would stall every call for minutes.
 */
async function inflateTar(bytes: Buffer, limits: BundleLimits): Promise<Buffer> {
  const maxOutputLength = limits.maxUnpackedBytes + (limits.maxFiles + 2) * 1024 + 1024 * 1024;
  try {
    return await gunzipAsync(bytes, { maxOutputLength });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new BundleError(
        `the bundle unpacks to more than ${limits.maxUnpackedBytes} bytes (the limit)`,
        413,
      );
    }
    throw new BundleError(`the tar.gz archive is damaged: ${(err as Error).message}`);
  }
}

async function collectTarGz(bytes: Buffer, limits: BundleLimits): Promise<EntryCollector> {
  const tar = await inflateTar(bytes, limits);
  const collector = new EntryCollector(limits);
  return new Promise((resolve, reject) => {
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      parser.abort(err instanceof Error ? err : new Error(String(err)));
      reject(
        err instanceof BundleError
          ? err
          : new BundleError(`the tar.gz archive is damaged: ${(err as Error).message}`),
      );
    };
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        if (failed) {
          entry.resume();
          return;
        }
        try {
          const p = safeEntryPath(entry.path);
          checkMode(entry.path, entry.mode ?? 0);
          switch (entry.type) {
            case "File":
            case "OldFile":
            case "ContiguousFile": {
              if (p === null)
                throw new BundleError(`entry ${JSON.stringify(entry.path)} is a file with no name`);
              collector.count(entry.size ?? 0);
              const chunks: Buffer[] = [];
              let seen = 0;
              entry.on("data", (c: Buffer) => {
                seen += c.length;
                if (seen > (entry.size ?? 0))
                  fail(new BundleError(`entry ${p}: more data than its header declares`));
                chunks.push(c);
              });
              entry.on("end", () => {
                collector.entries.push({
                  kind: "file",
                  path: p,
                  data: Buffer.concat(chunks),
                  executable: ((entry.mode ?? 0) & 0o111) !== 0,
                });
              });
              return;
            }
            case "Directory":
              if (p !== null) {
                collector.count(0);
                collector.entries.push({ kind: "dir", path: p });
              }
              break;
            case "SymbolicLink":
              if (p === null) throw new BundleError("a symlink cannot replace the bundle root");
              collector.count(0);
              checkSymlinkTarget(p, entry.linkpath ?? "");
              collector.entries.push({ kind: "symlink", path: p, target: entry.linkpath ?? "" });
              break;
            case "Link":
              throw new BundleError(
                `entry ${entry.path}: hard links are not allowed (use a copy or a relative symlink)`,
              );
            case "CharacterDevice":
            case "BlockDevice":
            case "FIFO":
              throw new BundleError(
                `entry ${entry.path}: ${entry.type} entries are not allowed, only files, folders and symlinks`,
              );
            default:
              throw new BundleError(`entry ${entry.path}: unsupported tar entry type ${entry.type}`);
          }
        } catch (err) {
          fail(err);
        }
        entry.resume();
      },
    });
    parser.on("error", fail);
    parser.on("warn", (code: string, message: string) => {
      if (code === "TAR_ENTRY_INVALID" || code === "TAR_BAD_ARCHIVE" || code === "TAR_ENTRY_ERROR")
        fail(new Error(message));
    });
    parser.on("end", () => {
      if (!failed) resolve(collector);
    });
    try {
      parser.end(tar);
    } catch (err) {
      fail(err);
    }
  });
}

function collectZip(bytes: Buffer, limits: BundleLimits): Promise<EntryCollector> {
  const collector = new EntryCollector(limits);
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(
      bytes,
      { lazyEntries: true, validateEntrySizes: true, strictFileNames: false },
      (openErr, zip) => {
        if (openErr || !zip) {
          reject(new BundleError(`the zip archive is damaged: ${openErr?.message ?? "unreadable"}`));
          return;
        }
        let done = false;
        const fail = (err: unknown) => {
          if (done) return;
          done = true;
          zip.close();
          reject(
            err instanceof BundleError
              ? err
              : new BundleError(`the zip archive is damaged: ${(err as Error).message}`),
          );
        };
        zip.on("error", fail);
        zip.on("end", () => {
          if (!done) {
            done = true;
            resolve(collector);
          }
        });
        zip.on("entry", (entry: yauzl.Entry) => {
          try {
            const mode = (entry.externalFileAttributes >>> 16) & 0xffff;
            const type = mode & 0o170000;
            const isDir = entry.fileName.endsWith("/") || type === 0o040000;
            const p = safeEntryPath(entry.fileName);
            checkMode(entry.fileName, mode);
            if (isDir) {
              if (p !== null) {
                collector.count(0);
                collector.entries.push({ kind: "dir", path: p });
              }
              zip.readEntry();
              return;
            }
            if (type !== 0 && type !== 0o100000 && type !== 0o120000) {
              throw new BundleError(`entry ${entry.fileName}: only files, folders and symlinks are allowed`);
            }
            if (p === null) throw new BundleError(`entry ${JSON.stringify(entry.fileName)} has no name`);
            if (entry.isEncrypted())
              throw new BundleError(`entry ${entry.fileName}: encrypted zip entries are not supported`);
            collector.count(entry.uncompressedSize);
            zip.openReadStream(entry, (streamErr, stream) => {
              if (streamErr || !stream) {
                fail(streamErr);
                return;
              }
              const chunks: Buffer[] = [];
              stream.on("data", (c: Buffer) => chunks.push(c));
              stream.on("error", fail);
              stream.on("end", () => {
                try {
                  const data = Buffer.concat(chunks);
                  if (type === 0o120000) {
                    const target = data.toString("utf8");
                    checkSymlinkTarget(p, target);
                    collector.entries.push({ kind: "symlink", path: p, target });
                  } else {
                    collector.entries.push({ kind: "file", path: p, data, executable: (mode & 0o111) !== 0 });
                  }
                  zip.readEntry();
                } catch (err) {
                  fail(err);
                }
              });
            });
          } catch (err) {
            fail(err);
          }
        });
        zip.readEntry();
      },
    );
  });
}

/** Drops one folder that wraps the whole bundle (as `npm pack` and many zip tools make). */
function unwrapSingleFolder(entries: BundleEntry[]): BundleEntry[] {
  const tops = new Set(entries.map((e) => e.path.split("/")[0]));
  if (tops.size !== 1) return entries;
  const top = [...tops][0]!;
  const topEntry = entries.find((e) => e.path === top);
  if (topEntry && topEntry.kind !== "dir") return entries;
  if (!entries.some((e) => e.path.startsWith(`${top}/`))) return entries;
  return entries
    .filter((e) => e.path !== top)
    .map((e) => {
      const p = e.path.slice(top.length + 1);
      return e.kind === "symlink" ? { ...e, path: p } : { ...e, path: p };
    });
}

async function writeEntries(root: string, entries: BundleEntry[]): Promise<void> {
  const links = new Set<string>();
  const seen = new Set<string>();
  const dirs = new Set<string>([""]);
  const ensureDir = async (rel: string) => {
    if (dirs.has(rel)) return;
    await mkdir(path.join(root, rel), { recursive: true });
    let d = rel;
    while (d && !dirs.has(d)) {
      dirs.add(d);
      d = path.posix.dirname(d) === "." ? "" : path.posix.dirname(d);
    }
  };
  for (const entry of entries) {
    // Writing through a symlink the bundle itself created could land outside the folder.
    const parts = entry.path.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (links.has(parts.slice(0, i).join("/"))) {
        throw new BundleError(`entry ${entry.path}: lies inside the symlink ${parts.slice(0, i).join("/")}`);
      }
    }
    if (entry.kind === "dir") {
      if (links.has(entry.path)) throw new BundleError(`entry ${entry.path}: is both a symlink and a folder`);
      await ensureDir(entry.path);
      continue;
    }
    if (seen.has(entry.path) || dirs.has(entry.path)) {
      throw new BundleError(`entry ${entry.path}: appears more than once in the bundle`);
    }
    seen.add(entry.path);
    await ensureDir(path.posix.dirname(entry.path) === "." ? "" : path.posix.dirname(entry.path));
    const dest = path.join(root, entry.path);
    if (entry.kind === "file") {
      await writeFile(dest, entry.data, { mode: entry.executable ? 0o555 : 0o444, flag: "wx" });
    } else {
      links.add(entry.path);
      await symlink(entry.target, dest);
    }
  }
  // A chain of in-bundle links can still resolve outside: check each for real.
  const realRoot = await realpath(root);
  for (const link of links) {
    let resolved: string;
    try {
      resolved = await realpath(path.join(root, link));
    } catch {
      throw new BundleError(`symlink ${link}: its target does not exist in the bundle`);
    }
    if (resolved !== realRoot && !resolved.startsWith(`${realRoot}/`)) {
      throw new BundleError(`symlink ${link}: resolves outside the bundle`);
    }
  }
}

async function sealReadOnly(dir: string): Promise<void> {
  const { chmod } = await import("node:fs/promises");
  for (const item of await readdir(dir, { withFileTypes: true })) {
    if (item.isDirectory()) await sealReadOnly(path.join(dir, item.name));
  }
  await chmod(dir, 0o555);
}

/**
 * Validates `bytes` and unpacks them into `destDir` (which must not exist yet), atomically: on any error
 * nothing is left behind; on success `destDir` holds the read-only code.
 */
export async function unpackBundle(
  bytes: Buffer,
  destDir: string,
  limits: BundleLimits,
): Promise<UnpackedBundle> {
  if (bytes.length === 0) throw new BundleError("the body is empty: send a tar.gz or zip bundle");
  if (bytes.length > limits.maxBundleBytes) {
    throw new BundleError(`the bundle is ${bytes.length} bytes; the limit is ${limits.maxBundleBytes}`, 413);
  }
  const format = sniffFormat(bytes);
  const collector = format === "tar.gz" ? await collectTarGz(bytes, limits) : await collectZip(bytes, limits);
  const entries = unwrapSingleFolder(collector.entries);
  if (!entries.some((e) => e.kind === "file")) throw new BundleError("the bundle contains no files");
  const staging = `${destDir}.staging-${process.pid}-${Date.now()}`;
  await mkdir(staging, { recursive: true, mode: 0o755 });
  try {
    await writeEntries(staging, entries);
    await sealReadOnly(staging);
    await rename(staging, destDir);
  } catch (err) {
    await forceRemove(staging);
    throw err;
  }
  return {
    format,
    codeHash: hashBundle(bytes),
    unpackedBytes: collector.unpackedBytes,
    fileCount: entries.filter((e) => e.kind !== "dir").length,
  };
}

/** Removes a tree even where it was sealed read-only. */
export async function forceRemove(dir: string): Promise<void> {
  const { chmod } = await import("node:fs/promises");
  const walk = async (d: string): Promise<void> => {
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(d);
    } catch {
      return;
    }
    if (!st.isDirectory()) return;
    await chmod(d, 0o755);
    for (const item of await readdir(d, { withFileTypes: true })) {
      if (item.isDirectory()) await walk(path.join(d, item.name));
    }
  };
  await walk(dir);
  await rm(dir, { recursive: true, force: true });
}
