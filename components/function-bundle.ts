/**
 * Reads a function's code archive (tar.gz or zip of a folder with package.json) the way a registry record
 * describes it: content hash, sizes, file count and entry module. Used by FaasFunction at deploy time.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { Readable } from "node:stream";
import { Parser } from "tar";
import yauzl from "yauzl";
import type { BundleDescription } from "../contracts/registry-layout.ts";

export interface BundleFile {
  readonly path: string;
  readonly size: number;
  /** Only kept for package.json, to find the entry module. */
  readonly text?: string;
}

/** What the registry record says of a bundle (the registry contract's one definition). */
export type FunctionBundleInfo = BundleDescription;

export function bundleFormatOf(path: string): "tar.gz" | "zip" {
  if (path.endsWith(".tar.gz") || path.endsWith(".tgz")) return "tar.gz";
  if (path.endsWith(".zip")) return "zip";
  throw new Error(`code archive ${path} must end in .tar.gz, .tgz or .zip`);
}

function normalize(path: string): string {
  return path.replace(/^\.\//, "");
}

async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

async function listTarGz(bytes: Buffer): Promise<BundleFile[]> {
  const files: BundleFile[] = [];
  const pending: Promise<void>[] = [];
  const parser = new Parser({
    onReadEntry: (entry) => {
      if (entry.type !== "File") {
        entry.resume();
        return;
      }
      const path = normalize(entry.path);
      if (path.endsWith("package.json")) {
        pending.push(
          readAll(entry).then((b) => void files.push({ path, size: entry.size, text: b.toString("utf8") })),
        );
      } else {
        files.push({ path, size: entry.size });
        entry.resume();
      }
    },
  });
  await new Promise<void>((resolve, reject) => {
    parser.on("end", resolve);
    parser.on("error", reject);
    Readable.from([bytes]).pipe(parser);
  });
  await Promise.all(pending);
  return files;
}

async function listZip(bytes: Buffer): Promise<BundleFile[]> {
  const zip = await yauzl.fromBufferPromise(bytes, { lazyEntries: true });
  const files: BundleFile[] = [];
  try {
    for await (const entry of zip.eachEntry()) {
      if (entry.fileName.endsWith("/")) continue;
      const path = normalize(entry.fileName);
      const text = path.endsWith("package.json")
        ? (await readAll(await zip.openReadStreamPromise(entry))).toString("utf8")
        : undefined;
      files.push({ path, size: entry.uncompressedSize, ...(text === undefined ? {} : { text }) });
    }
  } finally {
    zip.close();
  }
  return files;
}

/** The code root: the archive top, or its single top-level folder when package.json sits there (npm pack). */
export function codeRootOf(files: readonly BundleFile[]): string {
  if (files.some((f) => f.path === "package.json")) return "";
  const tops = new Set(files.map((f) => f.path.split("/")[0]));
  const [only] = tops;
  if (tops.size === 1 && only !== undefined && files.some((f) => f.path === `${only}/package.json`))
    return `${only}/`;
  throw new Error("code archive has no package.json at its top or in its single top-level folder");
}

/** Entry module relative to the code root: package.json `main`, else index.js, else index.mjs. */
export function entryOf(files: readonly BundleFile[], root: string): string {
  const manifest = files.find((f) => f.path === `${root}package.json`);
  let main: unknown;
  try {
    main = (JSON.parse(manifest?.text ?? "{}") as { main?: unknown }).main;
  } catch {
    throw new Error("package.json in the code archive is not valid JSON");
  }
  const has = (rel: string) => files.some((f) => f.path === `${root}${rel}`);
  if (typeof main === "string") {
    const rel = normalize(main);
    if (!has(rel)) throw new Error(`package.json main "${main}" is not in the code archive`);
    return rel;
  }
  if (has("index.js")) return "index.js";
  if (has("index.mjs")) return "index.mjs";
  throw new Error("code archive has no package.json main, index.js or index.mjs");
}

export async function describeFunctionBundle(path: string): Promise<FunctionBundleInfo & { bytes: Buffer }> {
  const format = bundleFormatOf(path);
  const bytes = await readFile(path);
  const files = format === "zip" ? await listZip(bytes) : await listTarGz(bytes);
  const root = codeRootOf(files);
  return {
    bytes,
    codeHash: createHash("sha256").update(bytes).digest("hex"),
    format,
    bundleBytes: bytes.length,
    unpackedBytes: files.reduce((sum, f) => sum + f.size, 0),
    fileCount: files.length,
    entry: entryOf(files, root),
  };
}
