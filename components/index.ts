/** Components of the snapfaas platform, for this project's program and for other stacks. */
export { ArtifactStore, type ArtifactStoreArgs } from "./artifact-store.ts";
export { BenchmarkLambda, type BenchmarkLambdaArgs } from "./benchmark-lambda.ts";
export { FaasFunction, type FaasFunctionArgs } from "./faas-function.ts";
export { FaasPlatform, type FaasPlatformArgs, HOST_AMI_PARAMETER, REGISTRY_PREFIX } from "./faas-platform.ts";
export { Gateway, type GatewayArgs } from "./gateway.ts";
export { GuestImageBake, type GuestImageBakeArgs } from "./guest-image-bake.ts";
export { HostAgentRelease, type HostAgentReleaseArgs } from "./host-agent-release.ts";
export {
  KvmHostFleet,
  type KvmHostFleetArgs,
  METRIC_NAMESPACE,
  POOL_UTILIZATION_METRIC,
} from "./kvm-host-fleet.ts";
export { LocalAgent, type LocalAgentArgs } from "./local-agent.ts";
export { ADMIN_PORT, DATA_PORT, Network, type NetworkArgs } from "./network.ts";
