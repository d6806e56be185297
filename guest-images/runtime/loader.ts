/** Finds and imports the user's module from the read-only code path. */
import type { CreateRequireFn } from "./require-type.ts";

export class LoadError extends Error {
  override readonly name = "LoadError";
}

export interface FsProbe {
  exists(path: string): boolean;
  readFile(path: string): string;
}

/** Entry resolution: package.json `main`, else index.js, else index.mjs, else index.cjs. */
export function resolveEntry(codeRoot: string, fs: FsProbe): string {
  const pkgPath = `${codeRoot}/package.json`;
  if (fs.exists(pkgPath)) {
    let pkg: { main?: unknown };
    try {
      pkg = JSON.parse(fs.readFile(pkgPath)) as { main?: unknown };
    } catch (err) {
      throw new LoadError(`package.json is not valid JSON: ${(err as Error).message}`);
    }
    if (pkg.main !== undefined) {
      if (typeof pkg.main !== "string" || pkg.main.length === 0) {
        throw new LoadError('package.json "main" must be a non-empty string');
      }
      const main = pkg.main.replace(/^\.\//, "");
      if (main.startsWith("/") || main.split("/").includes("..")) {
        throw new LoadError(`package.json "main" (${pkg.main}) must stay inside the bundle`);
      }
      for (const candidate of [main, `${main}.js`, `${main}.mjs`, `${main}.cjs`, `${main}/index.js`]) {
        if (fs.exists(`${codeRoot}/${candidate}`)) return candidate;
      }
      throw new LoadError(`package.json "main" points to ${pkg.main}, which is not in the bundle`);
    }
  }
  for (const candidate of ["index.js", "index.mjs", "index.cjs"]) {
    if (fs.exists(`${codeRoot}/${candidate}`)) return candidate;
  }
  throw new LoadError(
    'no entry module: add "main" to package.json, or an index.js or index.mjs at the bundle root',
  );
}

/**
 * Imports the module through require(): it loads CommonJS and, on Node >= 20.19, ES modules without
 * top-level await. (Dynamic import() is not available in a process started from a startup snapshot.)
 */
export function importModule(
  createRequire: CreateRequireFn,
  codeRoot: string,
  entry: string,
): Record<string, unknown> {
  const requireFromCode = createRequire(`${codeRoot}/`);
  try {
    const loaded = requireFromCode(`${codeRoot}/${entry}`) as unknown;
    if ((typeof loaded !== "object" && typeof loaded !== "function") || loaded === null) return {};
    return loaded as Record<string, unknown>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ERR_REQUIRE_ASYNC_MODULE") {
      throw new LoadError(
        `${entry} uses top-level await, which the runtime cannot load: bundle it or remove it`,
      );
    }
    throw new LoadError(`${entry} threw while loading: ${e.message}`);
  }
}
