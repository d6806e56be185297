/** The agent's Prometheus metrics, on a registry of its own (several agents can live in one test process). */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export type AgentMetrics = ReturnType<typeof createMetrics>;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createMetrics() {
  const registry = new Registry();
  const calls = new Counter({
    name: "faas_calls_total",
    help: "Calls through the gateway, by function and outcome (ok, user_error, timeout, crashed, rejected, not_found).",
    labelNames: ["function", "outcome"] as const,
    registers: [registry],
  });
  const callDuration = new Histogram({
    name: "faas_call_duration_seconds",
    help: "Time from request received to response sent, by how the instance was found (warm, generic, cold, queued).",
    labelNames: ["acquired"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const poolAcquire = new Counter({
    name: "faas_pool_acquire_total",
    help: "Instances handed to calls: warm (specialized idle, a hit), generic (specialized now), cold (started now).",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const instanceStart = new Histogram({
    name: "faas_instance_start_seconds",
    help: "Time to start a sandbox instance from the base until its runtime answers.",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const specialize = new Histogram({
    name: "faas_specialize_seconds",
    help: "Time to give a generic instance a function's code (attach + load).",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const instanceStarts = new Counter({
    name: "faas_instance_starts_total",
    help: "Instance starts, by result.",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const instanceExits = new Counter({
    name: "faas_instance_exits_total",
    help: "Instances gone, by cause (exited on their own, destroyed by the agent).",
    labelNames: ["cause"] as const,
    registers: [registry],
  });
  const instances = new Gauge({
    name: "faas_pool_instances",
    help: "Instances by state.",
    labelNames: ["state"] as const,
    registers: [registry],
  });
  const queueDepth = new Gauge({
    name: "faas_pool_queue_depth",
    help: "Calls waiting for an instance.",
    registers: [registry],
  });
  const queueWait = new Histogram({
    name: "faas_pool_queue_wait_seconds",
    help: "Time calls spent waiting for an instance.",
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const genericTarget = new Gauge({
    name: "faas_pool_generic_target",
    help: "Generic instances the pool aims to keep ready, from measured misses and start time.",
    registers: [registry],
  });
  const memoryReserved = new Gauge({
    name: "faas_pool_memory_reserved_bytes",
    help: "Memory reserved by live instances (instances x per-instance limit), within the budget.",
    registers: [registry],
  });
  const memoryUsed = new Gauge({
    name: "faas_pool_memory_used_bytes",
    help: "Memory the instances use now, from the sandbox's own accounting (cgroups).",
    registers: [registry],
  });
  const deploys = new Counter({
    name: "faas_deploys_total",
    help: "Deploys through the control plane, by result.",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const functions = new Gauge({
    name: "faas_functions",
    help: "Functions in the registry.",
    registers: [registry],
  });
  const baseRolls = new Counter({
    name: "faas_base_rolls_total",
    help: "Base image rolls that ended, by kind (release, rollback) and outcome (completed, rolled-back).",
    labelNames: ["kind", "outcome"] as const,
    registers: [registry],
  });
  const metricPublishFailures = new Counter({
    name: "faas_metric_publish_failures_total",
    help: "PoolUtilization data points CloudWatch did not take (PutMetricData failed); the next interval tries again.",
    registers: [registry],
  });
  const lifecycleActionFailures = new Counter({
    name: "faas_lifecycle_action_failures_total",
    help: "Calls to the Auto Scaling lifecycle hook that failed, by action (heartbeat, complete).",
    labelNames: ["action"] as const,
    registers: [registry],
  });
  return {
    registry,
    calls,
    callDuration,
    poolAcquire,
    instanceStart,
    specialize,
    instanceStarts,
    instanceExits,
    instances,
    queueDepth,
    queueWait,
    genericTarget,
    memoryReserved,
    memoryUsed,
    deploys,
    functions,
    baseRolls,
    metricPublishFailures,
    lifecycleActionFailures,
  };
}
