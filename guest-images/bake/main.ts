/**
 * `npm run bake -- --driver process --out DIR`
 * `npm run bake -- --driver firecracker --guest osv|linux --out DIR [--dry-run] [--upload s3://bucket/prefix]`
 *
 * Bakes a base image into DIR/<base version>/ (artifacts + manifest.json), or with --dry-run prints
 * the base version and the builder-host command plan without running anything.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { firecrackerBakeJob } from "./firecracker-job.ts";
import { computeBaseVersion } from "./manifest.ts";
import { bakeBaseImage } from "./pipeline.ts";
import { formatPlan, runPlan } from "./plan.ts";
import { processBakeJob } from "./process.ts";
import { uploadPlan } from "./upload.ts";

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const USAGE = `usage:
  npm run bake -- --driver process --out DIR [--dry-run]
  npm run bake -- --driver firecracker --guest osv|linux --out DIR [--dry-run]
                  [--runtime-bundle FILE] [--work DIR] [--upload s3://bucket/prefix] [--popf-seconds N]`;

export async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 64;
  }
  const driver = values.driver;
  const out = values.out ? path.resolve(values.out) : undefined;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!out || (driver !== "process" && driver !== "firecracker")) {
    console.error(`--driver process|firecracker and --out DIR are required\n${USAGE}`);
    return 64;
  }
  const log = (line: string) => console.error(line);

  if (driver === "process") {
    const job = await processBakeJob();
    const version = computeBaseVersion(job.inputs);
    if (values["dry-run"]) {
      console.log(`# base version ${version}\n# would bake the process base into ${path.join(out, version)}`);
      return 0;
    }
    const result = await bakeBaseImage(out, job, { log });
    console.log(result.dir);
    return 0;
  }

  const guest = values.guest;
  if (guest !== "osv" && guest !== "linux") {
    console.error(`--guest osv|linux is required with --driver firecracker\n${USAGE}`);
    return 64;
  }
  const popfSeconds = values["popf-seconds"] === undefined ? undefined : Number(values["popf-seconds"]);
  const fc = await firecrackerBakeJob({
    guest,
    workDir: path.resolve(values.work ?? path.join(out, ".work")),
    repoDir: REPO_DIR,
    ...(values["runtime-bundle"] ? { runtimeBundle: path.resolve(values["runtime-bundle"]) } : {}),
    dryRun: values["dry-run"] === true,
    ...(popfSeconds !== undefined && Number.isFinite(popfSeconds) ? { popfCheckSeconds: popfSeconds } : {}),
    log,
  });
  const version = computeBaseVersion(fc.job.inputs);
  const imageDir = path.join(out, version);
  if (values["dry-run"]) {
    console.log(`# base version ${version}`);
    console.log(`# inputs ${JSON.stringify(fc.job.inputs)}`);
    console.log(`# kernel args: ${fc.job.kernelArgs}`);
    console.log("# the real run builds into a private directory beside it and renames it at the end\n");
    process.stdout.write(formatPlan(fc.planFor(imageDir)));
    if (values.upload) process.stdout.write(`\n${formatPlan(uploadPlan(imageDir, version, values.upload))}`);
    return 0;
  }
  const result = await bakeBaseImage(out, fc.job, { log });
  if (values.upload) await runPlan(uploadPlan(result.dir, result.manifest.version, values.upload), log);
  console.log(result.dir);
  return 0;
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      driver: { type: "string" },
      guest: { type: "string" },
      out: { type: "string" },
      work: { type: "string" },
      "runtime-bundle": { type: "string" },
      upload: { type: "string" },
      "popf-seconds": { type: "string" },
      "dry-run": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(`bake failed: ${error instanceof Error ? error.message : String(error)}`);
      process.exitCode = 1;
    },
  );
}
