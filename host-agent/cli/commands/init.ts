/** `faas init <dir>`: write a ready-to-deploy TypeScript function into a new or empty folder. */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { FUNCTION_NAME, RESERVED_FUNCTION_NAMES } from "../../../contracts/registry-layout.ts";
import { CliError } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption, UsageError } from "../command.ts";
import { defaultName } from "./deploy.ts";

/** The function shapes init writes: its module is templates/<name>/index.ts, typechecked with the repo. */
export const TEMPLATES = {
  class: {
    about: "a Genezio-style class, called over JSON-RPC",
    call: (url: string) =>
      `curl -s -X POST ${url} -d '{"jsonrpc":"2.0","method":"Greeter.hello","params":["Ada"],"id":1}'`,
  },
  handler: {
    about: "a Lambda-style handler of API Gateway v2 HTTP events",
    call: (url: string) => `curl -s -X POST '${url}/items/7?x=1' -d 'hi'`,
  },
} as const;
export type TemplateName = keyof typeof TEMPLATES;

const TEMPLATES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "templates");

/** The local agent's data plane, as `npm start` serves it (PORT changes it). */
function dataUrl(env: NodeJS.ProcessEnv): string {
  return env.FAAS_URL ?? `http://127.0.0.1:${env.PORT ?? 8080}`;
}

/** The files of a new function, by path inside its folder. */
export async function functionFiles(
  template: TemplateName,
  name: string,
  url: string,
): Promise<Record<string, string>> {
  const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
  return {
    "index.ts": await readFile(path.join(TEMPLATES_DIR, template, "index.ts"), "utf8"),
    "package.json": json({
      name,
      private: true,
      type: "module",
      main: "index.ts",
      scripts: { typecheck: "tsc --noEmit" },
      // Only for the editor and `npm run typecheck`: a deploy bundles index.ts with esbuild.
      devDependencies: { "@types/node": "^24.0.0", typescript: "^5.9.0" },
    }),
    "tsconfig.json": json({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        noEmit: true,
        isolatedModules: true,
        skipLibCheck: true,
        types: ["node"],
      },
      include: ["*.ts"],
    }),
    "README.md": [
      `# ${name}: ${TEMPLATES[template].about} (index.ts)`,
      // From the checkout: its .faas/admin-token is where faas finds the token npm start wrote.
      `Deploy it from the snapfaas checkout while \`npm start\` runs there: \`npx faas deploy <this folder> --name ${name}\`.`,
      `Call it: \`${TEMPLATES[template].call(`${url}/${name}`)}\`, then \`npx faas logs ${name}\`.`,
      "",
    ].join("\n"),
  };
}

export const initCommand: CommandSpec = {
  name: "init",
  summary: "write a ready-to-deploy TypeScript function (a class or a handler) into a new folder",
  description: [
    "Writes index.ts, package.json, tsconfig.json and a README into <dir>, which must be new or empty.",
    "Templates: class (a Genezio-style class over JSON-RPC), handler (a Lambda-style HTTP handler).",
  ].join("\n"),
  positionals: [{ name: "dir", required: true, description: "the new function's folder" }],
  options: {
    template: {
      type: "string",
      value: "<class|handler>",
      description: "the function's shape (default class)",
    },
    name: {
      type: "string",
      value: "<name>",
      description: "the function's name in its README and package.json (default: the folder's name)",
    },
  },
  json: true,
  examples: ["faas init my-fn && faas deploy my-fn", "faas init api --template handler"],
  async run(line, ctx) {
    const dir = path.resolve(line.args.dir!);
    const template = stringOption(line, "template") ?? "class";
    if (!Object.hasOwn(TEMPLATES, template)) {
      throw new UsageError(
        `--template must be one of ${Object.keys(TEMPLATES).join(", ")}: got "${template}"`,
        initCommand,
      );
    }
    const name = stringOption(line, "name") ?? defaultName(dir);
    if (!FUNCTION_NAME.test(name) || RESERVED_FUNCTION_NAMES.has(name)) {
      throw new CliError(
        `"${name}" is not a function name: a lower-case letter, then up to 62 of a-z, 0-9 and "-" (not ${[...RESERVED_FUNCTION_NAMES].join(", ")}); give one with --name`,
      );
    }
    if (existsSync(dir)) {
      if (!(await stat(dir)).isDirectory()) throw new CliError(`${dir} exists and is not a folder`);
      const entries = await readdir(dir);
      if (entries.length > 0) {
        throw new CliError(
          `${dir} is not empty (${entries.length} entries): faas init writes into a new or empty folder only`,
        );
      }
    }
    const files = await functionFiles(template as TemplateName, name, dataUrl(ctx.env));
    await mkdir(dir, { recursive: true });
    // `wx`: a file that appeared since the check is never overwritten.
    for (const [file, text] of Object.entries(files))
      await writeFile(path.join(dir, file), text, { flag: "wx" });
    if (line.json) {
      printJson({ dir, name, template, files: Object.keys(files) });
      return 0;
    }
    console.log(`wrote ${name} (${template}: ${TEMPLATES[template as TemplateName].about}) in ${dir}`);
    for (const file of Object.keys(files)) console.log(`  ${file}`);
    const shown = path.relative(process.cwd(), dir) || ".";
    console.log(`next: faas deploy ${shown}${name === defaultName(dir) ? "" : ` --name ${name}`}`);
    return 0;
  },
};
