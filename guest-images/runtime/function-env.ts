/**
 * The environment a function's module is loaded with: its own variables and secrets from the load call,
 * and the variables AWS Lambda sets (AWS_LAMBDA_FUNCTION_NAME and the rest) so code written for Lambda
 * finds them. Pure: the runtime assigns the result to process.env before it imports the module.
 */
import type { LoadRequest } from "../../contracts/guest-protocol.ts";
import type { FunctionIdentity } from "./lambda.ts";

export interface LoadPlace {
  readonly codePath: string;
  readonly instanceId: string | null;
  readonly nowMs: number;
  /** process.versions.node */
  readonly nodeVersion: string;
}

/** The identity a load names: what the context and the AWS_LAMBDA_* variables say. */
export function functionIdentity(load: LoadRequest, place: LoadPlace): FunctionIdentity {
  const version = load.functionVersion ?? "$LATEST";
  const day = new Date(place.nowMs).toISOString().slice(0, 10).replaceAll("-", "/");
  return {
    functionName: load.functionName,
    functionVersion: version,
    memoryMiB: load.memoryMiB,
    region: load.region,
    logGroupName: `/aws/lambda/${load.functionName}`,
    logStreamName: `${day}/[${version}]${place.instanceId ?? "instance"}`,
  };
}

/** Every variable the load sets: the function's own first, then the platform's (which win). */
export function functionEnvironment(
  load: LoadRequest,
  place: LoadPlace,
  entry: string,
): Record<string, string> {
  const id = functionIdentity(load, place);
  const env: Record<string, string> = { ...(load.env ?? {}) };
  env.AWS_LAMBDA_FUNCTION_NAME = id.functionName;
  env.AWS_LAMBDA_FUNCTION_VERSION = id.functionVersion;
  if (id.memoryMiB !== undefined) env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE = String(id.memoryMiB);
  env.AWS_LAMBDA_LOG_GROUP_NAME = id.logGroupName;
  env.AWS_LAMBDA_LOG_STREAM_NAME = id.logStreamName;
  env.AWS_LAMBDA_INITIALIZATION_TYPE = "on-demand";
  env.AWS_EXECUTION_ENV = `AWS_Lambda_nodejs${place.nodeVersion.split(".")[0]}.x`;
  env.LAMBDA_TASK_ROOT = place.codePath;
  env._HANDLER = `${entry.replace(/\.(c|m)?js$/, "")}.handler`;
  if (id.region) {
    env.AWS_REGION = id.region;
    env.AWS_DEFAULT_REGION = id.region;
  }
  return env;
}
