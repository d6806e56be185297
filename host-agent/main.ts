/** The host agent daemon: config from the environment, then serve until SIGINT/SIGTERM. */
import { PreflightError, startAgent } from "./agent.ts";
import { ConfigError, DEFAULT_BASES_DIR, loadAgentConfig, unknownAgentVariables } from "./config.ts";
import {
  firecrackerLimitsFromManifest,
  HostManifestError,
  readHostManifest,
  withManifestDefaults,
} from "./release/host-manifest.ts";
import type { FirecrackerLimits } from "./sandbox/firecracker/limits.ts";

export async function runAgent(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  let config: ReturnType<typeof loadAgentConfig>;
  let firecrackerLimits: Partial<FirecrackerLimits> | undefined;
  try {
    if (env.FAAS_RELEASE_MANIFEST) {
      const manifest = await readHostManifest(env.FAAS_RELEASE_MANIFEST);
      env = withManifestDefaults(env, manifest, env.FAAS_BASES_DIR || DEFAULT_BASES_DIR);
      firecrackerLimits = firecrackerLimitsFromManifest(manifest);
    }
    config = loadAgentConfig(env);
    for (const warning of unknownAgentVariables(env)) console.error(`faas: warning: ${warning}`);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof HostManifestError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  let agent: Awaited<ReturnType<typeof startAgent>>;
  try {
    agent = await startAgent(config, firecrackerLimits ? { firecrackerLimits } : {});
  } catch (err) {
    if (err instanceof PreflightError) {
      for (const p of err.problems) console.error(`faas: ${p.what}. Fix: ${p.fix}`);
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
