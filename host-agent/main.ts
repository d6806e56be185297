/** The host agent daemon: config from the environment, then serve until SIGINT/SIGTERM. */
import { PreflightError, startAgent } from "./agent.ts";
import { ConfigError } from "./config.ts";
import { HostManifestError } from "./release/host-manifest.ts";
import { preflightLines } from "./sandbox/preflight-report.ts";
import { type AgentSettings, loadAgentSettings } from "./settings.ts";

export async function runAgent(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let settings: AgentSettings;
  try {
    settings = await loadAgentSettings(env);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof HostManifestError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  for (const warning of settings.warnings) console.error(`faas: warning: ${warning}`);
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    agent = await startAgent(settings.config, settings.overrides);
  } catch (err) {
    if (err instanceof PreflightError) {
      for (const line of preflightLines(err.problems, process.getuid?.() === 0))
        console.error(`faas: ${line}`);
      process.exit(3);
    }
    throw err;
  }
  if (agent.tokenGenerated) {
    console.error(
      `faas: generated an admin token (stored in ${agent.tokenFile}, shown once): ${agent.adminToken}`,
    );
  }
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`faas: ${signal}: stopping`);
    await agent.stop();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runAgent();
}
