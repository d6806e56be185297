/** What a load sets in process.env, the Lambda context, and the CORS the runtime answers: pure rules. */
import assert from "node:assert/strict";
import { corsFor, GENEZIO_DEFAULT_CORS } from "../../contracts/cors.ts";
import { functionEnvironment, functionIdentity } from "../../guest-images/runtime/function-env.ts";
import { lambdaContext } from "../../guest-images/runtime/lambda.ts";

const PLACE = {
  codePath: "/code",
  instanceId: "i-7",
  nowMs: Date.UTC(2026, 11, 1, 9),
  nodeVersion: "24.1.0",
};

describe("a function's environment, context and CORS in the runtime", () => {
  it("sets the function's variables, then Lambda's over them", () => {
    const env = functionEnvironment(
      {
        functionName: "api",
        entry: "src/lambda.mjs",
        env: { DB: "x" },
        functionVersion: "4",
        memoryMiB: 512,
        region: "eu-west-1",
      },
      PLACE,
      "src/lambda.mjs",
    );
    assert.deepEqual(env, {
      DB: "x",
      AWS_LAMBDA_FUNCTION_NAME: "api",
      AWS_LAMBDA_FUNCTION_VERSION: "4",
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: "512",
      AWS_LAMBDA_LOG_GROUP_NAME: "/aws/lambda/api",
      AWS_LAMBDA_LOG_STREAM_NAME: "2026/12/01/[4]i-7",
      AWS_LAMBDA_INITIALIZATION_TYPE: "on-demand",
      AWS_EXECUTION_ENV: "AWS_Lambda_nodejs24.x",
      LAMBDA_TASK_ROOT: "/code",
      _HANDLER: "src/lambda.handler",
      AWS_REGION: "eu-west-1",
      AWS_DEFAULT_REGION: "eu-west-1",
    });
    const bare = functionEnvironment({ functionName: "api", entry: "index.js" }, PLACE, "index.js");
    assert.equal(bare.AWS_LAMBDA_FUNCTION_VERSION, "$LATEST", "an older host names no version");
    assert.equal(bare.AWS_REGION, undefined, "no region is made up");
  });

  it("gives a handler Lambda's context fields", () => {
    const id = functionIdentity(
      { functionName: "api", entry: "index.js", functionVersion: "2", memoryMiB: 128 },
      PLACE,
    );
    const ctx = lambdaContext(id, "rid-1", () => 1234.4);
    assert.equal(ctx.invokedFunctionArn, "arn:aws:lambda:local:000000000000:function:api");
    assert.equal(ctx.memoryLimitInMB, "128");
    assert.equal(ctx.awsRequestId, "rid-1");
    assert.equal((ctx.getRemainingTimeInMillis as () => number)(), 1234);
  });

  it("answers preflights and origins as configured", () => {
    const pre = {
      origin: "https://a.example",
      "access-control-request-method": "PUT",
      "access-control-request-headers": "x-a",
    };
    assert.deepEqual(corsFor(GENEZIO_DEFAULT_CORS, "OPTIONS", pre), {
      preflight: true,
      headers: {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "PUT",
        "access-control-allow-headers": "x-a",
        "access-control-max-age": "600",
      },
    });
    const listed = { allowOrigins: ["https://a.example"] };
    assert.equal(
      corsFor(listed, "GET", { origin: "https://a.example" }).headers["access-control-allow-origin"],
      "https://a.example",
    );
    assert.deepEqual(corsFor(listed, "GET", { origin: "https://b.example" }).headers, { vary: "origin" });
    assert.deepEqual(
      corsFor(undefined, "OPTIONS", pre),
      { preflight: false, headers: {} },
      "a handler's own CORS",
    );
    assert.equal(
      corsFor(listed, "OPTIONS", { origin: "https://a.example" }).preflight,
      false,
      "a bare OPTIONS is a call",
    );
  });
});
