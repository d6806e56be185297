/** API Gateway v2 (HTTP API, payload 2.0) events and results for Lambda-style handlers. Pure: no I/O. */

export interface IncomingCall {
  readonly method: string;
  /** Path with the function's own prefix removed: "/" for the function's root. */
  readonly path: string;
  readonly rawQueryString: string;
  /** Lower-case names; repeated headers joined with ",". */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  readonly requestId: string;
  readonly sourceIp: string;
  readonly functionName: string;
  readonly nowMs: number;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

const TEXT_TYPES = /^(text\/|application\/(json|xml|javascript|x-www-form-urlencoded|[\w.+-]+\+(json|xml)))/i;

export function buildHttpEvent(call: IncomingCall): Record<string, unknown> {
  const contentType = call.headers["content-type"] ?? "";
  const isText = call.body.length === 0 || TEXT_TYPES.test(contentType);
  const query = new URLSearchParams(call.rawQueryString);
  const queryStringParameters: Record<string, string> = {};
  for (const key of new Set(query.keys())) queryStringParameters[key] = query.getAll(key).join(",");
  const cookies = call.headers.cookie?.split(/;\s*/).filter(Boolean);
  const headers = { ...call.headers };
  delete headers.cookie;
  const event: Record<string, unknown> = {
    version: "2.0",
    routeKey: "$default",
    rawPath: call.path,
    rawQueryString: call.rawQueryString,
    headers,
    requestContext: {
      accountId: "anonymous",
      apiId: call.functionName,
      domainName: call.headers.host ?? "localhost",
      domainPrefix: (call.headers.host ?? "localhost").split(".")[0],
      http: {
        method: call.method,
        path: call.path,
        protocol: "HTTP/1.1",
        sourceIp: call.sourceIp,
        userAgent: call.headers["user-agent"] ?? "",
      },
      requestId: call.requestId,
      routeKey: "$default",
      stage: "$default",
      time: new Date(call.nowMs).toISOString(),
      timeEpoch: call.nowMs,
    },
    isBase64Encoded: !isText,
  };
  if (cookies && cookies.length > 0) event.cookies = cookies;
  if (call.rawQueryString) event.queryStringParameters = queryStringParameters;
  if (call.body.length > 0) event.body = isText ? call.body.toString("utf8") : call.body.toString("base64");
  return event;
}

/** Maps what a handler returned to an HTTP answer, the way API Gateway's payload 2.0 does. */
export function resultToAnswer(result: unknown): HttpAnswer {
  if (typeof result === "object" && result !== null && "statusCode" in result) {
    const r = result as Record<string, unknown>;
    const status = Number(r.statusCode);
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new TypeError(
        `handler returned statusCode ${String(r.statusCode)}: it must be an integer from 100 to 599`,
      );
    }
    const headers: Record<string, string | string[]> = {};
    if (typeof r.headers === "object" && r.headers !== null) {
      for (const [k, v] of Object.entries(r.headers)) headers[k.toLowerCase()] = String(v);
    }
    if (Array.isArray(r.cookies) && r.cookies.length > 0) headers["set-cookie"] = r.cookies.map(String);
    let body: Buffer;
    if (r.body === undefined || r.body === null) body = Buffer.alloc(0);
    else if (typeof r.body === "string")
      body = Buffer.from(r.body, r.isBase64Encoded === true ? "base64" : "utf8");
    else body = Buffer.from(JSON.stringify(r.body));
    return { status, headers, body };
  }
  const body =
    result === undefined
      ? Buffer.alloc(0)
      : Buffer.from(typeof result === "string" ? result : JSON.stringify(result));
  return { status: 200, headers: { "content-type": "application/json" }, body };
}

/** Who the loaded function is, as a Lambda handler's context and AWS_LAMBDA_* variables name it. */
export interface FunctionIdentity {
  readonly functionName: string;
  readonly functionVersion: string;
  /** Unknown when the host did not say (an older host): memoryLimitInMB is then "". */
  readonly memoryMiB: number | undefined;
  readonly region: string | undefined;
  readonly logGroupName: string;
  readonly logStreamName: string;
}

/**
 * The `context` a Lambda handler gets: the fields AWS documents for Node.js, with an ARN in AWS's shape
 * (account 000000000000: there is no AWS account behind it) so code that parses it works.
 */
export function lambdaContext(
  id: FunctionIdentity,
  awsRequestId: string,
  remainingMs: () => number,
): Record<string, unknown> {
  return {
    functionName: id.functionName,
    functionVersion: id.functionVersion,
    invokedFunctionArn: `arn:aws:lambda:${id.region ?? "local"}:000000000000:function:${id.functionName}`,
    memoryLimitInMB: id.memoryMiB === undefined ? "" : String(id.memoryMiB),
    awsRequestId,
    logGroupName: id.logGroupName,
    logStreamName: id.logStreamName,
    identity: undefined,
    clientContext: undefined,
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => Math.max(0, Math.round(remainingMs())),
  };
}
