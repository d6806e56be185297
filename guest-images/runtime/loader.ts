/**
 * Finds and imports the user's module from the read-only code path, as Lambda's Node runtime does:
 * CommonJS through require(), ES modules through import() (so top-level await and import.meta.url work).
 * Which file and export: contracts/function-entry.ts.
 */
import {
  EntryError,
  type FsProbe,
  type FunctionEntry,
  moduleFormat,
  resolveFunctionEntry,
} from "../../contracts/function-entry.ts";
import type { CreateRequireFn } from "./require-type.ts";

export type { FsProbe };

export class LoadError extends Error {
  override readonly name = "LoadError";
}

/** The entry (file and export) of the code at `codeRoot`; a LoadError says why there is none. */
export function resolveFunction(codeRoot: string, fs: FsProbe): FunctionEntry {
  try {
    return resolveFunctionEntry(codeRoot, fs);
  } catch (err) {
    if (err instanceof EntryError) throw new LoadError(err.message);
    throw err;
  }
}

/** The entry module's path (package.json "faas.handler" or "main", else index.js/.mjs/.cjs). */
export function resolveEntry(codeRoot: string, fs: FsProbe): string {
  return resolveFunction(codeRoot, fs).file;
}

export interface ModuleLoaders {
  readonly createRequire: CreateRequireFn;
  /**
   * import() of a file: URL. A process started from a V8 startup snapshot has no dynamic import in the
   * snapshotted code, so main.ts compiles this at run time (see there).
   */
  readonly importModule: (url: string) => Promise<unknown>;
}

/** A package the code imports that is not in the code (Node's error, whichever loader threw it). */
function missingPackage(err: NodeJS.ErrnoException): { name: string; from: string | null } | null {
  if (err.code !== "MODULE_NOT_FOUND" && err.code !== "ERR_MODULE_NOT_FOUND") return null;
  const m =
    /Cannot find (?:module|package) '([^']+)'(?: imported from (\S+))?/.exec(err.message) ??
    /Cannot find module '([^']+)'/.exec(err.message);
  const spec = m?.[1];
  if (!spec || spec.startsWith(".") || spec.startsWith("/") || spec.startsWith("file:")) return null;
  if (spec.startsWith("node:")) return null;
  const parts = spec.split("/");
  const name = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
  const stack = /Require stack:\n- (\S+)/.exec(err.message)?.[1];
  return { name, from: m?.[2] ?? stack ?? null };
}

function loadFailure(entry: string, codeRoot: string, err: unknown): LoadError {
  const e = err as NodeJS.ErrnoException;
  const missing = missingPackage(e);
  if (missing) {
    const from = missing.from
      ? ` (imported by ${missing.from.replace(/^file:\/\//, "").replace(`${codeRoot}/`, "")})`
      : "";
    return new LoadError(
      `${entry} needs the package ${missing.name}${from}, which is not in the deployed code: run \`npm install ${missing.name}\` in the function's folder (it must be in "dependencies", not "devDependencies") and deploy again`,
    );
  }
  return new LoadError(`${entry} threw while loading: ${e?.message ?? String(err)}`);
}

/**
 * Imports the entry and returns its exports: the module's exports for CommonJS, its namespace for an
 * ES module. Lambda does the same: require() for CommonJS, import() for ES modules.
 */
export async function importModule(
  loaders: ModuleLoaders,
  codeRoot: string,
  entry: string,
  fs: FsProbe,
): Promise<Record<string, unknown>> {
  const file = `${codeRoot}/${entry}`;
  let loaded: unknown;
  try {
    if (moduleFormat(codeRoot, entry, fs) === "module") {
      loaded = await loaders.importModule(`file://${file.split("/").map(encodeURIComponent).join("/")}`);
    } else {
      loaded = loaders.createRequire(`${codeRoot}/`)(file);
    }
  } catch (err) {
    throw loadFailure(entry, codeRoot, err);
  }
  if ((typeof loaded !== "object" && typeof loaded !== "function") || loaded === null) return {};
  return loaded as Record<string, unknown>;
}

/** The export a Lambda handler name asks for (`handlers.get`), or a LoadError naming what is there. */
export function pickExport(
  exports: Record<string, unknown>,
  entry: string,
  exportPath: readonly string[],
): (...args: unknown[]) => unknown {
  let value: unknown = exports;
  for (const key of exportPath) {
    value =
      typeof value === "object" || typeof value === "function"
        ? (value as Record<string, unknown> | null)?.[key]
        : undefined;
  }
  // A CommonJS module imported as ESM, or `export default { handler }`, keeps its exports on default.
  const fallback = exports.default;
  if (
    typeof value !== "function" &&
    (typeof fallback === "object" || typeof fallback === "function") &&
    fallback !== null &&
    fallback !== exports
  ) {
    return pickExport(fallback as Record<string, unknown>, entry, exportPath);
  }
  if (typeof value !== "function") {
    const names = Object.keys(exports).filter((k) => k !== "default" || exports.default !== undefined);
    throw new LoadError(
      `${entry} has no function export ${exportPath.join(".")} (the handler name asks for it); it exports: ${names.join(", ") || "nothing"}`,
    );
  }
  return value as (...args: unknown[]) => unknown;
}
