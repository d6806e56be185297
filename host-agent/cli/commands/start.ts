/** `faas start` (what `npm start` runs): the local platform, from nothing to serving examples/. */
import { readdirSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CliError, type Endpoints } from "../admin-client.ts";
import type { CommandSpec } from "../command.ts";
import { defaultName, deployFolder } from "./deploy.ts";

const EXAMPLES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "examples");

const isRoot = process.getuid?.() === 0;

/** Creates the state folder, or says in one line why it cannot be (before anything is fetched). */
async function makeStateDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o711 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliError(
      `cannot create the state folder ${dir} (${e.code ?? e.message}): set FAAS_STATE_DIR to a folder this user can write`,
    );
  }
}

export const startCommand: CommandSpec = {
  name: "start",
  summary: "bake the base, start the agent, deploy every folder in examples/, serve until Ctrl-C",
  description: [
    "The host is checked first: a missing Debian package stops it (exit 3) with the one apt-get command",
    "that installs every missing one, before anything is fetched or written.",
    "FAAS_DRIVER=firecracker FAAS_VMM=qemu [FAAS_VMM_ACCELERATOR=tcg|kvm|auto] runs microVMs on QEMU,",
    "on a Linux base baked here into <state dir>/local-vm/ (reused while its inputs do not change).",
    "--json prints one line of JSON once the agent serves (URLs, base, deployed functions).",
  ].join("\n"),
  positionals: [],
  options: {},
  json: true,
  examples: ["npm start", "FAAS_STATE_DIR=/var/lib/faas PORT=9000 faas start"],
  async run(line, ctx) {
    const { PreflightError, startAgent } = await import("../../agent.ts");
    const { loadAgentSettings } = await import("../../settings.ts");
    const { preflightLines } = await import("../../sandbox/preflight-report.ts");
    const { inspectProcessHost } = await import("../../sandbox/process/preflight.ts");
    let env = ctx.env;
    if (env.FAAS_DRIVER === "firecracker" && !env.FAAS_BASE_DIR && !env.FAAS_RELEASE_MANIFEST) {
      // No base given: bake a local Linux base on the QEMU backend (or reuse the one baked before).
      const { localVmBase, localVmPoolDefaults } = await import("../local-vm-base.ts");
      const stateDir = path.resolve(env.FAAS_STATE_DIR ?? ".faas");
      const local = await localVmBase(stateDir, env, (l) => ctx.progress(`faas: ${l}`));
      env = {
        ...localVmPoolDefaults,
        ...env,
        FAAS_BASE_DIR: local.baseDir,
        FAAS_FIRECRACKER_CONFIG: env.FAAS_FIRECRACKER_CONFIG ?? local.configFile,
      };
    }
    const settings = await loadAgentSettings(env);
    for (const warning of settings.warnings) console.error(`faas: warning: ${warning}`);
    const stateDir = path.resolve(settings.config.stateDir);
    const notReady = (problems: Parameters<typeof preflightLines>[0]) => {
      for (const l of preflightLines(problems, isRoot)) console.error(`faas: ${l}`);
      return 3;
    };
    if (settings.config.driver === "process") {
      // Before the first start fetches anything (the base's node is about 50 MB): is the host ready?
      const folders = { stateDir, baseDir: settings.config.baseDir };
      const fatal = (await inspectProcessHost(folders)).filter((p) => p.fatal);
      if (fatal.length > 0) return notReady(fatal);
    }
    await makeStateDir(stateDir);
    let agent: Awaited<ReturnType<typeof startAgent>>;
    try {
      if (settings.config.driver === "process") {
        // The first start fetches the base's pinned node: show it happening.
        await (await ctx.bakes()).processBaseNode((l) => ctx.progress(`faas: ${l}`));
      }
      agent = await startAgent(settings.config, settings.overrides);
    } catch (err) {
      if (err instanceof PreflightError) return notReady(err.problems);
      // One line, not a stack trace; the stack is there for whoever asks for debug logs.
      console.error(`faas: the agent could not start: ${(err as Error).message}`);
      if (ctx.env["FAAS_LOG_LEVEL"] === "debug") console.error((err as Error).stack);
      return 1;
    }
    const ep: Endpoints = { dataUrl: agent.dataUrl, adminUrl: agent.adminUrl, token: agent.adminToken };
    const deployed: string[] = [];
    for (const entry of readdirSync(EXAMPLES_DIR).sort()) {
      const dir = path.join(EXAMPLES_DIR, entry);
      if (!statSync(dir).isDirectory() || entry.startsWith("pulumi")) continue;
      try {
        await deployFolder(ep, dir, defaultName(dir));
        deployed.push(defaultName(dir));
      } catch (err) {
        console.error(`faas: could not deploy examples/${entry}: ${(err as Error).message}`);
      }
    }
    if (line.json) {
      console.log(
        JSON.stringify({
          dataUrl: agent.dataUrl,
          adminUrl: agent.adminUrl,
          baseVersion: agent.base.version,
          tokenFile: agent.tokenFile,
          ...(agent.tokenGenerated ? { adminToken: agent.adminToken } : {}),
          deployed,
        }),
      );
    } else {
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
    }
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      // `faas start | head`: nobody reads the output any more, so stop as on Ctrl-C.
      ctx.onBrokenPipe(stop);
    });
    await agent.stop();
    return 0;
  },
};
