/**
 * Everything the agent is configured by, read once at start by both the daemon (main.ts) and `faas
 * start`: the environment, under it an AWS host's release manifest when FAAS_RELEASE_MANIFEST names
 * one, and warnings for FAAS_ variables the agent does not know.
 */

import { DEFAULT_BASES_DIR } from "../contracts/release-manifest.ts";
import type { AgentOverrides } from "./agent.ts";
import { type AgentConfig, loadAgentConfig, unknownAgentVariables } from "./config.ts";
import {
  firecrackerLimitsFromManifest,
  readHostManifest,
  releaseMachine,
  withManifestDefaults,
} from "./release/host-manifest.ts";

export interface AgentSettings {
  readonly config: AgentConfig;
  /** What the manifest gives the Firecracker driver beyond the config. */
  readonly overrides: Pick<AgentOverrides, "firecrackerLimits" | "releaseMachine">;
  readonly warnings: string[];
}

/** Throws ConfigError or HostManifestError, each naming what is wrong. */
export async function loadAgentSettings(env: NodeJS.ProcessEnv): Promise<AgentSettings> {
  if (!env.FAAS_RELEASE_MANIFEST) {
    return { config: loadAgentConfig(env), overrides: {}, warnings: unknownAgentVariables(env) };
  }
  const manifest = await readHostManifest(env.FAAS_RELEASE_MANIFEST);
  const merged = withManifestDefaults(env, manifest, env.FAAS_BASES_DIR || DEFAULT_BASES_DIR);
  return {
    config: loadAgentConfig(merged),
    overrides: {
      firecrackerLimits: firecrackerLimitsFromManifest(manifest),
      releaseMachine: releaseMachine(manifest),
    },
    warnings: unknownAgentVariables(merged),
  };
}
