/**
 * Which module of a function's code is its entry, which export answers calls, and whether Node loads it
 * as an ES module or CommonJS. Shared by `faas deploy` (it compiles TypeScript to what this finds), the
 * registry (it refuses a deploy with no entry) and the guest runtime (it imports the entry). Pure: the
 * caller passes its file system probe.
 *
 * The entry, first match wins:
 *   1. package.json `"faas": { "handler": "src/lambda.handler" }`: a Lambda handler name, the module's
 *      path without its extension, a dot, and the export (Lambda's rule: the last path segment splits at
 *      its first dot, so `api/v1.2/app.handlers.get` is module `api/v1.2/app`, export `handlers.get`).
 *      The module is found as Lambda finds it: `.js`, then `.mjs`, then `.cjs`.
 *   2. package.json `"main"`.
 *   3. index.js, index.mjs, index.cjs at the code root.
 * Without a handler name the runtime uses the module's `handler` export, or its exported classes.
 */

export interface FsProbe {
  exists(path: string): boolean;
  readFile(path: string): string;
}

export class EntryError extends Error {
  override readonly name = "EntryError";
}

export interface FunctionEntry {
  /** The entry module, relative to the code root. */
  readonly file: string;
  /** The export a Lambda handler name asks for, as a property path; null: `handler` or the classes. */
  readonly exportPath: readonly string[] | null;
}

/** Extensions a Lambda handler's module is looked up with, in Lambda's order. */
export const HANDLER_MODULE_EXTENSIONS = [".js", ".mjs", ".cjs"] as const;

const HANDLER_NAME = /^(?:[\w@.-]+\/)*[\w@-]+\.[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*$/;

/** Splits a Lambda handler name into its module path (no extension) and export path, or says why not. */
export function parseHandlerName(handler: string): { module: string; exportPath: string[] } {
  const name = handler.replace(/^\.\//, "");
  if (!HANDLER_NAME.test(name) || name.split("/").includes("..")) {
    throw new EntryError(
      `handler ${JSON.stringify(handler)} is not a Lambda handler name: use <path to the module, without extension>.<export>, e.g. src/lambda.handler`,
    );
  }
  const slash = name.lastIndexOf("/");
  const dir = name.slice(0, slash + 1);
  const last = name.slice(slash + 1);
  const dot = last.indexOf(".");
  return { module: dir + last.slice(0, dot), exportPath: last.slice(dot + 1).split(".") };
}

interface PackageJson {
  main?: unknown;
  type?: unknown;
  faas?: { handler?: unknown };
}

function readPackageJson(file: string, fs: FsProbe): PackageJson | undefined {
  if (!fs.exists(file)) return undefined;
  try {
    const pkg = JSON.parse(fs.readFile(file)) as unknown;
    return typeof pkg === "object" && pkg !== null ? (pkg as PackageJson) : {};
  } catch (err) {
    throw new EntryError(`package.json is not valid JSON: ${(err as Error).message}`);
  }
}

export function resolveFunctionEntry(codeRoot: string, fs: FsProbe): FunctionEntry {
  const pkg = readPackageJson(`${codeRoot}/package.json`, fs);
  const handler = pkg?.faas?.handler;
  if (handler !== undefined) {
    if (typeof handler !== "string")
      throw new EntryError('package.json "faas.handler" must be a string, e.g. "src/lambda.handler"');
    const { module, exportPath } = parseHandlerName(handler);
    for (const ext of HANDLER_MODULE_EXTENSIONS) {
      if (fs.exists(`${codeRoot}/${module}${ext}`)) return { file: `${module}${ext}`, exportPath };
    }
    throw new EntryError(
      `handler ${handler}: no ${module}.js, ${module}.mjs or ${module}.cjs in the code (TypeScript is compiled by faas deploy)`,
    );
  }
  if (pkg?.main !== undefined) {
    if (typeof pkg.main !== "string" || pkg.main.length === 0) {
      throw new EntryError('package.json "main" must be a non-empty string');
    }
    const main = pkg.main.replace(/^\.\//, "");
    if (main.startsWith("/") || main.split("/").includes("..")) {
      throw new EntryError(`package.json "main" (${pkg.main}) must stay inside the bundle`);
    }
    for (const candidate of [main, `${main}.js`, `${main}.mjs`, `${main}.cjs`, `${main}/index.js`]) {
      if (fs.exists(`${codeRoot}/${candidate}`)) return { file: candidate, exportPath: null };
    }
    throw new EntryError(`package.json "main" points to ${pkg.main}, which is not in the bundle`);
  }
  for (const candidate of ["index.js", "index.mjs", "index.cjs"]) {
    if (fs.exists(`${codeRoot}/${candidate}`)) return { file: candidate, exportPath: null };
  }
  throw new EntryError(
    'no entry module: add "main" (or "faas": {"handler": "file.export"}) to package.json, or an index.js or index.mjs at the bundle root',
  );
}

/**
 * How Node loads `file` (relative to the code root): `.mjs`/`.mts` as an ES module, `.cjs`/`.cts` as
 * CommonJS, anything else by the nearest package.json's "type" at or below the code root (Node's rule,
 * stopped at the code root: nothing above it ships).
 */
export function moduleFormat(codeRoot: string, file: string, fs: FsProbe): "module" | "commonjs" {
  if (/\.m[jt]s$/.test(file)) return "module";
  if (/\.c[jt]s$/.test(file)) return "commonjs";
  const parts = file.split("/").slice(0, -1);
  for (let i = parts.length; i >= 0; i--) {
    const dir = [codeRoot, ...parts.slice(0, i)].join("/");
    const pkg = readPackageJson(`${dir}/package.json`, fs);
    if (pkg) return pkg.type === "module" ? "module" : "commonjs";
  }
  return "commonjs";
}
