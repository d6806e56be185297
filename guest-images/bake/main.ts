/**
 * `npm run bake -- --driver process --out DIR`
 * `npm run bake -- --driver firecracker --guest linux|osv --out DIR [--work DIR] [--vcpus N --memory-mib N]
 *    [--host-ami ami-...] [--dry-run | --rehearse] [--upload s3://bucket/prefix]`
 *
 * Bakes a base image into DIR/<base version>/ (artifacts + manifest.json) and prints that folder as
 * the last stdout line, or with --dry-run prints the base version and the builder-host command plan
 * without running anything. --rehearse runs what needs neither KVM nor the internet (see
 * firecracker-job.ts) and stands placeholders in for the VM artifacts: a test of the seams only.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { computeBaseVersion } from "../../contracts/base-manifest.ts";
import { AMI_ID } from "../../contracts/host-ami.ts";
import { firecrackerBakeJob } from "./firecracker-job.ts";
import { bakeBaseImage } from "./pipeline.ts";
import { formatPlan, runPlan } from "./plan.ts";
import { processBakeJob } from "./process.ts";
import { uploadPlan } from "./upload.ts";

const REPO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const USAGE = `usage:
  npm run bake -- --driver process --out DIR [--dry-run]
  npm run bake -- --driver firecracker --guest linux|osv --out DIR [--dry-run | --rehearse]
                  [--vcpus N] [--memory-mib N] [--host-ami ami-...] [--runtime-bundle FILE]
                  [--work DIR] [--upload s3://bucket/prefix] [--popf-seconds N]`;

/** A positive integer flag, or an error naming it. */
function intFlag(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[1-9]\d*$/.test(value)) throw new Error(`--${name} must be a positive integer, got "${value}"`);
  return Number(value);
}

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
  let vcpus: number | undefined;
  let memMiB: number | undefined;
  try {
    vcpus = intFlag("vcpus", values.vcpus);
    memMiB = intFlag("memory-mib", values["memory-mib"]);
    if ((vcpus === undefined) !== (memMiB === undefined))
      throw new Error("give --vcpus and --memory-mib together");
    if (values["host-ami"] !== undefined && !AMI_ID.test(values["host-ami"]))
      throw new Error(`--host-ami must be an AMI id like ami-0123456789abcdef0, got "${values["host-ami"]}"`);
    if (values["dry-run"] && values.rehearse) throw new Error("--dry-run and --rehearse exclude each other");
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 64;
  }
  const fc = await firecrackerBakeJob({
    guest,
    // Outside OUT: the checkouts and downloads are a cache a retried bake reuses, never uploaded.
    workDir: path.resolve(values.work ?? `${out}.work`),
    repoDir: REPO_DIR,
    ...(values["runtime-bundle"] ? { runtimeBundle: path.resolve(values["runtime-bundle"]) } : {}),
    dryRun: values["dry-run"] === true,
    rehearse: values.rehearse === true,
    ...(vcpus !== undefined && memMiB !== undefined ? { machine: { vcpus, memMiB } } : {}),
    ...(values["host-ami"] === undefined ? {} : { hostAmi: values["host-ami"] }),
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
      rehearse: { type: "boolean" },
      vcpus: { type: "string" },
      "memory-mib": { type: "string" },
      "host-ami": { type: "string" },
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
