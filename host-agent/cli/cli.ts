/**
 * faas: start the local platform, deploy, invoke, list and remove functions.
 *
 *   faas start                          build the base, start the agent, deploy examples/*
 *   faas build [--node 22|24]           bake the process sandbox base only
 *   faas deploy <dir> [--name <name>] [--handler <file.export>]   ship a folder and deploy it
 *   faas invoke <name> <Class.method> [json params]
 *   faas ls | faas rm <name> | faas logs <name> [--limit <n>]
 *   faas doctor [config.json]
 *   faas release [<base-dir-or-release.json>] [--canary <percent>] [--no-wait]
 *   faas rollback [--no-wait]
 */
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { adminRequest, CliError, type Endpoints, endpointsFromEnv } from "./admin-client.ts";
import { heaviestParts, PackError, type PackOptions, packFunctionWithList } from "./pack.ts";
import { releaseCommand, rollbackCommand } from "./release.ts";

const USAGE = `usage:
  faas start                                   build, start the agent, deploy every folder in examples/
  faas build [--out <dir>]                     bake the process sandbox's base image
        [--node <major>]                       the base's pinned Node LTS: 22 or 24 (default 24)
        [--runtime-variant <name>]             (a variant stamps another runtime build: a new base version)
  faas deploy <dir> [--name <name>]            ship <dir> (its files, compiled TypeScript, production node_modules)
        [--handler <file.export>]              a Lambda handler name, e.g. src/lambda.handler
  faas invoke <name> <Class.method> [params]   call a JSON-RPC method; params is a JSON array
  faas ls                                      list deployed functions
  faas logs <name> [--limit <n>]               the function's last console lines (at most 500)
  faas rm <name>                               delete a function
  faas doctor [config.json]                    check this host for the firecracker driver (KVM, binaries, cgroups)
  faas release [<dir>|<release.json>]          roll the agent to a baked base folder or a release file
        [--canary <percent>] [--no-wait]       (no argument: show where the roll stands)
  faas rollback [--no-wait]                    abandon the roll in flight, or roll back to the previous base
environment: FAAS_URL, FAAS_ADMIN_URL, FAAS_ADMIN_TOKEN, FAAS_STATE_DIR, PORT, ADMIN_PORT
  FAAS_DRIVER=firecracker FAAS_VMM=qemu [FAAS_VMM_ACCELERATOR=tcg|kvm|auto] faas start: microVMs on QEMU, base baked here`;

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

export async function deployFolder(ep: Endpoints, dir: string, name: string, options: PackOptions = {}) {
  const { bytes, sizes } = await packFunctionWithList(dir, options);
  const { json } = await adminRequest(ep, "PUT", `/v1/functions/${encodeURIComponent(name)}`, {
    bytes,
    type: "application/gzip",
  }).catch((err: Error) => {
    if (err instanceof CliError && /failed \(413\)/.test(err.message)) {
      throw new CliError(
        `${err.message}; heaviest parts: ${heaviestParts(sizes)} (leave out what the function does not need with a .faasignore)`,
      );
    }
    throw err;
  });
  return json as { function: { name: string; revision: number; codeHash: string }; load: { style: string } };
}

function defaultName(dir: string): string {
  return path
    .basename(path.resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-");
}

async function invoke(ep: Endpoints, args: string[]): Promise<number> {
  const [name, method, rawParams] = args;
  if (!name || !method) throw new CliError("usage: faas invoke <name> <Class.method> [json params]");
  let params: unknown = [];
  if (rawParams !== undefined) {
    try {
      params = JSON.parse(rawParams);
    } catch (err) {
      throw new CliError(`params must be a JSON array, e.g. '["Ada", 3]': ${(err as Error).message}`);
    }
    if (!Array.isArray(params)) params = [params];
  }
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(`${ep.dataUrl}/${encodeURIComponent(name)}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
    });
  } catch (err) {
    throw new CliError(
      `cannot reach the agent at ${ep.dataUrl}: ${(err as Error).message} (is \`npm start\` running?)`,
    );
  }
  const text = await res.body.text();
  let body: { result?: unknown; error?: { message?: string; code?: unknown } | null };
  try {
    body = JSON.parse(text);
  } catch {
    throw new CliError(`${res.statusCode}: ${text}`);
  }
  if (body.error) {
    console.error(`error ${body.error.code ?? res.statusCode}: ${body.error.message ?? text}`);
    return 1;
  }
  console.log(JSON.stringify(body.result, null, 2));
  return 0;
}

async function start(): Promise<number> {
  const { PreflightError, startAgent } = await import("../agent.ts");
  const { loadAgentSettings } = await import("../settings.ts");
  let env = process.env;
  if (env.FAAS_DRIVER === "firecracker" && !env.FAAS_BASE_DIR && !env.FAAS_RELEASE_MANIFEST) {
    // No base given: bake a local Linux base on the QEMU backend (or reuse the one baked before).
    const { localVmBase, localVmPoolDefaults } = await import("./local-vm-base.ts");
    const stateDir = path.resolve(env.FAAS_STATE_DIR ?? ".faas");
    const local = await localVmBase(stateDir, env, (line) => console.log(`faas: ${line}`));
    env = {
      ...localVmPoolDefaults,
      ...env,
      FAAS_BASE_DIR: local.baseDir,
      FAAS_FIRECRACKER_CONFIG: env.FAAS_FIRECRACKER_CONFIG ?? local.configFile,
    };
  }
  const settings = await loadAgentSettings(env);
  for (const warning of settings.warnings) console.error(`faas: warning: ${warning}`);
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    if (settings.config.driver === "process") {
      // The first start fetches the base's pinned node (about 50 MB): show it happening.
      const { processBaseNode } = await import("../../guest-images/process/bake.ts");
      await processBaseNode(undefined, (line) => console.log(`faas: ${line}`));
    }
    agent = await startAgent(settings.config, settings.overrides);
  } catch (err) {
    if (err instanceof PreflightError) {
      for (const p of err.problems) console.error(`faas: ${p.what}. Install it with: ${p.fix}`);
      return 3;
    }
    throw err;
  }
  const ep: Endpoints = { dataUrl: agent.dataUrl, adminUrl: agent.adminUrl, token: agent.adminToken };
  const examplesDir = path.join(REPO_ROOT, "examples");
  const deployed: string[] = [];
  for (const entry of readdirSync(examplesDir).sort()) {
    const dir = path.join(examplesDir, entry);
    if (!statSync(dir).isDirectory() || entry.startsWith("pulumi")) continue;
    try {
      await deployFolder(ep, dir, defaultName(dir));
      deployed.push(defaultName(dir));
    } catch (err) {
      console.error(`faas: could not deploy examples/${entry}: ${(err as Error).message}`);
    }
  }
  const lines = [
    "",
    `faas is running: data plane ${agent.dataUrl}, admin API ${agent.adminUrl} (base ${agent.base.version})`,
    agent.tokenGenerated
      ? `admin token (generated, stored in ${agent.tokenFile}; shown once): ${agent.adminToken}`
      : `admin token: in ${agent.tokenFile} or FAAS_ADMIN_TOKEN`,
    `deployed: ${deployed.join(", ") || "nothing"}`,
    "try:",
    `  curl -s -X POST ${agent.dataUrl}/hello-world -d '{"jsonrpc":"2.0","method":"HelloWorldService.helloWorld","params":[],"id":1}'`,
    "press Ctrl-C to stop",
    "",
  ];
  console.log(lines.join("\n"));
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await agent.stop();
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const ep = endpointsFromEnv(process.env);
  try {
    switch (command) {
      case "start":
        return await start();
      case "build": {
        const { bakeProcessBase } = await import("../../guest-images/process/bake.ts");
        const { parseNodeMajor } = await import("../../guest-images/node/pinned-node.ts");
        const stateDir = process.env.FAAS_STATE_DIR ?? ".faas";
        // --out, --node and --runtime-variant bake another base version, e.g. to try `faas release` locally.
        const flag = (f: string) => {
          if (!rest.includes(f)) return undefined;
          const value = rest[rest.indexOf(f) + 1];
          if (value === undefined || value.startsWith("--")) throw new CliError(`${f} needs a value`);
          return value;
        };
        const out = flag("--out") ?? path.join(path.resolve(stateDir), "base");
        const variant = flag("--runtime-variant");
        const nodeFlag = flag("--node");
        let nodeMajor: Awaited<ReturnType<typeof parseNodeMajor>> | undefined;
        try {
          nodeMajor = nodeFlag === undefined ? undefined : parseNodeMajor(nodeFlag);
        } catch (err) {
          throw new CliError(`--node: ${(err as Error).message}`);
        }
        const base = await bakeProcessBase(path.resolve(out), {
          ...(variant ? { runtimeVariant: variant } : {}),
          ...(nodeMajor ? { nodeMajor } : {}),
          log: (line) => console.log(`faas: ${line}`),
        });
        console.log(
          `base ${base.version} (node ${base.nodeVersion}, runtime ${base.runtimeBuild}) in ${base.dir}`,
        );
        return 0;
      }
      case "deploy": {
        const dir = rest[0];
        if (!dir) throw new CliError("usage: faas deploy <dir> [--name <name>]");
        const i = rest.indexOf("--name");
        const name = i >= 0 ? rest[i + 1] : defaultName(dir);
        if (!name) throw new CliError("--name needs a value");
        const h = rest.indexOf("--handler");
        const handler = h >= 0 ? rest[h + 1] : undefined;
        if (h >= 0 && !handler) throw new CliError("--handler needs a value, e.g. src/lambda.handler");
        const out = await deployFolder(ep, dir, name, handler ? { handler } : {});
        console.log(
          `deployed ${out.function.name} (revision ${out.function.revision}, ${out.load.style}, code ${out.function.codeHash.slice(0, 12)})`,
        );
        console.log(`  ${ep.dataUrl}/${out.function.name}`);
        return 0;
      }
      case "invoke":
        return await invoke(ep, rest);
      case "doctor": {
        const { doctorMain } = await import("../doctor/main.ts");
        const { report, exitCode } = await doctorMain(rest);
        for (const line of report.lines) console.log(line);
        return exitCode;
      }
      case "ls": {
        const { json } = await adminRequest(ep, "GET", "/v1/functions");
        const fns = json.functions as Array<{
          name: string;
          revision: number;
          codeHash: string;
          deployedAt: string;
        }>;
        if (fns.length === 0) console.log("no functions deployed");
        for (const f of fns)
          console.log(
            `${f.name.padEnd(30)} rev ${String(f.revision).padEnd(4)} ${f.codeHash.slice(0, 12)}  ${f.deployedAt}`,
          );
        return 0;
      }
      case "logs": {
        const name = rest[0];
        if (!name || name.startsWith("--")) throw new CliError("usage: faas logs <name> [--limit <n>]");
        const i = rest.indexOf("--limit");
        const limit = i >= 0 ? rest[i + 1] : "100";
        const { json } = await adminRequest(
          ep,
          "GET",
          `/v1/functions/${encodeURIComponent(name)}/logs?limit=${encodeURIComponent(limit ?? "")}`,
        );
        const lines = json.lines as Array<{ time: string; level: string; rid: string | null; msg: string }>;
        if (lines.length === 0) console.log(`no console output from ${name} since the agent started`);
        for (const l of lines) console.log(`${l.time} ${l.level.padEnd(5)} ${l.rid ?? "-"}  ${l.msg}`);
        return 0;
      }
      case "rm": {
        if (!rest[0]) throw new CliError("usage: faas rm <name>");
        await adminRequest(ep, "DELETE", `/v1/functions/${encodeURIComponent(rest[0])}`);
        console.log(`deleted ${rest[0]}`);
        return 0;
      }
      case "release":
        return await releaseCommand(ep, rest);
      case "rollback":
        return await rollbackCommand(ep, rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(USAGE);
        return command === undefined ? 2 : 0;
      default:
        console.error(`faas: unknown command ${command}\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof CliError || err instanceof PackError || (err as Error).name === "PinnedNodeError") {
      console.error(`faas: ${(err as Error).message}`);
      return 1;
    }
    if ((err as Error).name === "ConfigError" || (err as Error).name === "HostManifestError") {
      console.error(`faas: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
}
