import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";

export interface LocalAgentArgs {
  /** Repository folder holding the agent (package.json with `npm start`). */
  repoDir: pulumi.Input<string>;
  /** Data port the agent listens on, on 127.0.0.1. */
  port: pulumi.Input<number>;
  /** Stack settings (pool, vm, limits), handed to the agent as its FAAS_* environment variables. */
  settings: pulumi.Input<Record<string, unknown>>;
}

/** The agent's environment variables for the stack's pool, vm and limits settings (those it has). */
export function agentEnvironment(settings: Record<string, unknown>): Record<string, string> {
  const pool = (settings.pool ?? {}) as Record<string, number | undefined>;
  const vm = (settings.vm ?? {}) as Record<string, number | undefined>;
  const limits = (settings.limits ?? {}) as Record<string, number | undefined>;
  const env: Record<string, string> = {};
  const set = (name: string, value: number | undefined) => {
    if (value !== undefined) env[name] = String(value);
  };
  set("FAAS_POOL_GENERIC", pool.minIdle);
  set("FAAS_POOL_MAX_INSTANCES", pool.maxInstances);
  set("FAAS_IDLE_TTL_MS", pool.idleTtlSeconds === undefined ? undefined : pool.idleTtlSeconds * 1000);
  set("FAAS_POOL_MAX_STARTING", pool.maxConcurrentRestores);
  set("FAAS_MEMORY_BUDGET_MIB", pool.memoryBudgetMiB);
  set("FAAS_INSTANCE_MEMORY_MIB", vm.memoryMiB);
  set("FAAS_INSTANCE_CPU_PERCENT", vm.cpuMaxPercent);
  set("FAAS_CALL_TIMEOUT_MS", limits.callTimeoutMs);
  set("FAAS_MAX_BODY_BYTES", limits.payloadLimitBytes);
  return env;
}

/** Start script: the agent in its own session, so the delete step can stop it and its children at once. */
export function localStartScript(port: number): string {
  return [
    "set -eu",
    "mkdir -p .faas",
    `FAAS_DRIVER=process PORT=${port} setsid nohup npm start > .faas/agent.log 2>&1 < /dev/null &`,
    "echo $! > .faas/agent.pid",
    "i=0",
    `until curl -fsS "http://127.0.0.1:${port}/healthz" > /dev/null 2>&1; do`,
    "  i=$((i + 1))",
    '  if [ "$i" -gt 120 ]; then echo "agent did not answer /healthz; see .faas/agent.log" >&2; exit 1; fi',
    "  sleep 0.5",
    "done",
    "echo started",
  ].join("\n");
}

export const LOCAL_STOP_SCRIPT = [
  "if [ -f .faas/agent.pid ]; then",
  '  kill -TERM -- "-$(cat .faas/agent.pid)" 2>/dev/null || true',
  "  rm -f .faas/agent.pid",
  "fi",
].join("\n");

/**
 * The platform without AWS: installs the repository's dependencies and runs the agent with the process
 * sandbox on the machine that runs `pulumi up`; `pulumi destroy` stops it.
 */
export class LocalAgent extends pulumi.ComponentResource {
  public readonly endpointUrl: pulumi.Output<string>;

  constructor(name: string, args: LocalAgentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("snapfaas:index:LocalAgent", name, {}, opts);
    const install = new command.local.Command(
      `${name}-install`,
      { dir: args.repoDir, create: "npm ci --no-audit --no-fund", triggers: [args.repoDir] },
      { parent: this },
    );
    const settingsJson = pulumi.output(args.settings).apply((s) => JSON.stringify(s));
    new command.local.Command(
      `${name}-run`,
      {
        dir: args.repoDir,
        create: pulumi.output(args.port).apply(localStartScript),
        delete: LOCAL_STOP_SCRIPT,
        environment: pulumi.output(args.settings).apply(agentEnvironment),
        interpreter: ["/bin/sh", "-c"],
        triggers: [args.port, settingsJson],
      },
      // One agent per port: the old one must stop before a replacement starts.
      { parent: this, dependsOn: [install], deleteBeforeReplace: true },
    );
    this.endpointUrl = pulumi.interpolate`http://127.0.0.1:${args.port}`;
    this.registerOutputs({ endpointUrl: this.endpointUrl });
  }
}
