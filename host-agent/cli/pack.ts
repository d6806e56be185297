/**
 * Turns a function's folder into a deployable bundle, the way a Lambda zip is made: the folder's files
 * as they are (static files, templates, JSON, everything code may read by path), TypeScript compiled
 * file by file next to its source (so __dirname, import.meta.url and relative paths mean what they meant
 * in the folder), and the production dependencies from node_modules (found the way Node finds them, in
 * the folder or hoisted above it as npm workspaces do), without what only development needs.
 *
 * What is left out: DEFAULT_IGNORES, then `.faasignore` (gitignore syntax, matched by the `ignore`
 * package: the matcher eslint and prettier use for their ignore files, so its rules are the ones users
 * know from .gitignore); with "files" in package.json, only those paths ship (npm's rule), plus
 * package.json and the entry. Dependencies reachable only from "devDependencies" never ship.
 */
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { build, type Plugin } from "esbuild";
import ignore, { type Ignore } from "ignore";
import { create } from "tar";
import { EntryError, parseHandlerName } from "../../contracts/function-entry.ts";

export class PackError extends Error {
  override readonly name = "PackError";
}

/** Never shipped: version control, the agent's own state, editor and OS litter, the ignore file itself. */
export const DEFAULT_IGNORES = [
  ".git/",
  ".hg/",
  ".svn/",
  ".faas/",
  ".faasignore",
  ".DS_Store",
  "npm-debug.log*",
  "*.d.ts",
  "*.tsbuildinfo",
] as const;

const ENTRY_CANDIDATES = [
  "index.ts",
  "index.mts",
  "index.js",
  "index.mjs",
  "index.cjs",
  "src/index.ts",
  "src/index.js",
];

const TS_SOURCE = /\.(ts|mts|cts|tsx)$/;

interface PackageJson {
  name?: string;
  main?: string;
  source?: string;
  type?: string;
  files?: unknown;
  faas?: { handler?: string };
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

function readPackage(dir: string): PackageJson | undefined {
  const file = path.join(dir, "package.json");
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, "utf8")) as PackageJson;
  } catch (err) {
    throw new PackError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The output path of a TypeScript source: `.ts`/`.tsx` -> `.js`, `.mts` -> `.mjs`, `.cts` -> `.cjs`. */
export function compiledName(file: string): string {
  return file.replace(/\.(m|c)?tsx?$/, (_m, mc: string | undefined) => `.${mc ?? ""}js`);
}

/** The folder's entry, as it is in the folder (a .ts file, before it is compiled). */
export function findEntry(dir: string): string {
  return findEntryIn(dir, readPackage(dir));
}

export interface PackOptions {
  /** A Lambda handler name (`src/lambda.handler`), written into the bundle's package.json as faas.handler. */
  readonly handler?: string;
}

/** One file of the bundle: where it goes, and where its bytes come from (or the bytes themselves). */
interface BundleFile {
  readonly dest: string;
  readonly from: string;
}

function userIgnore(dir: string): Ignore {
  const ig = ignore().add([...DEFAULT_IGNORES]);
  const file = path.join(dir, ".faasignore");
  if (existsSync(file)) ig.add(readFileSync(file, "utf8"));
  return ig;
}

/** package.json "files", as npm reads it: only these paths (and their contents) ship. */
function filesAllowList(dir: string, pkg: PackageJson | undefined): ((rel: string) => boolean) | null {
  if (pkg?.files === undefined) return null;
  if (!Array.isArray(pkg.files) || pkg.files.some((f) => typeof f !== "string")) {
    throw new PackError(`${path.join(dir, "package.json")}: "files" must be an array of paths or globs`);
  }
  const allow = ignore().add(pkg.files.map((f: string) => f.replace(/^\.\//, "")));
  return (rel) => allow.ignores(rel);
}

/** The folder's own files (not node_modules), relative paths, sorted. */
async function userFiles(dir: string, pkg: PackageJson | undefined, entry: string): Promise<string[]> {
  const ig = userIgnore(dir);
  const allowed = filesAllowList(dir, pkg);
  const out: string[] = [];
  const seen = new Set<string>();
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(dir, rel);
    const real = realpathSync(abs);
    if (seen.has(real)) return;
    seen.add(real);
    for (const item of (await readdir(abs)).sort()) {
      const childRel = rel ? `${rel}/${item}` : item;
      if (item === "node_modules") continue;
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(path.join(dir, childRel));
      } catch {
        throw new PackError(
          `${path.join(dir, childRel)} is a symlink to nothing: remove it or add it to .faasignore`,
        );
      }
      if (st.isDirectory()) {
        if (!ig.ignores(`${childRel}/`)) await walk(childRel);
      } else if (st.isFile() && !ig.ignores(childRel)) {
        out.push(childRel);
      }
    }
  };
  await walk("");
  return out.filter(
    (f) => f === "package.json" || f === entry || allowed === null || allowed(f) || allowed(compiledName(f)),
  );
}

/** The name of the package a bare specifier imports (`@scope/x/y` -> `@scope/x`), or null. */
function packageOf(specifier: string): string | null {
  if (/^(\.|\/|[a-z]+:)/i.test(specifier)) return null;
  const parts = specifier.split("/");
  const name = specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
  return builtinModules.includes(name) ? null : name;
}

interface CompiledSources {
  /** Packages the folder's TypeScript imports, with the file that first imports each. */
  readonly imports: Map<string, string>;
}

/**
 * Compiles every TypeScript source into `out`, one output file per source at its compiled name. Imports
 * stay imports: of packages as written (the shipped node_modules answers them), of the folder's own
 * files rewritten to the compiled file's name (so `./util` and `./util.ts` work in ES modules too).
 */
async function compileTypeScript(dir: string, sources: string[], pkg: PackageJson | undefined, out: string) {
  const imports = new Map<string, string>();
  const ownFiles = new Set(sources.map((s) => path.join(dir, s)));
  const outputOf = (abs: string) => path.join(out, compiledName(path.relative(dir, abs)));
  const plugin: Plugin = {
    name: "faas-per-file",
    setup(b) {
      b.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === "entry-point" || args.pluginData?.faasInner) return undefined;
        const pkgName = packageOf(args.path);
        const resolved = await b.resolve(args.path, {
          kind: args.kind,
          resolveDir: args.resolveDir,
          importer: args.importer,
          pluginData: { faasInner: true },
        });
        const target = resolved.errors.length === 0 ? resolved.path : null;
        const inFolder =
          target?.startsWith(`${dir}${path.sep}`) === true &&
          !target.split(path.sep).includes("node_modules");
        if (target && inFolder) {
          const dest =
            TS_SOURCE.test(target) && ownFiles.has(target)
              ? outputOf(target)
              : path.join(out, path.relative(dir, target));
          let spec = path
            .relative(path.dirname(outputOf(args.importer)), dest)
            .split(path.sep)
            .join("/");
          if (!spec.startsWith(".")) spec = `./${spec}`;
          return { path: spec, external: true };
        }
        if (pkgName && !imports.has(pkgName)) imports.set(pkgName, path.relative(dir, args.importer));
        return { path: args.path, external: true };
      });
    },
  };
  const groups = new Map<string, string[]>();
  for (const s of sources) {
    const format = /\.mts$/.test(s)
      ? "esm"
      : /\.cts$/.test(s)
        ? "cjs"
        : pkg?.type === "module"
          ? "esm"
          : "cjs";
    const ext = /\.mts$/.test(s) ? ".mjs" : /\.cts$/.test(s) ? ".cjs" : ".js";
    const key = `${format}${ext}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const [key, files] of groups) {
    const format = key.slice(0, 3) as "esm" | "cjs";
    const ext = key.slice(3);
    const result = await build({
      entryPoints: files.map((f) => path.join(dir, f)),
      absWorkingDir: dir,
      outbase: dir,
      outdir: out,
      outExtension: { ".js": ext },
      bundle: true,
      platform: "node",
      format,
      target: "node22",
      logLevel: "silent",
      legalComments: "none",
      plugins: [plugin],
    }).catch(
      (
        err: Error & { errors?: Array<{ text: string; location?: { file: string; line: number } | null }> },
      ) => {
        const first = err.errors?.[0];
        const where = first?.location ? `${first.location.file}:${first.location.line}: ` : "";
        throw new PackError(`esbuild could not compile ${dir}: ${where}${first?.text ?? err.message}`);
      },
    );
    if (result.errors.length > 0) throw new PackError(result.errors.map((e) => e.text).join("\n"));
  }
  return { imports } satisfies CompiledSources;
}

/**
 * Bare imports of the folder's plain JavaScript: a scan, not a parse, so it also sees browser scripts and
 * comments. What it finds ships when installed; what is not installed is left to the load to report.
 */
function scanJsImports(dir: string, files: string[], imports: Map<string, string>): void {
  const pattern = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)["']([^"'\n]+)["']/g;
  for (const f of files) {
    if (!/\.(js|mjs|cjs)$/.test(f)) continue;
    const text = readFileSync(path.join(dir, f), "utf8");
    for (const m of text.matchAll(pattern)) {
      const name = packageOf(m[1]!);
      if (name && !imports.has(name)) imports.set(name, f);
    }
  }
}

/** Where Node finds package `name` from `fromDir`: the nearest node_modules/<name> up the tree. */
function findPackage(name: string, fromDir: string): string | null {
  for (let d = fromDir; ; d = path.dirname(d)) {
    if (path.basename(d) !== "node_modules") {
      const candidate = path.join(d, "node_modules", name);
      if (existsSync(path.join(candidate, "package.json"))) return realpathSync(candidate);
    }
    if (path.dirname(d) === d) return null;
  }
}

/**
 * The production dependency closure: every package reachable from `roots` through "dependencies",
 * "optionalDependencies" and installed "peerDependencies", each placed where Node finds it from its
 * dependent in the bundle. A package in the folder keeps its path; one hoisted above the folder goes to
 * node_modules/<name>, or nested under its dependent when another version holds that name.
 */
function dependencyClosure(dir: string, roots: Map<string, { why: string; optional: boolean }>) {
  const placed = new Map<string, string>(); // bundle path -> real dir
  const placedOf = new Map<string, string>(); // real dir -> bundle path
  const missing: Array<{ name: string; why: string }> = [];
  const realDir = realpathSync(dir);
  const place = (name: string, real: string, dependentBundleDir: string): string => {
    const known = placedOf.get(real);
    if (known) return known;
    const rel = path.relative(realDir, real);
    let dest: string;
    if (!rel.startsWith("..") && !path.isAbsolute(rel)) dest = rel.split(path.sep).join("/");
    else {
      const top = `node_modules/${name}`;
      dest = placed.has(top)
        ? `${dependentBundleDir ? `${dependentBundleDir}/` : ""}node_modules/${name}`
        : top;
    }
    placed.set(dest, real);
    placedOf.set(real, dest);
    return dest;
  };
  const queue: Array<{ name: string; from: string; fromBundle: string; why: string; optional: boolean }> = [];
  for (const [name, r] of roots)
    queue.push({ name, from: realDir, fromBundle: "", why: r.why, optional: r.optional });
  while (queue.length > 0) {
    const next = queue.shift()!;
    const real = findPackage(next.name, next.from);
    if (!real) {
      if (!next.optional) missing.push({ name: next.name, why: next.why });
      continue;
    }
    if (placedOf.has(real)) continue;
    const dest = place(next.name, real, next.fromBundle);
    const pkg = readPackage(real) ?? {};
    const deps: Array<[string, boolean]> = [
      ...Object.keys(pkg.dependencies ?? {}).map((n): [string, boolean] => [n, false]),
      ...Object.keys(pkg.optionalDependencies ?? {}).map((n): [string, boolean] => [n, true]),
      ...Object.keys(pkg.peerDependencies ?? {}).map((n): [string, boolean] => [n, true]),
    ];
    for (const [name, optional] of deps) {
      queue.push({ name, from: real, fromBundle: dest, why: `${next.name} depends on it`, optional });
    }
  }
  return { placed, missing };
}

/** The files of one package folder (its own node_modules excluded: the closure places those). */
async function packageFiles(realDir: string, dest: string): Promise<BundleFile[]> {
  const out: BundleFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const item of (await readdir(path.join(realDir, rel))).sort()) {
      const childRel = rel ? `${rel}/${item}` : item;
      if (childRel === "node_modules") continue;
      let st: ReturnType<typeof statSync>;
      try {
        st = statSync(path.join(realDir, childRel));
      } catch {
        continue; // A dangling link inside a package (often a leftover .bin entry) is not code.
      }
      if (st.isDirectory()) await walk(childRel);
      else if (st.isFile()) out.push({ dest: `${dest}/${childRel}`, from: path.join(realDir, childRel) });
    }
  };
  await walk("");
  return out;
}

function missingDependencyError(
  dir: string,
  pkg: PackageJson | undefined,
  missing: Array<{ name: string; why: string }>,
) {
  const lines = missing.slice(0, 5).map(({ name, why }) => {
    const declared = pkg?.dependencies?.[name] ?? pkg?.optionalDependencies?.[name];
    const dev = pkg?.devDependencies?.[name];
    if (declared) return `${name} (in "dependencies") is not installed: run \`npm install\` in ${dir}`;
    if (dev)
      return `${name} is imported by ${why} but is only in "devDependencies", which do not ship: move it with \`npm install --save-prod ${name}\``;
    return `${name} is needed (${why}) but not installed: run \`npm install ${name}\` in ${dir}`;
  });
  return new PackError(
    `missing dependencies:\n  ${lines.join("\n  ")}${missing.length > 5 ? `\n  (and ${missing.length - 5} more)` : ""}`,
  );
}

/**
 * Puts the function in `dir` into `out` the way `faas deploy` ships it (the bake builds its hello-world
 * code disk from this too, so the base is proven against what a deploy really sends).
 */
export async function bundleFunctionInto(
  dir: string,
  out: string,
  options: PackOptions = {},
): Promise<string[]> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new PackError(`${dir}: no such folder`);
  const root = realpathSync(path.resolve(dir));
  let pkg = readPackage(root);
  if (options.handler !== undefined) {
    try {
      parseHandlerName(options.handler);
    } catch (err) {
      if (err instanceof EntryError) throw new PackError(`--handler: ${err.message}`);
      throw err;
    }
    pkg = { ...(pkg ?? {}), faas: { ...(pkg?.faas ?? {}), handler: options.handler } };
  }
  const entry = findEntryIn(root, pkg);
  const own = await userFiles(root, pkg, entry);
  const sources = own.filter((f) => TS_SOURCE.test(f) && !f.endsWith(".d.ts"));
  const compiled = new Set(sources.map(compiledName));
  const { imports } =
    sources.length > 0
      ? await compileTypeScript(root, sources, pkg, out)
      : { imports: new Map<string, string>() };
  const plain = own.filter((f) => !TS_SOURCE.test(f) && !compiled.has(f) && f !== "package.json");
  const scanned = new Map<string, string>();
  scanJsImports(root, plain, scanned);

  const roots = new Map<string, { why: string; optional: boolean }>();
  for (const n of Object.keys(pkg?.dependencies ?? {}))
    roots.set(n, { why: "package.json", optional: false });
  for (const n of Object.keys(pkg?.optionalDependencies ?? {}))
    roots.set(n, { why: "package.json", optional: true });
  for (const [n, file] of imports) if (!roots.has(n)) roots.set(n, { why: file, optional: false });
  for (const [n, file] of scanned) if (!roots.has(n)) roots.set(n, { why: file, optional: true });
  const { placed, missing } = dependencyClosure(root, roots);
  if (missing.length > 0) throw missingDependencyError(dir, pkg, missing);

  const files: BundleFile[] = plain.map((f) => ({ dest: f, from: path.join(root, f) }));
  for (const [dest, real] of [...placed].sort(([a], [b]) => a.localeCompare(b))) {
    files.push(...(await packageFiles(real, dest)));
  }
  for (const f of files) {
    const to = path.join(out, f.dest);
    await mkdir(path.dirname(to), { recursive: true });
    await copyFile(f.from, to);
    // Only the x bits travel: the agent refuses setuid/setgid bits, and write bits mean nothing there.
    await chmod(to, (await stat(f.from)).mode & 0o111 ? 0o755 : 0o644);
  }
  if (pkg)
    await writeFile(
      path.join(out, "package.json"),
      `${JSON.stringify(shippedPackage(pkg, entry), null, 2)}\n`,
    );
  else await writeFile(path.join(out, "package.json"), `${JSON.stringify({ main: compiledName(entry) })}\n`);
  return [...files.map((f) => f.dest), ...[...compiled], "package.json"].sort();
}

function findEntryIn(root: string, pkg: PackageJson | undefined): string {
  if (pkg?.faas?.handler) {
    const { module } = parseHandlerName(pkg.faas.handler);
    for (const ext of [".ts", ".mts", ".cts", ".js", ".mjs", ".cjs"]) {
      if (existsSync(path.join(root, module + ext))) return module + ext;
    }
    throw new PackError(
      `${root}: handler ${pkg.faas.handler} names ${module}, but there is no ${module}.ts or ${module}.js`,
    );
  }
  for (const field of [pkg?.source, pkg?.main]) {
    if (typeof field === "string" && existsSync(path.join(root, field))) return field.replace(/^\.\//, "");
  }
  for (const candidate of ENTRY_CANDIDATES) if (existsSync(path.join(root, candidate))) return candidate;
  throw new PackError(
    `${root}: no entry found (package.json "faas.handler" or "main", or one of ${ENTRY_CANDIDATES.join(", ")})`,
  );
}

/**
 * The bundle's package.json: the folder's, with "main" pointing at the compiled entry (a TypeScript
 * main becomes its .js) and the fields only npm uses dropped.
 */
function shippedPackage(pkg: PackageJson, entry: string): PackageJson {
  const {
    devDependencies: _dev,
    files: _files,
    source: _source,
    ...rest
  } = pkg as PackageJson & Record<string, unknown>;
  const shipped: PackageJson & Record<string, unknown> = { ...rest };
  if (!pkg.faas?.handler) shipped.main = compiledName(entry);
  return shipped;
}

/**
 * The parts of a packed folder that weigh most (each top-level file or folder, and each package in
 * node_modules), for the advice when a bundle is over the agent's limit.
 */
export function heaviestParts(sizes: ReadonlyMap<string, number>, count = 5): string {
  const parts = new Map<string, number>();
  for (const [file, bytes] of sizes) {
    const p = file.split("/");
    const key =
      p[0] === "node_modules"
        ? p.slice(0, p[1]?.startsWith("@") ? 3 : 2).join("/")
        : p.length > 1
          ? `${p[0]}/`
          : p[0]!;
    parts.set(key, (parts.get(key) ?? 0) + bytes);
  }
  return [...parts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([k, v]) => `${k} ${(v / 1024 / 1024).toFixed(1)} MiB`)
    .join(", ");
}

/** The tar.gz bytes of the function, and the files in it. Deterministic: same folder, same bytes. */
export async function packFunction(dir: string, options: PackOptions = {}): Promise<Buffer> {
  return (await packFunctionWithList(dir, options)).bytes;
}

export async function packFunctionWithList(
  dir: string,
  options: PackOptions = {},
): Promise<{ bytes: Buffer; files: string[]; sizes: Map<string, number> }> {
  if (!existsSync(dir)) throw new PackError(`${dir}: no such folder`);
  const out = await mkdtemp(path.join(tmpdir(), "faas-pack-"));
  try {
    const files = await bundleFunctionInto(dir, out, options);
    const chunks: Buffer[] = [];
    const stream = create(
      { gzip: true, cwd: out, portable: true, mtime: new Date(0), noDirRecurse: true },
      files,
    );
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    const sizes = new Map<string, number>();
    for (const f of files) sizes.set(f, (await stat(path.join(out, f))).size);
    return { bytes: Buffer.concat(chunks), files, sizes };
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}
