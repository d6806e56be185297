/** `faas build`: bake the process sandbox's base image only. */
import path from "node:path";
import { CliError } from "../admin-client.ts";
import { type CommandSpec, printJson, stringOption } from "../command.ts";

export const buildCommand: CommandSpec = {
  name: "build",
  summary: "bake the process sandbox's base image (node, the guest runtime, its startup snapshot)",
  description: [
    "--out, --node and --runtime-variant bake another base version, e.g. to try `faas release` locally.",
    "A variant stamps another runtime build, so the same inputs give another base version.",
  ].join("\n"),
  positionals: [],
  options: {
    out: { type: "string", value: "<dir>", description: "where bases are kept (default <state dir>/base)" },
    node: {
      type: "string",
      value: "<major>",
      description: "the base's pinned Node LTS: 22 or 24 (default 24)",
    },
    "runtime-variant": { type: "string", value: "<name>", description: "stamp another runtime build" },
  },
  json: true,
  examples: ["faas build --out /tmp/bases --node 22", "faas build --out /tmp/bases --runtime-variant v2"],
  async run(line, ctx) {
    const bakes = await ctx.bakes();
    const stateDir = ctx.env.FAAS_STATE_DIR ?? ".faas";
    const out = stringOption(line, "out") ?? path.join(path.resolve(stateDir), "base");
    const variant = stringOption(line, "runtime-variant");
    const nodeFlag = stringOption(line, "node");
    let nodeMajor: number | undefined;
    try {
      nodeMajor = nodeFlag === undefined ? undefined : bakes.parseNodeMajor(nodeFlag);
    } catch (err) {
      throw new CliError(`--node: ${(err as Error).message}`);
    }
    const base = await bakes.bakeProcessBase(path.resolve(out), {
      ...(variant ? { runtimeVariant: variant } : {}),
      ...(nodeMajor ? { nodeMajor } : {}),
      log: (l) => ctx.progress(`faas: ${l}`),
    });
    if (line.json) {
      printJson({
        version: base.version,
        nodeVersion: base.nodeVersion,
        runtimeBuild: base.runtimeBuild,
        dir: base.dir,
      });
      return 0;
    }
    console.log(
      `base ${base.version} (node ${base.nodeVersion}, runtime ${base.runtimeBuild}) in ${base.dir}`,
    );
    return 0;
  },
};
