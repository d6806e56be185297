/**
 * Test helper: the official Firecracker API spec (swagger 2.0) of the pinned release, compiled into ajv
 * validators for request bodies. The project ships no copy: it is read from FIRECRACKER_API_SPEC, else
 * from ../shared/specs beside the repository; suites that need it skip with one line without it.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const specPath =
  process.env["FIRECRACKER_API_SPEC"] ?? resolve(repoRoot, "../shared/specs/firecracker-api-v1.16.1.yaml");

/** Skips the calling suite or test, with one line, when the spec file is not there. */
export function skipWithoutSpec(ctx: Mocha.Context): void {
  if (existsSync(specPath)) return;
  console.log(
    `      skipped: no Firecracker API spec at ${specPath} (set FIRECRACKER_API_SPEC to the v1.16.1 swagger file)`,
  );
  ctx.skip();
}

interface SwaggerParameter {
  in: string;
  schema?: { $ref?: string };
}
interface SwaggerSpec {
  info: { version: string };
  paths: Record<string, Record<string, { parameters?: SwaggerParameter[] }>>;
  definitions: Record<string, unknown>;
}

/**
 * Firecracker rejects unknown fields (serde `deny_unknown_fields`), but the spec leaves
 * additionalProperties open; closing every object definition makes a misspelt key fail here too.
 */
function closeObjects(node: unknown): void {
  if (Array.isArray(node)) {
    for (const item of node) closeObjects(item);
    return;
  }
  if (node === null || typeof node !== "object") return;
  const obj = node as Record<string, unknown>;
  if (
    obj["type"] === "object" &&
    obj["properties"] !== undefined &&
    obj["additionalProperties"] === undefined
  ) {
    obj["additionalProperties"] = false;
  }
  for (const value of Object.values(obj)) closeObjects(value);
}

export interface SpecValidator {
  readonly version: string;
  /** Names of the spec definitions, e.g. "Drive". */
  readonly definitions: string[];
  /** Validates `body` against a named definition; returns ajv's error text or null when valid. */
  validateDefinition(name: string, body: unknown): string | null;
  /** Validates a request body against the spec's body parameter of `method path` (path params filled in). */
  validateRequest(method: string, path: string, body: unknown): string | null;
  /** The spec path template matching a concrete path, or undefined when the spec has no such endpoint. */
  matchPath(method: string, path: string): string | undefined;
}

let cached: SpecValidator | undefined;

export function loadSpec(): SpecValidator {
  if (cached) return cached;
  const spec = parse(readFileSync(specPath, "utf8")) as SwaggerSpec;
  closeObjects(spec.definitions);
  const ajv = new Ajv({ allErrors: true, strict: false });
  ajv.addFormat("int64", { type: "number", validate: (n: number) => Number.isSafeInteger(n) });
  ajv.addFormat("int32", {
    type: "number",
    validate: (n: number) => Number.isInteger(n) && Math.abs(n) < 2 ** 31,
  });
  // MmdsConfig.ipv4_address uses a regular expression as its "format".
  ajv.addFormat(
    "169.254.([1-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4]).([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])",
    /^169\.254\.\d+\.\d+$/,
  );
  ajv.addSchema({ definitions: spec.definitions }, "firecracker");
  const byDefinition = new Map<string, ValidateFunction>();
  const validatorFor = (name: string): ValidateFunction => {
    let fn = byDefinition.get(name);
    if (!fn) {
      if (!(name in spec.definitions)) throw new Error(`the spec has no definition ${name}`);
      fn = ajv.compile({ $ref: `firecracker#/definitions/${name}` });
      byDefinition.set(name, fn);
    }
    return fn;
  };
  const templates = Object.keys(spec.paths).map((template) => ({
    template,
    regex: new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`),
  }));
  const matchPath = (method: string, path: string): string | undefined =>
    templates.find((t) => t.regex.test(path) && spec.paths[t.template]?.[method.toLowerCase()] !== undefined)
      ?.template;
  const validateDefinition = (name: string, body: unknown): string | null => {
    const fn = validatorFor(name);
    return fn(body) ? null : ajv.errorsText(fn.errors, { dataVar: name });
  };
  cached = {
    version: spec.info.version,
    definitions: Object.keys(spec.definitions),
    validateDefinition,
    matchPath,
    validateRequest(method, path, body) {
      const template = matchPath(method, path);
      if (!template) return `the spec has no ${method} ${path}`;
      const operation = spec.paths[template]![method.toLowerCase()]!;
      const bodyParam = operation.parameters?.find((p) => p.in === "body");
      if (!bodyParam) return body === undefined ? null : `${method} ${template} takes no body`;
      const ref = bodyParam.schema?.$ref;
      if (!ref) return null;
      return validateDefinition(ref.replace("#/definitions/", ""), body);
    },
  };
  return cached;
}
