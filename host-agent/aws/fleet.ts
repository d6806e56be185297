/**
 * What a host in the AWS fleet owes its Auto Scaling group, built from the agent's config: the
 * PoolUtilization metric (when FAAS_METRIC_NAMESPACE is set) and the scale-in drain (when
 * FAAS_LIFECYCLE_HOOK is set). Off the fleet neither runs and nothing here touches the network.
 */
import { AutoScalingClient } from "@aws-sdk/client-auto-scaling";
import { CloudWatchClient } from "@aws-sdk/client-cloudwatch";
import type { Clock } from "../clock.ts";
import type { AgentConfig } from "../config.ts";
import type { ServingState } from "../http/serving-state.ts";
import type { Logger } from "../log.ts";
import type { AgentMetrics } from "../metrics.ts";
import type { InstanceSource } from "../pool/instance-source.ts";
import { DrainWatcher } from "./drain.ts";
import { ImdsClient, type InstanceMetadata } from "./imds.ts";
import { PoolUtilizationPublisher, poolUtilizationPercent } from "./pool-utilization.ts";

/** Stand-ins for tests: the metadata service and the two API clients (real clients at a fake endpoint). */
export interface FleetOverrides {
  readonly metadata?: InstanceMetadata;
  readonly cloudWatch?: Pick<CloudWatchClient, "send">;
  readonly autoScaling?: Pick<AutoScalingClient, "send">;
}

export interface FleetDeps {
  readonly config: AgentConfig["aws"];
  readonly pool: InstanceSource;
  readonly serving: ServingState;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly overrides?: FleetOverrides;
}

export interface FleetDuties {
  readonly publisher: PoolUtilizationPublisher | undefined;
  readonly drain: DrainWatcher | undefined;
  stop(): Promise<void>;
}

// The SDK's Node handler has no request timeout by default; a hung call must not hold a drain or pile up sends.
const REQUEST_HANDLER = { connectionTimeout: 3_000, requestTimeout: 10_000 };

export function startFleetDuties(deps: FleetDeps): FleetDuties {
  const { config, overrides = {} } = deps;
  if (!config.metrics && !config.drain) {
    return { publisher: undefined, drain: undefined, stop: async () => {} };
  }
  const metadata = overrides.metadata ?? new ImdsClient({ baseUrl: config.imdsUrl, clock: deps.clock });
  const groupName = config.groupName
    ? () => Promise.resolve(config.groupName!)
    : () => metadata.autoScalingGroupName();
  const owned: Array<{ destroy(): void }> = [];
  // Region from AWS_REGION (the host's env file); credentials from the SDK's chain (the instance profile).
  const clientConfig = { region: config.region, requestHandler: REQUEST_HANDLER };

  let publisher: PoolUtilizationPublisher | undefined;
  if (config.metrics) {
    let cloudWatch = overrides.cloudWatch;
    if (!cloudWatch) {
      const client = new CloudWatchClient(clientConfig);
      owned.push(client);
      cloudWatch = client;
    }
    publisher = new PoolUtilizationPublisher({
      cloudWatch,
      namespace: config.metrics.namespace,
      groupName,
      sample: () => poolUtilizationPercent(deps.pool.snapshot()),
      clock: deps.clock,
      log: deps.log,
      metrics: deps.metrics,
      intervalMs: config.metrics.intervalMs,
    });
    publisher.start();
  }

  let drain: DrainWatcher | undefined;
  if (config.drain) {
    let autoScaling = overrides.autoScaling;
    if (!autoScaling) {
      const client = new AutoScalingClient(clientConfig);
      owned.push(client);
      autoScaling = client;
    }
    drain = new DrainWatcher({
      metadata,
      autoScaling,
      serving: deps.serving,
      hookName: config.drain.hookName,
      groupName,
      clock: deps.clock,
      log: deps.log,
      metrics: deps.metrics,
      timeoutMs: config.drain.timeoutMs,
    });
    drain.start();
  }
  deps.log.info(
    {
      metricNamespace: config.metrics?.namespace,
      lifecycleHook: config.drain?.hookName,
      group: config.groupName ?? "(from instance metadata)",
    },
    "Auto Scaling duties on",
  );

  return {
    publisher,
    drain,
    async stop() {
      await Promise.all([publisher?.stop(), drain?.stop()]);
      for (const c of owned) c.destroy();
    },
  };
}
